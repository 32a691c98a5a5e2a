"""The floor under any Python Kafka pipeline on aiokafka: a bare consume -> produce loop, no framework.

One process, one consumer, one producer, the same backlog as the Faust floor.  Per fetched
batch (``getmany``): ``send`` mode starts one produce per record without awaiting it
(aiokafka batches them, ``linger_ms=2`` and ``acks=all`` as Faust's producer); every
``COMMIT_EVERY`` records (the Faust floor app's ``broker_commit_every``) the producer is
flushed and the consumed offsets committed.  ``noop`` mode only consumes and commits.
The consumer is assigned the partitions (committing as a group, without joining one), and
the clock runs from the first fetch to the last record handed to the producer.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.floors.common import COMMIT_EVERY, PARTITIONS, Progress, produce_backlog

MODES = ("noop", "send")


def measure(bootstrap: str, mode: str, events: int, *, timeout: float = 600) -> float:
    """Events per second of the loop doing ``mode`` (``noop`` or ``send``) per event on a backlog."""
    if mode not in MODES:
        raise ValueError(f"the aiokafka floor has modes {MODES}, not {mode!r}")
    backlog = produce_backlog(bootstrap, events)
    progress = Progress(events)
    asyncio.run(asyncio.wait_for(_loop(bootstrap, backlog.source, backlog.sink, mode, progress), timeout))
    return progress.rate


async def _loop(bootstrap: str, source: str, sink: str, mode: str, progress: Progress) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{source}-aiokafka-floor",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    await consumer.start()
    await producer.start()
    try:
        # Assigned, not subscribed: no group rebalance to wait for, so the clock can start
        # before the first fetch (a batch can hold the whole backlog: timing from its arrival
        # would leave its fetch out).
        consumer.assign([TopicPartition(source, p) for p in range(PARTITIONS)])
        progress.arrived()
        uncommitted = 0
        while progress.done < progress.total:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                if mode == "send":
                    for record in records:
                        await producer.send(sink, record.value, key=record.key)
                progress.handled(len(records))
                uncommitted += len(records)
            if uncommitted >= COMMIT_EVERY or progress.done >= progress.total:
                await producer.flush()
                await consumer.commit()
                uncommitted = 0
    finally:
        await producer.stop()
        await consumer.stop()

"""Every worker's in-memory copy of a compacted topic (Kafka Streams' GlobalKTable pattern).

A :class:`TopicFollower` reads every partition of a topic from the beginning,
outside any consumer group, and hands each batch of records to a callback that
keeps the newest value per key.  Compaction keeps the topic (and so the copy)
bounded by the number of live keys; a tombstone removes a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

logger = logging.getLogger(__name__)


class TopicFollower:
    """Follows ``topic`` forever, calling ``apply(records)`` with each fetched batch.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers, ``host:port[,host:port]``.
    topic
        The topic to follow, every partition of it.
    apply
        Called with the records of one fetch, in offset order per partition.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        apply: Callable[[Sequence[ConsumerRecord]], None],
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.apply = apply
        self.caught_up = asyncio.Event()
        self.records_applied = 0
        self.last_lag_seconds = 0.0

    async def run(self, retry_after: float = 1.0) -> None:
        """Follow the topic forever; ``caught_up`` is set once the backlog at start is read.

        Errors (the topic may not exist yet, the broker may be away) are logged and retried.
        """
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                # aiokafka can surface a cancellation of its own (a lookup cut short): not ours.
                logger.warning("following %s: interrupted; retrying", self.topic, exc_info=True)
                await asyncio.sleep(retry_after)
            except Exception as exc:
                logger.warning("following %s: %r; retrying", self.topic, exc)
                await asyncio.sleep(retry_after)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            metadata_max_age_ms=10_000,
        )
        await consumer.start()
        try:
            if self.topic not in await consumer.topics():
                raise LookupError(f"topic {self.topic} does not exist yet")
            # Without a group, aiokafka assigns every partition of the topic, from the beginning.
            consumer.subscribe([self.topic])
            remaining: dict[TopicPartition, int] | None = None
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
                if remaining is None and consumer.assignment():
                    ends = await consumer.end_offsets(list(consumer.assignment()))
                    remaining = {tp: end for tp, end in ends.items() if end > 0}
                for tp, records in batches.items():
                    if not records:
                        continue
                    self.apply(records)
                    self.records_applied += len(records)
                    self.last_lag_seconds = max(0.0, time.time() - records[-1].timestamp / 1000.0)
                    if remaining and records[-1].offset + 1 >= remaining.get(tp, 0):
                        remaining.pop(tp, None)
                if remaining is not None and not remaining:
                    self.caught_up.set()
        finally:
            with contextlib.suppress(asyncio.CancelledError):  # aiokafka's own tasks, when never assigned
                await consumer.stop()

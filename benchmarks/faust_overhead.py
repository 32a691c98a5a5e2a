"""In-process micro benchmarks of faust's per-record overhead: no broker, no network.

``python -m benchmarks.faust_overhead [--records N] [--rounds R]`` prints, per variant,
the CPU time per record (``time.process_time``, so a busy machine inflates it less than
wall time; the minimum and median over interleaved rounds):

* ``sensors``: the monitor sensor's per-record hooks as faust calls them through the app's
  sensor delegate (message in, stream event in and out, message out, one table get and
  set, one produce initiated and completed), faust's Monitor vs :class:`LeanMonitor`.
* ``stream``: faust's Cython stream loop over a pre-filled stream queue, acking every
  event, with ``cython_optimizations`` off and on, each with either monitor.
* ``drain``: the consumer's drain loop handing fetched records to a stream through the
  conductor, with an agent-like task consuming the stream: stock faust (``_drain_messages``
  with a ``wait_first`` per record, Monitor), then adding eddy's changes one at a time:
  the patched drain loop, :class:`LeanMonitor`, ``cython_optimizations=True``.

The records never reach Kafka: ``getmany`` is replaced by batches built in memory, commits
are off.  It measures the framework's own work per record, not a worker's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.transport._cython.conductor import ConductorHandler
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from app import faust_fixes

TOPIC = "overhead"
PARTITION = TP(TOPIC, 0)
BATCH = 500  # records per fake fetch


def _app(monitor: type[Monitor], *, cython_optimizations: bool = False) -> faust.App:
    app = faust.App(
        f"overhead-{monitor.__name__}-{cython_optimizations}",
        broker="kafka://127.0.0.1:1",  # never connected: nothing here starts a service
        store="memory://",
        Monitor=monitor,
        cython_optimizations=cython_optimizations,
        stream_buffer_maxsize=8192,
    )
    app.sensors.add(app.monitor)  # what App.on_init_dependencies does on start
    app.flow_control.resume()
    app.topics._acking_topics.add(TOPIC)
    app.consumer_generation_id = 1
    return app


def _message(offset: int) -> ConsumerMessage:
    return ConsumerMessage(
        TOPIC, 0, offset, 0.0, 0, [], b"key", b"value", None, 3, 5, PARTITION, generation_id=1
    )


def bench_sensors(monitor: type[Monitor], records: int) -> float:
    """CPU seconds per record of the monitor hooks faust calls for one consumed-and-produced record."""
    app = _app(monitor)
    sensors = app.sensors
    stream = app.stream(app.channel())
    table = SimpleNamespace(name="table")
    messages = [_message(offset) for offset in range(records)]
    event = SimpleNamespace()
    started = time.process_time()
    for message in messages:
        offset = message.offset
        sensors.on_message_in(PARTITION, offset, message)
        state = sensors.on_stream_event_in(PARTITION, offset, stream, event)
        sensors.on_table_get(table, "key")
        sensors.on_table_set(table, "key", "value")
        sent = sensors.on_send_initiated(None, TOPIC, message, 3, 5)
        sensors.on_send_completed(None, sent, None)
        sensors.on_stream_event_out(PARTITION, offset, stream, event, state)
        sensors.on_message_out(PARTITION, offset, message)
    return (time.process_time() - started) / records


async def bench_stream(monitor: type[Monitor], cython_optimizations: bool, records: int) -> float:
    """CPU seconds per event of the stream loop (events already queued; every event acked)."""
    app = _app(monitor, cython_optimizations=cython_optimizations)
    stream = app.stream(app.channel(maxsize=records + 1))
    queue = stream.channel.queue
    for offset in range(records):
        message = _message(offset)
        message.refcount = 1
        queue.put_nowait(app.create_event(b"key", b"value", [], message))
    seen = 0
    started = time.process_time()
    async for _event in stream.events():
        seen += 1
        if seen == records:
            break
    elapsed = time.process_time() - started
    assert len(app.consumer._acked[PARTITION]) == records - 1  # the last one is acked on the next step
    return elapsed / records


async def bench_drain(
    drain: Callable[..., Any], monitor: type[Monitor], cython_optimizations: bool, records: int
) -> float:
    """CPU seconds per record from fetched record to an agent having processed it."""
    app = _app(monitor, cython_optimizations=cython_optimizations)
    consumer = app.consumer
    consumer._commit_every = None
    stream = app.stream(app.channel())
    app.topics._tp_to_callback[PARTITION] = ConductorHandler(app.topics, PARTITION, {stream.channel})
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    fetched = 0

    async def getmany(timeout: float):
        nonlocal fetched
        batch = [_message(offset) for offset in range(fetched, min(fetched + BATCH, records))]
        fetched += len(batch)
        if fetched >= records:
            fetcher._stopped.set()
        for message in batch:
            yield PARTITION, message

    consumer.getmany = getmany
    done = asyncio.Event()

    async def agent() -> None:
        seen = 0
        async for _event in stream.events():
            seen += 1
            if seen == records:
                done.set()
                return

    agent_task = asyncio.ensure_future(agent())
    await asyncio.sleep(0)
    started = time.process_time()
    await drain(consumer, fetcher)
    await done.wait()
    elapsed = time.process_time() - started
    await agent_task
    return elapsed / records


def _report(name: str, samples: list[float]) -> str:
    return f"{name:48} min {min(samples) * 1e6:7.2f} µs   median {statistics.median(samples) * 1e6:7.2f} µs"


async def _main(records: int, rounds: int) -> None:
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    for _ in range(rounds):
        for monitor in (Monitor, faust_fixes.LeanMonitor):
            add(f"sensors  {monitor.__name__}", bench_sensors(monitor, records))
        for cython_optimizations in (False, True):
            for monitor in (Monitor, faust_fixes.LeanMonitor):
                name = f"stream   cython_optimizations={cython_optimizations!s:5} {monitor.__name__}"
                add(name, await bench_stream(monitor, cython_optimizations, records))
        for label, drain, monitor, cython_optimizations in (
            ("stock faust", faust_fixes._original_drain_messages, Monitor, False),
            ("+ eddy drain loop", faust_fixes._drain_messages_awaiting_directly, Monitor, False),
            ("+ LeanMonitor", faust_fixes._drain_messages_awaiting_directly, faust_fixes.LeanMonitor, False),
            (
                "+ cython_optimizations (eddy)",
                faust_fixes._drain_messages_awaiting_directly,
                faust_fixes.LeanMonitor,
                True,
            ),
        ):
            add(f"drain    {label}", await bench_drain(drain, monitor, cython_optimizations, records))
    for name, samples in results.items():
        print(_report(name, samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_main(args.records, args.rounds))


if __name__ == "__main__":
    main()

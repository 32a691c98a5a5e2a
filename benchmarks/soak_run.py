"""What every soak shares: one worker fed a paced stream, sampled as it goes, and its topics read back.

:func:`run_soak` starts the local broker if needed and one worker on fresh topics, waits
for its first output (start-up is not part of the soak), then feeds the rest of the
stream in event-time order at a set speed-up while sampling the worker's resident memory
and a view of its state every :data:`SAMPLE_EVERY` seconds.  A pipeline says what to wait
for, what to sample, how to drain and which topics to read back through :class:`Hooks`.

The rest are the pure parts of the reports: p99 per tenth, values at tenths of the run,
live keys of a table over time from its changelog, and cohorts of simulated streams whose
ids churn.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import SimulatedEvent
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks.fraud import PARTITIONS, _get_json, _worker_env, remove_run_topics
from benchmarks.in_process import quantile
from broker import LocalKafka

DAY = 86_400.0
SAMPLE_EVERY = 10.0  # seconds between samples of the worker


@dataclass(frozen=True, slots=True)
class Sample:
    """What the worker looked like ``elapsed`` seconds into the run (``view``: what the pipeline probed)."""

    elapsed: float
    rss_mb: float
    view: Any
    cpu_seconds: float = float("nan")  # the worker's CPU time (user + system) since it started
    memory: WorkerMemory | None = None


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    """Where the worker's resident memory is held (MB), from its ``/worker/`` view."""

    rocksdb: float  # RocksDB's shared block cache, memtables charged to it (its budget bounds it)
    malloc_in_use: float
    malloc_free: float  # resident inside malloc's heap but not in use: fragmentation

    @classmethod
    def of(cls, view: Mapping[str, Any] | None) -> WorkerMemory | None:
        """From a ``/worker/`` view (``None``: no view, or no malloc statistics on this libc)."""
        if view is None or "malloc_in_use_mb" not in view.get("heap", {}):
            return None
        heap = view["heap"]
        return cls(view["rocksdb_memory"]["used_mb"], heap["malloc_in_use_mb"], heap["malloc_free_mb"])


@dataclass(frozen=True)
class Hooks:
    """The Kafka-facing parts one pipeline's soak plugs into :func:`run_soak`.

    ``first_output(bootstrap, prefix, port)`` returns once the worker has handled the first
    event; ``probe(port)`` is sampled with the RSS; ``drain(bootstrap, prefix, port, worker)``
    runs once the feed is done and returns what the report needs; ``read_after(prefix)`` names
    the topics read back once the worker has stopped.
    """

    topics: Sequence[str]
    first_output: Callable[[str, str, int], Any]
    probe: Callable[[int], Any]
    drain: Callable[[str, str, int, subprocess.Popen], Any]
    read_after: Callable[[str], Mapping[str, str]]


@dataclass(frozen=True)
class Run:
    """What :func:`run_soak` saw: ``began_at`` is the epoch second the paced feed started."""

    alive: bool
    began_at: float
    fed_seconds: float
    samples: list[Sample]
    drained: Any
    topics: dict[str, list[Any]]


def run_soak(
    events: Sequence[Any], speedup: float, hooks: Hooks, *, hold: float = 0.0, keep_log: str | None = None
) -> Run:
    """Feed ``events`` to one fresh worker, ``speedup`` event-time seconds per second; see the module."""
    kafka = LocalKafka.from_env()
    started = kafka.start()
    samples: list[Sample] = []
    try:
        bootstrap = kafka.bootstrap
        prefix = f"soak{uuid.uuid4().hex[:6]}-"
        asyncio.run(ensure_topics(bootstrap, [f"{prefix}{name}" for name in hooks.topics], PARTITIONS))
        with tempfile.TemporaryDirectory(prefix="eddy-soak-") as tmp:
            port = free_port()
            worker = start_worker(Path(tmp), web_port=port, env=_worker_env(bootstrap, prefix))
            # The clock starts once the worker has handled an event: its start-up is not part of the soak.
            asyncio.run(produce_events(events[:1], bootstrap, topic_prefix=prefix))
            hooks.first_output(bootstrap, prefix, port)
            feed = threading.Thread(
                target=asyncio.run,
                args=(produce_events(events[1:], bootstrap, topic_prefix=prefix, speedup=speedup),),
                daemon=True,
            )
            began, began_at = time.monotonic(), time.time()
            feed.start()
            try:
                while feed.is_alive() and worker.poll() is None:
                    samples.append(_sample(began, worker.pid, port, hooks.probe(port)))
                    feed.join(SAMPLE_EVERY)
                fed = time.monotonic() - began
                drained = hooks.drain(bootstrap, prefix, port, worker)
                alive = worker.poll() is None
                samples.append(_sample(began, worker.pid, port, hooks.probe(port)))
                if hold:
                    print(f"worker web views on http://127.0.0.1:{port}/ for {hold:g} s", flush=True)
                    time.sleep(hold)
            finally:
                stop_worker(worker)
                if keep_log:
                    Path(keep_log).write_bytes((Path(tmp) / "worker.log").read_bytes())
        topics = {
            name: asyncio.run(records(bootstrap, topic)) for name, topic in hooks.read_after(prefix).items()
        }
        remove_run_topics(bootstrap, prefix)
    finally:
        if started:
            kafka.stop()
    return Run(alive, began_at, fed, samples, drained, topics)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every soak takes: ``--keep-log``, ``--hold`` and ``--no-write``."""
    parser.add_argument("--keep-log", help="copy the worker's log to this file")
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep the worker up at the end (to inspect its views)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to BENCHMARKS.md")


def changelog(prefix: str, table: str) -> str:
    """The changelog topic of ``table`` of a worker started with ``prefix`` (its app id names it)."""
    return f"eddy-bench-{prefix.rstrip('-')}-{table}-changelog"


def state_view(port: int, path: str) -> dict[str, Any] | None:
    """The worker's JSON view at ``path`` (``None`` when it does not answer)."""
    try:
        return _get_json(port, path)
    except OSError:
        return None


async def records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (all partitions), read until three idle seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    await consumer.start()
    found: list[Any] = []
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=1_000)
            idle = 0 if batches else idle + 1
            found.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return found


def _sample(began: float, pid: int, port: int, view: Any) -> Sample:
    memory = WorkerMemory.of(state_view(port, "/worker/"))
    return Sample(time.monotonic() - began, resident_mb(pid), view, cpu_seconds(pid), memory)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, in seconds (NaN once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (NaN once it is gone)."""
    if not Path(f"/proc/{pid}/status").exists():
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# --- pure parts of the reports ----------------------------------------------------------------


def by_tenths(values: list[float]) -> list[float]:
    """The p99 of each tenth of ``values`` (in arrival order).

    >>> by_tenths([float(v) for v in range(20)])
    [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0]
    """
    tenth = max(1, len(values) // 10)
    return [
        quantile(sorted(values[i : i + tenth]), 0.99)
        for i in range(0, tenth * 10, tenth)
        if values[i : i + tenth]
    ]


def tenths(values: list[Any]) -> list[Any]:
    """About eleven of ``values``: one every tenth of them from the first, and the last.

    >>> tenths(list(range(25)))
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 24]
    """
    if not values:
        return []
    step = max(1, len(values) // 10)
    return [*values[::step][:10], values[-1]]


def run_tenths(began_at: float, seconds: float) -> list[float]:
    """The epoch seconds at each tenth of a run of ``seconds`` from ``began_at``, its start included.

    >>> run_tenths(100.0, 50.0)
    [100.0, 105.0, 110.0, 115.0, 120.0, 125.0, 130.0, 135.0, 140.0, 145.0, 150.0]
    """
    return [began_at + seconds * i / 10 for i in range(11)]


def live_keys(changes: Iterable[tuple[int, bytes, bool]], at: Sequence[float]) -> list[int]:
    """Keys of a table alive at each of the epoch seconds ``at``, from its changelog's
    ``(timestamp ms, key, is tombstone)`` records (any order: replayed by timestamp)."""
    live: set[bytes] = set()
    counts: list[int] = []
    moments = iter(sorted(at))
    moment = next(moments, None)
    for stamp, key, tombstone in sorted(changes, key=lambda change: change[0]):
        while moment is not None and stamp > moment * 1000.0:
            counts.append(len(live))
            moment = next(moments, None)
        if tombstone:
            live.discard(key)
        else:
            live.add(key)
    while moment is not None:
        counts.append(len(live))
        moment = next(moments, None)
    return counts


def changelog_view(topic_records: list[Any], at: Sequence[float]) -> dict[str, Any]:
    """A table's live keys at the epoch seconds ``at``, its keys ever written and its largest record."""
    changes = [(r.timestamp, r.key, r.value is None) for r in topic_records]
    return {
        "live_keys": live_keys(changes, at),
        "keys_ever": len({key for _, key, _ in changes}),
        "largest_record": max((len(r.value or b"") for r in topic_records), default=0),
    }


def cohorts(
    make: Callable[[int, float, float], Iterator[SimulatedEvent]],
    rename: Callable[[SimulatedEvent, str], SimulatedEvent],
    *,
    start: float,
    days: float,
    cohort_days: float,
    seed: int = 0,
) -> Iterator[SimulatedEvent]:
    """Overlapping cohorts of a simulated stream, merged in event-time order, so that ids churn.

    Cohort ``k`` is ``make(seed + k, its start, its days)`` with every id renamed by
    ``rename(event, f"c{k:02d}-")``; it lives ``cohort_days``, the next one starts half
    of that later, so two cohorts are always active and each lives on alone for no time.
    The first and the last are cut to the span ``[start, start + days)``.
    """
    stride = cohort_days / 2.0
    end = start + days * DAY
    streams = []
    k = 0
    while start + (k - 1) * stride * DAY < end:
        begin = max(start, start + (k - 1) * stride * DAY)
        until = min(end, start + (k + 1) * stride * DAY)
        streams.append(_renamed_all(make(seed + k, begin, (until - begin) / DAY), rename, f"c{k:02d}-"))
        k += 1
    return heapq.merge(*streams, key=lambda event: event.event_time)


def _renamed_all(
    events: Iterator[SimulatedEvent], rename: Callable[[SimulatedEvent, str], SimulatedEvent], prefix: str
) -> Iterator[SimulatedEvent]:
    # A function, not a generator expression in the loop: that would read ``prefix`` late.
    for event in events:
        yield rename(event, prefix)


def renamed(event: SimulatedEvent, prefix: str, fields: Sequence[str], key_field: str) -> SimulatedEvent:
    """``event`` with ``prefix`` before each of its payload's ``fields``; its key is ``key_field``'s."""
    value = {**event.value, **{name: prefix + event.value[name] for name in fields}}
    return replace(event, key=value[key_field], value=value)


def cell(values: Iterable[Any], spec: str = "") -> str:
    """Values as one markdown cell: ``a, b, c``."""
    return ", ".join(format(value, spec) for value in values)


def percentiles(values: list[float]) -> dict[Any, float]:
    """p50, p95, p99 and the max of ``values`` (NaN when empty)."""
    if not values:
        return {0.5: float("nan"), 0.95: float("nan"), 0.99: float("nan"), "max": float("nan")}
    ordered = sorted(values)
    return {q: quantile(ordered, q) for q in (0.5, 0.95, 0.99)} | {"max": ordered[-1]}


def along(views: Sequence[Mapping[str, Any]], *fields: str) -> str:
    """``fields`` of each view joined by ``/``, the views by ``;``: one markdown cell.

    >>> along([{"a": 1, "b": 2}, {"a": 3}], "a", "b")
    '1/2; 3/None'
    """
    return "; ".join("/".join(str(view.get(name)) for name in fields) for view in views)


def cpu_along(samples: list[Sample], events: int) -> str:
    """The worker's CPU over the run: per event, and the share of one core per tenth of the run.

    >>> samples = [Sample(0.0, 1.0, None, 10.0), Sample(10.0, 1.0, None, 15.0), Sample(20.0, 1.0, None, 22.0)]
    >>> cpu_along(samples, events=100_000)
    '120 µs per event (60 % of a core); per tenth of the run: 50, 70 %'
    """
    timed = [s for s in samples if s.cpu_seconds == s.cpu_seconds]  # NaN: the worker was gone
    if len(timed) < 2 or not events:
        return "not measured"
    first, last = timed[0], timed[-1]
    used, seconds = last.cpu_seconds - first.cpu_seconds, last.elapsed - first.elapsed
    spans = tenths(timed)
    shares = [
        100.0 * (b.cpu_seconds - a.cpu_seconds) / (b.elapsed - a.elapsed)
        for a, b in itertools.pairwise(spans)
        if b.elapsed > a.elapsed
    ]
    return (
        f"{1e6 * used / events:,.0f} µs per event ({100.0 * used / seconds:.0f} % of a core); "
        f"per tenth of the run: {cell(shares, '.0f')} %"
    )


def rss_along(samples: list[Sample]) -> str:
    """The worker's RSS at tenths of the run, as one markdown cell."""
    return "; ".join(f"{s.elapsed:.0f} s: {s.rss_mb:.0f}" for s in tenths(samples))


def memory_along(samples: list[Sample]) -> str:
    """Where the worker's RSS was held at tenths of the run (RocksDB / malloc in use / malloc free, MB)."""

    def cell(memory: WorkerMemory | None) -> str:
        if memory is None:
            return "-"
        return f"{memory.rocksdb:.0f}/{memory.malloc_in_use:.0f}/{memory.malloc_free:.0f}"

    return "; ".join(f"{s.elapsed:.0f} s: {cell(s.memory)}" for s in tenths(samples))

"""A bare Faust app that measures the per-event cost floor of an agent on this machine.

``FLOOR_MODE`` picks what the agent does per event: ``noop`` (consume only),
``table`` (one RocksDB table get + set, changelogged), ``send`` (one produce),
``both``.  The agent logs ``FLOOR_RESULT <events/s>`` after ``FLOOR_EVENTS`` events.
Run by :mod:`benchmarks.faust_floor`.  Stock faust-streaming by default; with
``FLOOR_PATCHED=1`` (passed through from the environment of ``make bench``) faust as eddy
runs it: ``app.faust_fixes`` installed, its lean monitor and ``cython_optimizations``.
"""

from __future__ import annotations

import os

import faust

from benchmarks.floors.common import COMMIT_EVERY, PARTITIONS, Backlog, Progress

BACKLOG = Backlog(os.environ["FLOOR_RUN"], int(os.environ["FLOOR_EVENTS"]))
MODE = os.environ["FLOOR_MODE"]
PATCHED = os.environ.get("FLOOR_PATCHED") == "1"

if PATCHED:
    from app import faust_fixes

    as_eddy_runs_it: dict = {"Monitor": faust_fixes.LeanMonitor, "cython_optimizations": True}
else:
    as_eddy_runs_it = {}

app = faust.App(
    f"floor-{BACKLOG.run}",
    broker=os.environ.get("KAFKA_BROKER", "kafka://127.0.0.1:9092"),
    store="rocksdb://",
    topic_partitions=PARTITIONS,
    key_serializer="raw",
    value_serializer="raw",
    producer_linger_ms=2,
    broker_commit_every=COMMIT_EVERY,
    **as_eddy_runs_it,
)
source = app.topic(BACKLOG.source, partitions=PARTITIONS, internal=True)
sink = app.topic(BACKLOG.sink, partitions=PARTITIONS, internal=True)
state = app.Table(f"floor-{BACKLOG.run}-state", key_type=str, options={"driver": "rocksdict"})
_progress = Progress(BACKLOG.events)


@app.agent(source)
async def floor(stream):
    async for event in stream.events():
        _progress.arrived()
        if MODE in ("table", "both"):
            key = event.key.decode()
            state.get(key)
            state[key] = event.value
        if MODE in ("send", "both"):
            await sink.send(key=event.key, value=event.value)
        if _progress.handled() and _progress.done == BACKLOG.events:
            app.log.warning("FLOOR_RESULT %.0f", _progress.rate)

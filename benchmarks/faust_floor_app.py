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
import time

import faust

RUN = os.environ["FLOOR_RUN"]
MODE = os.environ["FLOOR_MODE"]
EVENTS = int(os.environ["FLOOR_EVENTS"])
PATCHED = os.environ.get("FLOOR_PATCHED") == "1"

if PATCHED:
    from app import faust_fixes

    as_eddy_runs_it: dict = {"Monitor": faust_fixes.LeanMonitor, "cython_optimizations": True}
else:
    as_eddy_runs_it = {}

app = faust.App(
    f"floor-{RUN}",
    broker=os.environ.get("KAFKA_BROKER", "kafka://127.0.0.1:9092"),
    store="rocksdb://",
    topic_partitions=8,
    key_serializer="raw",
    value_serializer="raw",
    producer_linger_ms=2,
    broker_commit_every=2_000,
    **as_eddy_runs_it,
)
source = app.topic(f"floor-{RUN}-source", partitions=8, internal=True)
sink = app.topic(f"floor-{RUN}-sink", partitions=8, internal=True)
state = app.Table(f"floor-{RUN}-state", key_type=str, options={"driver": "rocksdict"})
_progress = {"events": 0, "started": 0.0}


@app.agent(source)
async def floor(stream):
    async for event in stream.events():
        if not _progress["events"]:
            _progress["started"] = time.perf_counter()
        if MODE in ("table", "both"):
            key = event.key.decode()
            state.get(key)
            state[key] = event.value
        if MODE in ("send", "both"):
            await sink.send(key=event.key, value=event.value)
        _progress["events"] += 1
        if _progress["events"] == EVENTS:
            rate = EVENTS / (time.perf_counter() - _progress["started"])
            app.log.warning("FLOOR_RESULT %.0f", rate)

"""The Quix Streams floor: one Quix Streams 3.x application (confluent-kafka/librdkafka underneath).

One process works through the same backlog as the Faust floor.  ``noop``: a dataframe that
only consumes.  ``both``: per event one state get + set (Quix's RocksDB state, changelogged,
keyed by the record's key like a Faust table) and one produce to the sink, the work of the
Faust floor's ``both`` mode.  Keys and values stay bytes (no JSON), as in the Faust floor app;
the producer lingers 2 ms, as Faust's there; checkpoints every ``COMMIT_EVERY`` records.
Quix writes a changelog record per key changed in a checkpoint (not per set, as Faust does),
its own design.  The clock runs from the first event to the last one handled.

Needs the optional ``quixstreams`` package: ``pip install -e '.[bench]'`` (``make bench`` does).
"""

from __future__ import annotations

import logging
import signal
import tempfile

from quixstreams import Application

from benchmarks.floors.common import COMMIT_EVERY, Progress, produce_backlog

MODES = ("noop", "both")


def measure(bootstrap: str, mode: str, events: int, *, timeout: float = 600) -> float:
    """Events per second of one Quix Streams application doing ``mode`` per event on a backlog."""
    if mode not in MODES:
        raise ValueError(f"the Quix Streams floor has modes {MODES}, not {mode!r}")
    backlog = produce_backlog(bootstrap, events)
    progress = Progress(events)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with tempfile.TemporaryDirectory(prefix="eddy-quix-floor-") as state_dir:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"{backlog.source}-quix-floor",
            auto_offset_reset="earliest",
            commit_every=COMMIT_EVERY,
            state_dir=state_dir,
            producer_extra_config={"linger.ms": 2},
            loglevel=logging.WARNING,
        )
        source = app.topic(backlog.source, key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.update(lambda _value: progress.arrived())
        if mode == "both":
            sdf = sdf.update(_get_and_set, stateful=True)
            sdf = sdf.to_topic(app.topic(backlog.sink, key_serializer="bytes", value_serializer="bytes"))
        sdf.update(lambda _value: progress.handled())
        try:
            # Stops after ``events`` outputs, or after ``timeout`` seconds without a new record.
            app.run(count=events, timeout=timeout, collect=False)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return progress.rate


def _get_and_set(value: bytes, state) -> None:
    state.get("value")
    state.set("value", value.decode())

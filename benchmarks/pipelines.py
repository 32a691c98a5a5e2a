"""Recommendations and alerts pipeline benchmarks: backlog throughput and latency under load.

``python -m benchmarks.pipelines`` (part of ``make bench``) runs both against the local
broker (started if needed) and appends the results to BENCHMARKS.md.

1. Throughput: a backlog of simulated events is produced first; one worker process
   then works through it.  events/s = events / (time the stage had handled them all -
   time it handled the first), from its ``/…/state/`` counts polled every 0.25 s.  For a
   pipeline with a learner, how far behind its training log the learner was when the last
   event was handled (a learner left behind would flatter the figure: an empty model
   ranks nothing), and events/s until the learner had applied its whole training log.
2. Latency: a warm worker gets events at a fixed offered load; latency is, for every
   event, the time from its Kafka timestamp to its stage's outputs being acknowledged by
   the broker (the stage's ``event_to_output`` sample, the last 10,000 events).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import timeit
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.simulation.producer import OutgoingEvent, ensure_topics, produce_events
from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
from app.simulation.transactions import SimulatedEvent
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks.fraud import PARTITIONS, _worker_env, commit_of_checkout, remove_run_topics, report
from broker import local_kafka


@dataclass(frozen=True)
class Pipeline:
    """What the benchmark needs to know of one pipeline."""

    name: str
    input_topic: str
    state_path: str
    stage: str
    events: Callable[[int], Iterator[SimulatedEvent]]
    has_learner: bool = False


def _clicks(seed: int) -> Iterator[SimulatedEvent]:
    return generate_click_stream(ClickStreamConfig(seed=seed, n_users=5_000, n_items=2_000, days=30))


def _readings(seed: int) -> Iterator[SimulatedEvent]:
    return generate_sensor_stream(SensorStreamConfig(seed=seed, n_devices=500, days=30, anomaly_rate=0.01))


PIPELINES = {
    "recommendations": Pipeline(
        "recommendations", "clicks", "/reco/state/", "recommend_for_users", _clicks, has_learner=True
    ),
    "alerts": Pipeline("alerts", "sensor-readings", "/alerts/state/", "assess_readings", _readings),
}


def _state(port: int, pipeline: Pipeline) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{pipeline.state_path}", timeout=2) as response:
            return orjson.loads(response.read())
    except OSError:
        return None


def _stage_of(state: dict[str, Any] | None, pipeline: Pipeline) -> dict[str, Any] | None:
    if state is None:
        return None
    stages = state.get("stages") or {pipeline.stage: state.get("stage")}
    return stages[pipeline.stage]


def _stage_report(port: int, pipeline: Pipeline) -> dict[str, Any] | None:
    return _stage_of(_state(port, pipeline), pipeline)


def _handled(report: dict[str, Any] | None) -> int:
    return 0 if report is None else report["counts"].get("events", 0)


def throughput(bootstrap: str, workdir: Path, pipeline: Pipeline, n: int) -> dict[str, float]:
    """One worker on a backlog of ``n`` events of ``pipeline``."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    events = list(islice(pipeline.events(41), n))
    asyncio.run(ensure_topics(bootstrap, [prefix + pipeline.input_topic], PARTITIONS))
    asyncio.run(produce_events(events, bootstrap, topic_prefix=prefix))
    port = free_port()
    env = _worker_env(bootstrap, prefix)
    worker = start_worker(workdir / f"throughput-{pipeline.name}", web_port=port, env=env)
    first = last = learned = None
    handled_at_first = 0
    learner: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 1_800
        while time.monotonic() < deadline:
            state = _state(port, pipeline)
            handled = _handled(_stage_of(state, pipeline))
            if handled and first is None:
                first, handled_at_first = time.monotonic(), handled
            if handled >= len(events) and last is None:
                last = time.monotonic()
                learner = (state or {}).get("learner", {})
            if last is not None:
                if not pipeline.has_learner:
                    learned = last
                    break
                if (state or {}).get("learner", {}).get("messages_behind") != 0:
                    learned = None
                elif learned is not None:
                    break  # caught up at two polls in a row, not at an end of the log not fetched yet
                else:
                    learned = time.monotonic()
            time.sleep(0.25)  # a poll costs the worker a little (its reports): not too often
    finally:
        stop_worker(worker)
        remove_run_topics(bootstrap, prefix)
    if first is None or last is None or learned is None or last <= first:
        raise RuntimeError(f"{pipeline.name}: the worker did not work through the backlog in time")
    seconds = last - first
    counted = len(events) - handled_at_first
    # The events handled by the first poll were handled before ``first``: not counted.
    return {
        "events": len(events),
        "seconds": seconds,
        "events_per_second": counted / seconds,
        **(
            {
                "learner_behind": learner.get("messages_behind"),
                "events_per_second_until_learned": counted / (learned - first),
            }
            if pipeline.has_learner
            else {}
        ),
    }


def latency(bootstrap: str, workdir: Path, pipeline: Pipeline, rate: float, seconds: float) -> dict[str, Any]:
    """Event-to-output latency of a warm worker at ``rate`` events per second (the last 10,000
    events; keep ``rate * seconds`` at least that, or warm-up events are in the sample)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    stream = pipeline.events(51)
    warmup = list(islice(stream, 5_000))
    measured = [OutgoingEvent(e.topic, e.key, e.value) for e in islice(stream, int(rate * seconds))]
    asyncio.run(ensure_topics(bootstrap, [prefix + pipeline.input_topic], PARTITIONS))
    port = free_port()
    worker = start_worker(
        workdir / f"latency-{pipeline.name}-{rate:.0f}", web_port=port, env=_worker_env(bootstrap, prefix)
    )
    try:
        asyncio.run(produce_events(warmup, bootstrap, topic_prefix=prefix))
        _wait_handled(port, pipeline, len(warmup))
        asyncio.run(produce_events(measured, bootstrap, topic_prefix=prefix, rate=rate, linger_ms=0))
        report = _wait_handled(port, pipeline, len(warmup) + len(measured))
        if _handled(report) < len(warmup) + len(measured):
            raise RuntimeError(f"{pipeline.name}: the worker did not handle every event in time")
    finally:
        stop_worker(worker)
        remove_run_topics(bootstrap, prefix)
    lag = report["event_to_output"] if report else {}
    return {"offered_per_second": rate, "events": len(measured), **lag}


def _wait_handled(port: int, pipeline: Pipeline, n: int, timeout: float = 600) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = _stage_report(port, pipeline)
        if _handled(report) >= n:
            return report
        time.sleep(0.2)
    return report


def _markdown(results: dict[str, dict[str, Any]], command: str, cpu_ms: tuple[float, float]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Recommendations and alerts — {stamp}, commit {commit_of_checkout()}\n",
        f"Command: `{command}`. One worker, {PARTITIONS} partitions, local broker on this machine "
        f"(its speed this sitting: `sum(range(10**6))` in {cpu_ms[0]:.1f} ms before the runs, "
        f"{cpu_ms[1]:.1f} ms after).\n",
        "| pipeline | backlog events | events/s | learner behind | events/s until learned | offered/s "
        "| p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        t, lat = result["throughput"], result["latency"]
        behind = t.get("learner_behind", "-")
        until_learned = t.get("events_per_second_until_learned")
        lines.append(
            f"| {name} | {t['events']:,} | {t['events_per_second']:,.0f} | {behind} "
            f"| {'-' if until_learned is None else f'{until_learned:,.0f}'} "
            f"| {lat['offered_per_second']:,.0f} | {lat.get('p50_ms')} | {lat.get('p99_ms')} "
            f"| {lat.get('max_ms')} |"
        )
    lines.append(
        "\nevents/s: the input stage's handled events over the time it took (polled every 0.25 s). "
        "Learner behind: training messages the learner had not applied when the last event was "
        "handled; events/s until learned: the same events over the time until the learner had "
        "applied every training message. Latency: from each event's Kafka timestamp to its stage's "
        "outputs being acknowledged (the last 10,000 events of the paced run).\n"
    )
    return "\n".join(lines)


def cpu_reference_ms() -> float:
    """This machine's speed now, for comparing sittings: the best of 5 ``sum(range(10**6))`` (ms)."""
    return 1000.0 * min(timeit.repeat("sum(range(10**6))", number=1, repeat=5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000, help="backlog size per pipeline")
    parser.add_argument("--rate", type=float, default=1_000.0, help="offered load of the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to BENCHMARKS.md")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    cpu_before = cpu_reference_ms()
    with local_kafka() as bootstrap, tempfile.TemporaryDirectory(prefix="eddy-bench-") as tmp:
        for name, pipeline in PIPELINES.items():
            results[name] = {
                "throughput": throughput(bootstrap, Path(tmp), pipeline, args.events),
                "latency": latency(bootstrap, Path(tmp), pipeline, args.rate, args.seconds),
            }
            print(name, orjson.dumps(results[name]).decode(), flush=True)
    command = "python -m benchmarks.pipelines" + (f" {' '.join(argv)}" if argv else "")
    report(_markdown(results, command, (cpu_before, cpu_reference_ms())), record=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

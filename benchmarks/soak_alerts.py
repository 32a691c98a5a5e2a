"""Soak of the alerts pipeline: days of sensor readings through one worker at a steady rate.

``python -m benchmarks.soak --pipeline alerts`` (``make soak-all``) streams ``--days`` of
simulated readings (:mod:`app.simulation.sensors`, one a minute per device) through one
worker at ``--rate`` readings per second, in event-time order.  The simulator's fleet is
fixed, so the stream is made of overlapping fleets (:func:`benchmarks.soak_run.cohorts`):
every ``--fleet-days / 2`` days ``--devices`` new devices start reporting and the oldest
fleet falls silent, so that silent devices are swept (after a day of event time).  It reports:

- completion: readings fed against those the stage accepted, counted as exact repeats or
  sent to ``dead-letters`` (from its ``/alerts/state/`` counts); the alerts by reason;
- the rate sustained and the stage's latency (Kafka timestamp of a reading to its outputs
  acknowledged: the stage's sample of its last 10,000 readings, read every 10 s), its p99
  per tenth of the run being the largest p99 read in that tenth;
- alert precision and recall per anomaly kind against the simulator's truth;
- RSS, the device table's live keys (replayed from its changelog), the alerts open (replayed
  from the alerts topic), cached devices and devices swept over time, and the largest
  device record.

The results are appended to BENCHMARKS.md (``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
from app.simulation.transactions import SimulatedEvent
from benchmarks.fraud import commit_of_checkout
from benchmarks.fraud import report as publish_report
from benchmarks.soak_run import (
    DAY,
    Hooks,
    Run,
    Sample,
    add_run_arguments,
    along,
    cell,
    changelog,
    changelog_view,
    cohorts,
    cpu_along,
    live_keys,
    memory_along,
    renamed,
    rss_along,
    run_soak,
    run_tenths,
    state_view,
    tenths,
)
from models.alert_quality import KINDS, Fired, KindQuality, episodes_from_truth, evaluate

START = 1_767_225_600.0
STATE = "/alerts/state/"
DEVICE_TABLE = "alerts-device-state"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertCompletion:
    """Readings fed against what the stage did with them (its ``/alerts/state/`` counts)."""

    fed: int
    accepted: int
    repeated: int
    dead_letters: int
    redelivered: int
    handled: int

    @property
    def lost(self) -> int:
        """Readings the stage never counted (a reading delivered again is counted once)."""
        return self.fed - self.accepted - self.repeated - self.dead_letters


def alert_completion(fed: int, state: dict[str, Any] | None) -> AlertCompletion:
    """Completion from the last ``/alerts/state/`` view (``None``: the worker did not answer)."""
    counts = (state or {}).get("counts", {})
    stage = (state or {}).get("stage", {}).get("counts", {})
    return AlertCompletion(
        fed=fed,
        accepted=counts.get("readings", 0),
        repeated=counts.get("repeated", 0),
        dead_letters=stage.get("dead_letters", 0),
        redelivered=counts.get("redelivered", 0),
        handled=stage.get("events", 0),
    )


def alert_probe(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a soak keeps of an ``/alerts/state/`` view: counts, cached devices, sweeps, latency."""
    if state is None:
        return None
    stage = state.get("stage", {})
    lag = stage.get("event_to_output", {})
    return {
        "handled": stage.get("counts", {}).get("events", 0),
        "cached": sum(stage.get("cached_keys", {}).values()),
        "swept": state.get("counts", {}).get("idle_devices_swept", 0),
        "p50_ms": lag.get("p50_ms"),
        "p99_ms": lag.get("p99_ms"),
        "max_ms": lag.get("max_ms"),
    }


def p99_by_tenth(samples: Sequence[Sample], seconds: float) -> list[float | None]:
    """For each tenth of a feed of ``seconds``, the largest p99 the stage reported in it (``None``: none)."""
    worst: list[float | None] = [None] * 10
    for sample in samples:
        p99 = (sample.view or {}).get("p99_ms")
        if p99 is None or not 0 <= sample.elapsed <= seconds:
            continue
        tenth = min(9, int(10 * sample.elapsed / seconds)) if seconds > 0 else 0
        worst[tenth] = p99 if worst[tenth] is None else max(worst[tenth], p99)
    return worst


def alerts_by_reason(alerts: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per reason, ``(alerts raised, resolved)``.

    >>> alerts_by_reason([{"reason": "spike", "severity": "critical"},
    ...                   {"reason": "spike", "severity": "resolved"},
    ...                   {"reason": "stuck", "severity": "warning"}])
    {'spike': (1, 1), 'stuck': (1, 0)}
    """
    raised: Counter[str] = Counter()
    resolved: Counter[str] = Counter()
    for alert in alerts:
        (resolved if alert["severity"] == RESOLVED else raised)[alert["reason"]] += 1
    return {reason: (raised[reason], resolved[reason]) for reason in sorted(raised | resolved)}


def open_alert_changes(records: Iterable[tuple[int, dict[str, Any]]]) -> list[tuple[int, bytes, bool]]:
    """The alerts topic's ``(Kafka timestamp ms, alert)`` as changes of the set of open alerts (one per
    device and metric), for :func:`benchmarks.soak_run.live_keys`: a ``resolved`` alert closes it.

    An alert still open when its device is swept is dropped without a ``resolved``: it stays open here.
    """
    return [
        (stamp, f"{alert['device_id']}/{alert['metric']}".encode(), alert["severity"] == RESOLVED)
        for stamp, alert in records
    ]


def alert_quality(
    events: Iterable[SimulatedEvent], alerts: Iterable[dict[str, Any]]
) -> dict[str, KindQuality]:
    """Precision and recall per anomaly kind of the alerts raised, against the stream's truth
    (:func:`models.alert_quality.evaluate`; its time to detect is to the alert's reading here)."""
    episodes = episodes_from_truth((e.key, e.event_time, e.truth["anomaly_kind"]) for e in events)
    fired = [
        Fired(alert["device_id"], alert["reason"], alert["ts"], alert["ts"])
        for alert in alerts
        if alert["severity"] != RESOLVED
    ]
    return evaluate(episodes, fired)


def reading_stream(days: float, fleet_days: float, devices: int, anomaly_rate: float) -> list[SimulatedEvent]:
    """The soak's readings: fleets of ``devices`` devices, ids prefixed per fleet."""

    def make(seed: int, start: float, span: float) -> Any:
        config = SensorStreamConfig(
            seed=seed, n_devices=devices, start=start, days=span, anomaly_rate=anomaly_rate
        )
        return generate_sensor_stream(config)

    def rename(event: SimulatedEvent, prefix: str) -> SimulatedEvent:
        return renamed(event, prefix, ("device_id", "reading_id"), "device_id")

    return list(cohorts(make, rename, start=START, days=days, cohort_days=fleet_days))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--fleet-days", type=float, default=4.0, help="how long a fleet reports")
    parser.add_argument("--devices", type=int, default=25, help="devices per fleet")
    parser.add_argument("--anomaly-rate", type=float, default=0.01, help="share of anomalous readings")
    parser.add_argument("--rate", type=float, default=1_000.0, help="readings per second offered")
    add_run_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    events = reading_stream(args.days, args.fleet_days, args.devices, args.anomaly_rate)
    speedup = args.days * DAY / (len(events) / args.rate)

    def wait_handled(port: int, worker: subprocess.Popen | None, n: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline and (worker is None or worker.poll() is None):
            state = state_view(port, STATE) or state
            if state is not None and state.get("stage", {}).get("counts", {}).get("events", 0) >= n:
                break
            time.sleep(0.5)
        return state

    hooks = Hooks(
        topics=("sensor-readings", "alerts"),
        # Alerts are sparse: the stage's count says when the first reading is handled.
        first_output=lambda bootstrap, prefix, port: wait_handled(port, None, 1, 120),
        probe=lambda port: alert_probe(state_view(port, STATE)),
        drain=lambda bootstrap, prefix, port, worker: wait_handled(port, worker, len(events), 600),
        read_after=lambda prefix: {"alerts": f"{prefix}alerts", "devices": changelog(prefix, DEVICE_TABLE)},
    )
    run = run_soak(events, speedup, hooks, hold=args.hold, keep_log=args.keep_log)
    report = alerts_report(run, events, args.days, args.rate)
    report["command"] = "python -m benchmarks.soak --pipeline alerts " + " ".join(argv)
    report["fleets"] = (args.fleet_days, args.devices, args.anomaly_rate)
    text = alerts_markdown(report)
    publish_report(text, record=not args.no_write)
    done: AlertCompletion = report["completion"]
    return 0 if run.alive and done.lost == 0 else 1


def alerts_report(run: Run, events: Sequence[SimulatedEvent], days: float, rate: float) -> dict[str, Any]:
    """The measures of an alerts soak from what :func:`run_soak` saw."""
    records = run.topics["alerts"]
    alerts = [orjson.loads(record.value) for record in records]
    at = run_tenths(run.began_at, run.fed_seconds)
    views = [s.view for s in run.samples if s.view is not None]
    # From the first sample (the first reading handled) to the last (all handled, or the drain's end).
    handled = views[-1]["handled"] - views[0]["handled"] if len(views) > 1 else 0
    seconds = run.samples[-1].elapsed - run.samples[0].elapsed if len(run.samples) > 1 else 0.0
    return {
        "days": days,
        "offered": rate,
        "alive": run.alive,
        "fed_seconds": run.fed_seconds,
        "completion": alert_completion(len(events), run.drained),
        "sustained": handled / seconds if seconds else float("nan"),
        "latency": (views[-1] if views else {}),
        "p99_by_tenth": p99_by_tenth(run.samples, run.fed_seconds),
        "by_reason": alerts_by_reason(alerts),
        "quality": alert_quality(events, alerts),
        "open_alerts": live_keys(
            open_alert_changes(zip((r.timestamp for r in records), alerts, strict=True)), at
        ),
        "devices": changelog_view(run.topics["devices"], at),
        "samples": run.samples,
    }


def alerts_markdown(report: dict[str, Any]) -> str:
    """The report as a BENCHMARKS.md section."""
    done: AlertCompletion = report["completion"]
    samples: list[Sample] = report["samples"]
    views = [s.view or {} for s in tenths(samples)]
    fleet_days, devices, anomaly_rate = report["fleets"]
    when = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"\n## Soak, alerts — {when}, commit {commit_of_checkout()}\n",
        f"Command: `{report['command'].strip()}`. One worker, {report['days']:g} days of readings "
        f"({done.fed} readings, one a minute per device; fleets of {devices} devices reporting "
        f"{fleet_days:g} days, a new one every {fleet_days / 2:g} days; anomaly rate {anomaly_rate:g}) "
        f"fed in event-time order at {report['offered']:.0f}/s.\n",
        *alerts_rows(report),
        f"| cached devices / devices swept (total), along the run | {along(views, 'cached', 'swept')} |",
        f"| worker RSS (MB) along the run | {rss_along(samples)} |",
        f"| worker memory (MB) along the run: RocksDB cache and memtables / malloc in use / malloc free "
        f"| {memory_along(samples)} |",
        f"| worker CPU while fed | {cpu_along(samples, done.fed)} |",
        f"| largest device record | {report['devices']['largest_record']} bytes |",
        "",
    ]
    return "\n".join(rows)


def alerts_rows(report: dict[str, Any]) -> list[str]:
    """The table's head and its completion, rate, latency, alerts, quality and table rows."""
    done: AlertCompletion = report["completion"]
    lat = report["latency"]
    quality: dict[str, KindQuality] = report["quality"]
    devices = report["devices"]

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return [
        "| measure | value |",
        "|---|---|",
        f"| worker alive at the end | {report['alive']} |",
        f"| readings accepted / exact repeats / dead letters / lost (redelivered) "
        f"| {done.accepted} / {done.repeated} / **{done.dead_letters}** / **{done.lost}** "
        f"({done.redelivered}) |",
        f"| rate sustained (the stage's counts) | {report['sustained']:.0f}/s "
        f"(feed took {report['fed_seconds']:.0f} s) |",
        f"| reading to alerts acknowledged, last 10,000 readings | p50 {lat.get('p50_ms')} ms, "
        f"**p99 {lat.get('p99_ms')} ms**, max {lat.get('max_ms')} ms |",
        f"| largest p99 read per tenth of the run (ms) | {cell(report['p99_by_tenth'])} |",
        f"| alerts raised / resolved, by reason "
        f"| {'; '.join(f'{reason} {up}/{down}' for reason, (up, down) in report['by_reason'].items())} |",
        f"| recall per kind ({', '.join(KINDS)}) | {', '.join(share(quality[k].recall) for k in KINDS)} |",
        f"| precision per kind ({', '.join(KINDS)}), all "
        f"| {', '.join(share(quality[k].precision) for k in (*KINDS, 'all'))} |",
        f"| alerts open along the run | {cell(report['open_alerts'])} |",
        f"| device table: live keys along the run (keys ever) "
        f"| {cell(devices['live_keys'])} ({devices['keys_ever']}) |",
    ]


if __name__ == "__main__":
    sys.exit(main())

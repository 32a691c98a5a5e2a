"""Soak: months of simulated traffic through one worker at a steady rate; nothing may grow or stop.

``make soak`` (``python -m benchmarks.soak``) generates a long stream (default: the
``handbook`` scenario, 120 days, every label 7 days late), starts one worker on fresh topics
and, once it has decided a first transaction, feeds it the stream in event-time order,
compressed so that transactions arrive at ``--rate`` per second (labels arrive when their
event time says, as in production).  Meanwhile it samples the worker's resident memory and
how far its learner is behind.  At the end it waits until the learner
has applied every training record, then reports:

- completion: transactions decided, lost (never decided), repeated, and repeated with a
  different outcome;
- the rate sustained and the decision latency percentiles (overall and per tenth of the run);
- quality of the decisions the worker made over the last 14 days (ROC AUC, average precision);
- the model snapshot's size and the worker's RSS over time, and the largest card-state record.

The results are appended to BENCHMARKS.md (``--no-write`` prints only).

``--pipeline recommendations`` and ``--pipeline alerts`` run the soaks of the other two
pipelines instead (:mod:`benchmarks.soak_reco`, :mod:`benchmarks.soak_alerts`, ``make soak-all``);
the machinery all three share is :mod:`benchmarks.soak_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.simulation.transactions import SCENARIOS, generate_transaction_stream, stream_config
from benchmarks.fraud import _get_json, _read_decisions, commit_of_checkout, wait_until_learned
from benchmarks.fraud import report as publish_report
from benchmarks.in_process import quantile
from benchmarks.soak_run import (
    DAY,
    Hooks,
    Sample,
    add_run_arguments,
    by_tenths,
    changelog,
    cpu_along,
    memory_along,
    rss_along,
    run_soak,
    tenths,
)
from models.metrics import average_precision, roc_auc

QUALITY_DAYS = 14.0
PIPELINES = ("fraud", "recommendations", "alerts")


@dataclass(frozen=True, slots=True)
class Completion:
    transactions: int
    decided: int
    repeated: int
    repeated_differently: int

    @property
    def lost(self) -> int:
        return self.transactions - self.decided


def _learner_behind(port: int) -> int | None:
    try:
        return _get_json(port, "/fraud/state/")["learner"].get("messages_behind")
    except OSError:
        return None


def completion(transactions: int, decisions: list[dict]) -> Completion:
    """Count decided, repeated and differently repeated transactions among ``decisions``."""
    outcomes: dict[str, set[tuple]] = {}
    for decision in decisions:
        outcome = (decision["score"], decision["decision"], decision["model_version"])
        outcomes.setdefault(decision["tx_id"], set()).add(outcome)
    return Completion(
        transactions=transactions,
        decided=len(outcomes),
        repeated=len(decisions) - len(outcomes),
        repeated_differently=sum(1 for seen in outcomes.values() if len(seen) > 1),
    )


def _pipeline(argv: list[str] | None) -> str:
    """The ``--pipeline`` asked for (``fraud`` when none); the rest is left to that pipeline's parser."""
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--pipeline", choices=PIPELINES, default="fraud")
    return chooser.parse_known_args(argv)[0].pipeline


def _without_pipeline(argv: list[str]) -> list[str]:
    """``argv`` without its ``--pipeline NAME`` (or ``--pipeline=NAME``).

    >>> _without_pipeline(["--rate", "5", "--pipeline", "alerts", "--no-write"])
    ['--rate', '5', '--no-write']
    >>> _without_pipeline(["--pipeline=alerts"])
    []
    """
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--pipeline":
            skip = True
        elif not arg.startswith("--pipeline="):
            rest.append(arg)
    return rest


def main(argv: list[str] | None = None) -> int:
    pipeline = _pipeline(argv)
    if pipeline != "fraud":
        rest = _without_pipeline(sys.argv[1:] if argv is None else argv)
        if pipeline == "recommendations":
            from benchmarks import soak_reco

            return soak_reco.main(rest)
        from benchmarks import soak_alerts

        return soak_alerts.main(rest)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--pipeline", choices=PIPELINES, default="fraud", help="the pipeline to soak (default: fraud)"
    )
    parser.add_argument("--days", type=float, default=120.0)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--merchants", type=int, default=4_000)
    parser.add_argument("--rate", type=float, default=400.0, help="transactions per second offered")
    parser.add_argument("--scenario", choices=SCENARIOS, default="handbook", help="the stream's simulator")
    add_run_arguments(parser)
    args = parser.parse_args(argv)

    config = stream_config(
        args.scenario, seed=0, n_cards=args.cards, n_merchants=args.merchants, days=args.days
    )
    events = list(generate_transaction_stream(config))
    transactions = [e for e in events if e.topic == "transactions"]
    n_labels = len(events) - len(transactions)
    speedup = config.days * DAY / (len(transactions) / args.rate)

    decisions_topic = "fraud-decisions"

    def drain(bootstrap: str, prefix: str, port: int, worker: subprocess.Popen) -> tuple[list[Any], float]:
        records = asyncio.run(_read_decisions(bootstrap, prefix + decisions_topic, len(transactions), 600))
        last_decision = time.monotonic()
        learned = wait_until_learned(port, worker, n_labels, 600)
        return records, time.monotonic() - last_decision if learned else float("nan")

    hooks = Hooks(
        topics=("transactions", "fraud-labels", decisions_topic),
        # The clock starts once the worker decides.
        first_output=lambda bootstrap, prefix, port: asyncio.run(
            _read_decisions(bootstrap, prefix + decisions_topic, 1, 120)
        ),
        probe=_learner_behind,
        drain=drain,
        read_after=lambda prefix: {
            "snapshots": f"{prefix}fraud-model-snapshots",
            "cards": changelog(prefix, "fraud-card-activity"),
        },
    )
    run = run_soak(events, speedup, hooks, hold=args.hold, keep_log=args.keep_log)
    records, catch_up = run.drained
    alive, fed, samples = run.alive, run.fed_seconds, run.samples
    snapshots, cards = run.topics["snapshots"], run.topics["cards"]

    decisions = [orjson.loads(record.value) for record in records]
    done = completion(len(transactions), decisions)
    stamps = sorted(record.timestamp for record in records)
    sustained = (len(records) - 1) / ((stamps[-1] - stamps[0]) / 1000.0)
    latencies = [d["latency_ms"] for d in decisions]
    tail_from = config.end - QUALITY_DAYS * DAY
    truth = {e.value["tx_id"]: bool(e.truth["is_fraud"]) for e in transactions if e.event_time >= tail_from}
    scored = {d["tx_id"]: d["score"] for d in decisions if d["tx_id"] in truth}
    y_true = [truth[tx_id] for tx_id in scored]
    y_score = list(scored.values())
    snapshot_sizes = [(r.timestamp, len(r.value or b"")) for r in snapshots]
    report = {
        "command": "make soak  # python -m benchmarks.soak "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "days": config.days,
        "labels": n_labels,
        "completion": done,
        "alive": alive,
        "fed_seconds": fed,
        "offered": args.rate,
        "sustained": sustained,
        "latency": {q: quantile(sorted(latencies), q) for q in (0.5, 0.95, 0.99)} | {"max": max(latencies)},
        "p99_by_tenth": by_tenths(latencies),
        "learner_catch_up_seconds": catch_up,
        "roc_auc": roc_auc(y_true, y_score),
        "average_precision": average_precision(y_true, y_score),
        "tail_transactions": len(y_true),
        "tail_frauds": sum(y_true),
        "snapshots": snapshot_sizes,
        "largest_card_record": max((len(r.value or b"") for r in cards), default=0),
        "samples": samples,
    }
    text = _markdown(report)
    publish_report(text, record=not args.no_write)
    return 0 if alive and done.lost == 0 and done.repeated_differently == 0 else 1


def _markdown(report: dict[str, Any]) -> str:
    done: Completion = report["completion"]
    lat = report["latency"]
    samples: list[Sample] = report["samples"]
    sizes = [size for _, size in report["snapshots"]]
    behind = [s.view for s in tenths(samples)]
    p99s = report["p99_by_tenth"]
    when = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"\n## Soak — {when}, commit {commit_of_checkout()}\n",
        f"Command: `{report['command'].strip()}`. One worker, {report['days']:g} days of traffic "
        f"({done.transactions} transactions, {report['labels']} labels 7 days late) fed in event-time "
        f"order at {report['offered']:.0f} tx/s.\n",
        "| measure | value |",
        "|---|---|",
        f"| worker alive at the end | {report['alive']} |",
        f"| decided / lost / repeated / repeated with another outcome "
        f"| {done.decided} / **{done.lost}** / {done.repeated} / **{done.repeated_differently}** |",
        f"| rate sustained (decisions' append times) | {report['sustained']:.0f} tx/s "
        f"(feed took {report['fed_seconds']:.0f} s) |",
        f"| decision latency | p50 {lat[0.5]:.1f} ms, p95 {lat[0.95]:.1f} ms, **p99 {lat[0.99]:.1f} ms**, "
        f"max {lat['max']:.0f} ms |",
        f"| p99 latency per tenth of the run (ms) | {', '.join(f'{v:.0f}' for v in p99s)} |",
        f"| learner caught up after the last decision | {report['learner_catch_up_seconds']:.1f} s |",
        f"| learner messages behind, per tenth of the run | {behind} |",
        f"| quality, last {QUALITY_DAYS:g} days "
        f"({report['tail_transactions']} tx, {report['tail_frauds']} frauds) "
        f"| ROC AUC **{report['roc_auc']:.3f}**, AP **{report['average_precision']:.3f}** |",
        f"| model snapshot size (bytes): max; along the run | **{max(sizes, default=0)}**; {tenths(sizes)} |",
        f"| worker RSS (MB) along the run | {rss_along(samples)} |",
        f"| worker memory (MB) along the run: RocksDB cache and memtables / malloc in use / malloc free "
        f"| {memory_along(samples)} |",
        f"| worker CPU while fed (events: transactions and labels) "
        f"| {cpu_along(samples, done.transactions + report['labels'])} |",
        f"| largest card-state record | {report['largest_card_record']} bytes |",
        "",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

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
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import SCENARIOS, generate_transaction_stream, stream_config
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks.fraud import (
    PARTITIONS,
    RESULTS,
    _get_json,
    _read_decisions,
    _worker_env,
    commit_of_checkout,
    wait_until_learned,
)
from benchmarks.in_process import quantile
from broker import LocalKafka
from models.metrics import average_precision, roc_auc

DAY = 86_400.0
SAMPLE_EVERY = 10.0  # seconds between RSS and learner-lag samples
QUALITY_DAYS = 14.0


@dataclass(frozen=True, slots=True)
class Sample:
    """What the worker looked like ``elapsed`` seconds into the run."""

    elapsed: float
    rss_mb: float
    learner_behind: int | None


@dataclass(frozen=True, slots=True)
class Completion:
    transactions: int
    decided: int
    repeated: int
    repeated_differently: int

    @property
    def lost(self) -> int:
        return self.transactions - self.decided


async def _records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (all partitions), read until three idle seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=1_000)
            idle = 0 if batches else idle + 1
            records.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def _resident_mb(pid: int) -> float:
    if not Path(f"/proc/{pid}/status").exists():
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


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


def _by_tenths(values: list[float]) -> list[float]:
    """The p99 of each tenth of ``values`` (in arrival order)."""
    tenth = max(1, len(values) // 10)
    return [
        quantile(sorted(values[i : i + tenth]), 0.99)
        for i in range(0, tenth * 10, tenth)
        if values[i : i + tenth]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--days", type=float, default=120.0)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--merchants", type=int, default=4_000)
    parser.add_argument("--rate", type=float, default=400.0, help="transactions per second offered")
    parser.add_argument("--scenario", choices=SCENARIOS, default="handbook", help="the stream's simulator")
    parser.add_argument("--keep-log", help="copy the worker's log to this file")
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep the worker up at the end (to inspect its views)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)

    config = stream_config(
        args.scenario, seed=0, n_cards=args.cards, n_merchants=args.merchants, days=args.days
    )
    events = list(generate_transaction_stream(config))
    transactions = [e for e in events if e.topic == "transactions"]
    n_labels = len(events) - len(transactions)
    speedup = config.days * DAY / (len(transactions) / args.rate)

    kafka = LocalKafka.from_env()
    started = kafka.start()
    samples: list[Sample] = []
    try:
        bootstrap = kafka.bootstrap
        prefix = f"soak{uuid.uuid4().hex[:6]}-"
        topics = [f"{prefix}{name}" for name in ("transactions", "fraud-labels", "fraud-decisions")]
        asyncio.run(ensure_topics(bootstrap, topics, PARTITIONS))
        with tempfile.TemporaryDirectory(prefix="eddy-soak-") as tmp:
            port = free_port()
            worker = start_worker(Path(tmp), web_port=port, env=_worker_env(bootstrap, prefix))
            # The clock starts once the worker decides: its start-up is not part of the soak.
            asyncio.run(produce_events(events[:1], bootstrap, topic_prefix=prefix))
            asyncio.run(_read_decisions(bootstrap, f"{prefix}fraud-decisions", 1, 120))
            feed = threading.Thread(
                target=asyncio.run,
                args=(produce_events(events[1:], bootstrap, topic_prefix=prefix, speedup=speedup),),
                daemon=True,
            )
            began = time.monotonic()
            feed.start()
            try:
                while feed.is_alive() and worker.poll() is None:
                    samples.append(
                        Sample(time.monotonic() - began, _resident_mb(worker.pid), _learner_behind(port))
                    )
                    feed.join(SAMPLE_EVERY)
                fed = time.monotonic() - began
                records = asyncio.run(
                    _read_decisions(bootstrap, f"{prefix}fraud-decisions", len(transactions), 600)
                )
                last_decision = time.monotonic()
                learned = wait_until_learned(port, worker, n_labels, 600)
                catch_up = time.monotonic() - last_decision if learned else float("nan")
                alive = worker.poll() is None
                samples.append(
                    Sample(time.monotonic() - began, _resident_mb(worker.pid), _learner_behind(port))
                )
                if args.hold:
                    print(f"worker web views on http://127.0.0.1:{port}/ for {args.hold:g} s", flush=True)
                    time.sleep(args.hold)
            finally:
                stop_worker(worker)
                if args.keep_log:
                    Path(args.keep_log).write_bytes((Path(tmp) / "worker.log").read_bytes())
        snapshots = asyncio.run(_records(bootstrap, f"{prefix}fraud-model-snapshots"))
        cards = asyncio.run(
            _records(bootstrap, f"eddy-bench-{prefix.rstrip('-')}-fraud-card-activity-changelog")
        )
    finally:
        if started:
            kafka.stop()

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
        "p99_by_tenth": _by_tenths(latencies),
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
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as out:
            out.write(text)
    return 0 if alive and done.lost == 0 and done.repeated_differently == 0 else 1


def _tenths(values: list[Any]) -> list[Any]:
    if not values:
        return []
    step = max(1, len(values) // 10)
    return [*values[::step][:10], values[-1]]


def _markdown(report: dict[str, Any]) -> str:
    done: Completion = report["completion"]
    lat = report["latency"]
    samples: list[Sample] = report["samples"]
    sizes = [size for _, size in report["snapshots"]]
    rss = [f"{s.elapsed:.0f} s: {s.rss_mb:.0f}" for s in _tenths(samples)]
    behind = [s.learner_behind for s in _tenths(samples)]
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
        f"| model snapshot size (bytes): max; along the run "
        f"| **{max(sizes, default=0)}**; {_tenths(sizes)} |",
        f"| worker RSS (MB) along the run | {'; '.join(rss)} |",
        f"| largest card-state record | {report['largest_card_record']} bytes |",
        "",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

"""Fraud pipeline benchmarks: feature/model cost in process, worker throughput, latency under load.

``make bench`` (``python -m benchmarks.fraud``) runs all four against the local
broker (started if needed) and appends the results to BENCHMARKS.md.

1. In process: median cost per transaction of each step (card features,
   merchant features, scoring, learning) over a simulated stream
   (``benchmarks.in_process``, which also times whole replays).
2. Throughput: a backlog of transactions (and their labels) is produced first;
   one worker process then works through it.  tx/s = decisions / (append time of
   the last decision - append time of the first).
3. Latency: a warm worker gets transactions at a fixed offered load; latency is
   each decision's ``latency_ms`` (transaction appended to Kafka -> decision made).
4. Floors (:mod:`benchmarks.floors`): stock Faust (aiokafka and confluent-kafka transports),
   a bare aiokafka consume -> produce loop and Quix Streams, each on a backlog of its own,
   with eddy's tx/s from (2) divided by each.  Quix Streams and confluent-kafka come from the
   ``bench`` extra (``make bench`` installs it); a floor that cannot run is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.simulation.producer import OutgoingEvent, delete_topics, ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks import floors
from benchmarks.in_process import in_process_costs, quantile
from broker import LocalKafka

RESULTS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
PARTITIONS = 8


async def _read_decisions(bootstrap: str, topic: str, expected: int, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def remove_run_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics of the run with ``prefix`` (its inputs, outputs and the worker's own): a
    broker kept between runs otherwise holds every run's partitions, and a worker's metadata
    refreshes decode all of them (seen: 12,059 partitions, a quarter of a worker's main thread)."""
    try:
        asyncio.run(delete_topics(bootstrap, [prefix, _app_id(prefix)]))
    except Exception as exc:  # the measurement stands; only the broker keeps more
        print(f"could not delete the run's topics ({prefix}*): {exc!r}", file=sys.stderr)


def _app_id(prefix: str) -> str:
    return f"eddy-bench-{prefix.rstrip('-')}"


def _worker_env(bootstrap: str, prefix: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "KAFKA_BROKER": f"kafka://{bootstrap}",
        "EDDY_TOPIC_PREFIX": prefix,
        "EDDY_APP_ID": _app_id(prefix),
        "EDDY_TOPIC_PARTITIONS": str(PARTITIONS),
    }


def _transactions(n: int, seed: int, with_labels: bool) -> list[Any]:
    """The first ``n`` transactions of a simulated stream (and their labels when asked)."""
    config = TransactionStreamConfig(seed=seed, n_cards=max(500, n // 30), days=90)
    events = []
    n_tx = 0
    for event in generate_transaction_stream(config):
        if event.topic == "transactions":
            if n_tx == n:
                break
            n_tx += 1
        elif not with_labels:
            continue
        events.append(event)
    if n_tx < n:
        raise ValueError(f"the simulated stream has only {n_tx} transactions, {n} asked")
    return events


def throughput(bootstrap: str, workdir: Path, n_transactions: int) -> dict[str, float]:
    """One worker on a backlog of ``n_transactions`` transactions and their labels."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    events = _transactions(n_transactions, seed=21, with_labels=True)
    topics = [f"{prefix}{name}" for name in ("transactions", "fraud-labels", "fraud-decisions")]
    asyncio.run(ensure_topics(bootstrap, topics, PARTITIONS))
    asyncio.run(produce_events(events, bootstrap, topic_prefix=prefix))
    port = free_port()
    worker = start_worker(workdir / "throughput", web_port=port, env=_worker_env(bootstrap, prefix))
    n_labels = sum(1 for e in events if e.topic == "fraud-labels")
    try:
        records = asyncio.run(
            _read_decisions(bootstrap, f"{prefix}fraud-decisions", n_transactions, timeout=1_800)
        )
        learned_at = time.time() if wait_until_learned(port, worker, n_labels, 600) else float("nan")
    finally:
        stop_worker(worker)
    stamps = sorted(record.timestamp for record in records)
    seconds = (stamps[-1] - stamps[0]) / 1000.0
    # Until the learner has applied the last label: what the whole pipeline sustains.
    end_to_end = learned_at - stamps[0] / 1000.0
    written = asyncio.run(_records_written(bootstrap, prefix))
    remove_run_topics(bootstrap, prefix)
    inputs = written.pop(f"{prefix}transactions", 0) + written.pop(f"{prefix}fraud-labels", 0)
    changelogs = sum(n for topic, n in written.items() if topic.endswith("-changelog"))
    return {
        "records_written_per_tx": sum(written.values()) / n_transactions,
        "changelog_records_per_tx": changelogs / n_transactions,
        "input_records": inputs,
        "transactions": n_transactions,
        "labels": n_labels,
        "decisions": len(records),
        "seconds": seconds,
        "tx_per_second": (len(records) - 1) / seconds if seconds > 0 else float("nan"),
        "end_to_end_seconds": end_to_end,
        "end_to_end_tx_per_second": n_transactions / end_to_end,
    }


def _get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return orjson.loads(response.read())


def wait_until_learned(port: int, worker: subprocess.Popen, labels: int, timeout: float) -> bool:
    """Whether the worker's learner applied every training record (``labels`` labels) in ``timeout`` s.

    True once the learner is 0 messages behind the training log, has counted ``labels``
    labels and the newest snapshot holds all of it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            state = _get_json(port, "/fraud/state/")["learner"]
            model = _get_json(port, "/fraud/model/")
        except OSError:
            state, model = {}, {}
        caught_up = state.get("messages_behind") == 0 and model.get("counts", {}).get("labelled", 0) >= labels
        if caught_up and model.get("training_offset") == state.get("training_offset"):
            return True
        time.sleep(0.5)
    return False


async def _records_written(bootstrap: str, prefix: str) -> dict[str, int]:
    """Records in every topic of one run (its own topics and its app's changelogs), by topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        topics = [t for t in await admin.list_topics() if prefix in t and "__assignor" not in t]
        partitions = [
            TopicPartition(description["topic"], p["partition"])
            for description in await admin.describe_topics(topics)
            for p in description["partitions"]
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    written: dict[str, int] = {}
    for tp, end in ends.items():
        written[tp.topic] = written.get(tp.topic, 0) + end
    return written


def latency(bootstrap: str, workdir: Path, rate: float, seconds: float) -> dict[str, float]:
    """Decision latency percentiles of a warm worker at ``rate`` transactions per second."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    n = int(rate * seconds)
    warmup = _transactions(2_000, seed=31, with_labels=False)
    measured = _transactions(n + 2_000, seed=32, with_labels=False)[2_000:]
    topics = [f"{prefix}{name}" for name in ("transactions", "fraud-labels", "fraud-decisions")]
    asyncio.run(ensure_topics(bootstrap, topics, PARTITIONS))
    port = free_port()
    worker = start_worker(workdir / f"latency-{rate:.0f}", web_port=port, env=_worker_env(bootstrap, prefix))
    try:
        asyncio.run(produce_events(warmup, bootstrap, topic_prefix=prefix))
        asyncio.run(_read_decisions(bootstrap, f"{prefix}fraud-decisions", len(warmup), timeout=300))
        gc_before = _get_json(port, "/worker/")["gc"]
        renamed = [OutgoingEvent(e.topic, e.key, e.value) for e in measured]
        asyncio.run(produce_events(renamed, bootstrap, topic_prefix=prefix, rate=rate, linger_ms=0))
        records = asyncio.run(
            _read_decisions(bootstrap, f"{prefix}fraud-decisions", len(warmup) + n, timeout=300)
        )
        process = _get_json(port, "/worker/")
    finally:
        stop_worker(worker)
        remove_run_topics(bootstrap, prefix)
    # Decisions come back from all partitions interleaved: pick the measured ones by tx_id.
    measured_ids = {e.value["tx_id"] for e in measured}
    decisions = (orjson.loads(record.value) for record in records)
    latencies = [d["latency_ms"] for d in decisions if d["tx_id"] in measured_ids]
    latencies = sorted(latencies)
    return {
        "offered_tx_per_second": rate,
        "transactions": len(latencies),
        "p50_ms": quantile(latencies, 0.50),
        "p95_ms": quantile(latencies, 0.95),
        "p99_ms": quantile(latencies, 0.99),
        "max_ms": latencies[-1],
        # Full garbage collections stop the event loop: how many ran while the measured
        # transactions flowed, and how long the longest of the worker's last 1,000 took.
        "full_gcs": process["gc"]["collections"]["2"] - gc_before["collections"]["2"],
        "full_gc_max_ms": process["gc"]["pauses"]["2"]["max_ms"],
        "resident_mb": process["resident_mb"],
    }


def report(text: str, record: bool) -> None:
    """Print a benchmark's markdown and, when ``record``, append it to BENCHMARKS.md."""
    print(text)
    if record:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(text)


def commit_of_checkout() -> str:
    """The checked-out commit, marked when the tree has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return (
        f"{commit} + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else commit
    )


def _markdown(
    command: str,
    costs: dict,
    through: dict,
    lats: list[dict],
    floor_results: list[floors.FloorResult],
    floor_events: int,
) -> str:
    when = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    rows = [
        f"\n## Fraud pipeline — {when}, commit {commit_of_checkout()}\n",
        f"Command: `{command}`; machine: {cpu} cores, Python {platform.python_version()}, "
        "shared and noisy (one run; medians and ratios within it).\n",
        "| measure | value |",
        "|---|---|",
        f"| in-process cost per transaction, median (features + score + traffic sample) "
        f"| {costs['transaction_us_median']:.0f} µs (p99 {costs['transaction_us_p99']:.0f} µs) |",
        f"| in-process cost per label, median (join + learn + metrics) | {costs['label_us_median']:.0f} µs |",
        f"| model score, median | {costs['score_us_median']:.0f} µs |",
        f"| model learn, median | {costs['learn_us_median']:.0f} µs |",
        f"| one worker, backlog of {through['transactions']} tx + {through['labels']} labels: decisions "
        f"| **{through['tx_per_second']:.0f} tx/s** ({through['seconds']:.1f} s, first to last decision) |",
        f"| same run, until the learner has applied the last label (the whole pipeline) "
        f"| **{through['end_to_end_tx_per_second']:.0f} tx/s** ({through['end_to_end_seconds']:.1f} s) |",
        f"| Kafka records the worker wrote per transaction in that run (internal hops, decisions, "
        f"training, changelogs) | {through['records_written_per_tx']:.1f} "
        f"(of which table changelog {through['changelog_records_per_tx']:.1f}) |",
        *(
            f"| latency at {lat['offered_tx_per_second']:.0f} tx/s offered, {lat['transactions']} tx "
            f"| p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, **p99 {lat['p99_ms']:.1f} ms**, "
            f"max {lat['max_ms']:.1f} ms; {lat['full_gcs']} full garbage collections meanwhile "
            f"(longest pause of the worker's {lat['full_gc_max_ms']} ms); RSS {lat['resident_mb']} MB |"
            for lat in lats
        ),
        "",
        *floors.markdown(floor_results, through["tx_per_second"], floor_events),
        "",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--transactions", type=int, default=60_000, help="backlog for the throughput run")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[100, 300, 1_000, 2_000],
        help="offered tx/s of the latency runs (the fraud issue's bar is at 1,000)",
    )
    parser.add_argument("--seconds", type=float, default=30, help="length of the latency run")
    parser.add_argument("--floor-events", type=int, default=30_000, help="backlog of each floor run")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)

    kafka = LocalKafka.from_env()
    started = kafka.start()
    try:
        costs = in_process_costs(50_000)
        print("in process:", costs, flush=True)
        with tempfile.TemporaryDirectory(prefix="eddy-bench-") as tmp:
            through = throughput(kafka.bootstrap, Path(tmp), args.transactions)
            print("throughput:", through, flush=True)
            lats = [latency(kafka.bootstrap, Path(tmp), rate, args.seconds) for rate in args.rates]
            print("latency:", lats, flush=True)
        floor_results = floors.measure_all(kafka.bootstrap, args.floor_events)
    finally:
        if started:
            kafka.stop()
    command = "make bench  # python -m benchmarks.fraud " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    report = _markdown(command.strip(), costs, through, lats, floor_results, args.floor_events)
    print(report)
    if not args.no_write:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmarks\n\nResults of `make bench`, newest last.\n")
        with RESULTS.open("a") as out:
            out.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

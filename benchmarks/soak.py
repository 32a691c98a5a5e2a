"""Soak: months of simulated traffic through one worker; state and snapshots must stay bounded.

``python -m benchmarks.soak`` produces a long stream (default 120 days, 2,000 cards, 4,000
merchants, every label 7 days late) to a fresh set of topics, runs one worker through it, and
prints what would grow if anything were unbounded: the model snapshot's size over time, the
largest card-state record, the worker's resident memory, and whether the worker is still alive.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks.fraud import PARTITIONS, _read_decisions, _worker_env
from broker import LocalKafka


async def _record_sizes(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """``(offset, value bytes)`` of every record of ``topic`` (all partitions)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    await consumer.start()
    sizes: list[tuple[int, int]] = []
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=1_000)
            idle = 0 if batches else idle + 1
            sizes.extend((r.offset, len(r.value or b"")) for records in batches.values() for r in records)
    finally:
        await consumer.stop()
    return sizes


def _resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--days", type=float, default=120.0)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--merchants", type=int, default=4_000)
    args = parser.parse_args(argv)
    kafka = LocalKafka.from_env()
    started = kafka.start()
    try:
        bootstrap = kafka.bootstrap
        prefix = f"soak{uuid.uuid4().hex[:6]}-"
        config = TransactionStreamConfig(
            seed=0, n_cards=args.cards, n_merchants=args.merchants, days=args.days
        )
        events = list(generate_transaction_stream(config))
        n_tx = sum(1 for e in events if e.topic == "transactions")
        topics = [f"{prefix}{name}" for name in ("transactions", "fraud-labels", "fraud-decisions")]
        asyncio.run(ensure_topics(bootstrap, topics, PARTITIONS))
        asyncio.run(produce_events(events, bootstrap, topic_prefix=prefix))
        with tempfile.TemporaryDirectory(prefix="eddy-soak-") as tmp:
            worker = start_worker(Path(tmp), web_port=free_port(), env=_worker_env(bootstrap, prefix))
            began = time.monotonic()
            try:
                decisions = asyncio.run(_read_decisions(bootstrap, f"{prefix}fraud-decisions", n_tx, 3_600))
                seconds = time.monotonic() - began
                time.sleep(8)  # the last snapshot
                alive = worker.poll() is None
                rss = _resident_mb(worker.pid) if alive else float("nan")
            finally:
                stop_worker(worker)
        snapshots = asyncio.run(_record_sizes(bootstrap, f"{prefix}fraud-model-snapshots"))
        cards = asyncio.run(
            _record_sizes(bootstrap, f"eddy-bench-{prefix.rstrip('-')}-fraud-card-activity-changelog")
        )
    finally:
        if started:
            kafka.stop()
    print(f"soak: {args.days:g} days, {n_tx} transactions and their labels, one worker, {seconds:.0f} s")
    print(
        f"decisions: {len({r.key for r in decisions})} of {n_tx}; "
        f"worker alive at the end: {alive}; RSS {rss:.0f} MB"
    )
    if snapshots:
        tenth = max(1, len(snapshots) // 10)
        sampled = [size for _, size in snapshots[::tenth]] + [snapshots[-1][1]]
        print(f"model snapshots: {len(snapshots)}; sizes along the run (bytes): {sampled}")
    print(f"largest card-state record: {max((size for _, size in cards), default=0)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recovery from the changelog and failover time, with and without standby replicas.

``python -m benchmarks.recovery`` runs against the local broker (started if needed) and
appends the results to BENCHMARKS.md.

1. Recovery: the card table's changelog is filled with ``n`` cards (each with a few
   transactions, as the decision stage writes them), then a worker with an empty disk
   starts.  The time is from the worker's start to its log's "Worker ready" (faust logs it
   once every active table partition is restored), minus the same for an empty changelog;
   a card is then read back through the web view to check it was restored.
2. Failover: on a changelog of ``n`` cards a first worker starts and takes every partition,
   a second joins and takes half of them; then the first is killed with SIGKILL, so the
   survivor takes over partitions it never held (unless it kept standby copies of them).
   The time is from the kill to the first moment the survivor serves the last card written
   to one of the dead worker's partitions (so that partition is restored).  It includes the
   session timeout (``EDDY_SESSION_TIMEOUT_S``) after which the group notices a dead member;
   the survivor's own recovery is the rest (with ``EDDY_STANDBY_REPLICAS=1`` it already
   holds a copy).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.contracts import Transaction
from app.simulation.producer import ensure_topics
from app.stages.outputs import key_partition
from app.worker_process import free_port, start_worker, stop_worker
from benchmarks.fraud import PARTITIONS, _worker_env, commit_of_checkout, remove_run_topics, report
from broker import local_kafka
from models.fraud_steps import count_in_card
from tables.card_state import CardState

_READY = re.compile(rb"^\[(?P<stamp>[0-9-]+ [0-9:,]+)\] .*Worker ready", re.MULTILINE)


def _card(i: int) -> bytes:
    """A card's table value after 5 transactions (about 400 bytes), as the decision stage writes it."""
    card = CardState.decode(None)
    for k in range(5):
        tx = Transaction(
            f"t{i}-{k}", f"card-{i:07d}", f"m{(i + k) % 997}", 10.0 + k, 1_767_225_600.0 + 3_600 * k
        )
        count_in_card(card, tx)
    return card.encode()


async def _fill_changelog(bootstrap: str, topic: str, n: int) -> None:
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        template = _card(0)
        pending = []
        for i in range(n):
            key = f"card-{i:07d}".encode()
            value = template if i else _card(0)
            pending.append(
                await producer.send(topic, value, key=key, partition=key_partition(key, PARTITIONS))
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _changelog(prefix: str) -> str:
    return f"eddy-bench-{prefix.rstrip('-')}-fraud-card-activity-changelog"


def _ready_after(log: Path, started_wall: float, after: float = 0.0, timeout: float = 1_800) -> float:
    """Seconds from ``started_wall`` to the first "Worker ready" logged at or after ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for match in _READY.finditer(log.read_bytes()):
            stamp = datetime.strptime(match["stamp"].decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after:
                return stamp - started_wall
        time.sleep(0.1)
    raise TimeoutError(f"no 'Worker ready' in {log}")


def _serves(port: int, card: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fraud/cards/{card}/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def recovery(bootstrap: str, workdir: Path, n: int) -> dict[str, Any]:
    prefix = f"rec{uuid.uuid4().hex[:6]}-"
    started_filling = time.monotonic()
    if n:
        asyncio.run(_fill_changelog(bootstrap, _changelog(prefix), n))
    filled = time.monotonic() - started_filling
    port = free_port()
    started = time.time()
    worker = start_worker(workdir / f"recovery-{n}", web_port=port, env=_worker_env(bootstrap, prefix))
    try:
        seconds = _ready_after(workdir / f"recovery-{n}" / "worker.log", started)
        restored = n == 0 or _serves(port, f"card-{n - 1:07d}")
    finally:
        stop_worker(worker)
        remove_run_topics(bootstrap, prefix)
    return {"keys": n, "ready_seconds": seconds, "restored": restored, "fill_seconds": filled}


def failover(bootstrap: str, workdir: Path, n: int, standby_replicas: int) -> dict[str, Any]:
    prefix = f"fo{uuid.uuid4().hex[:6]}-"
    asyncio.run(_fill_changelog(bootstrap, _changelog(prefix), n))
    env: Mapping[str, str] = {
        **_worker_env(bootstrap, prefix),
        "EDDY_STANDBY_REPLICAS": str(standby_replicas),
    }
    ports = [free_port(), free_port()]
    dirs = [workdir / f"failover-{n}-{standby_replicas}-{i}" for i in range(2)]
    workers = []
    try:
        # The first worker takes every partition; the second then takes half of them.  The
        # first is killed: the survivor never owned its partitions (a cold takeover without a
        # standby), unless it kept a standby copy of them.
        for d, port in zip(dirs, ports, strict=True):
            started = time.time()
            workers.append(start_worker(d, web_port=port, env=env))
            _ready_after(d / "worker.log", started)
        _ready_after(dirs[0] / "worker.log", started, after=started)  # the first, after the rebalance
        time.sleep(10.0)  # standbys catching up
        # The last card written to one of its partitions: served once that partition is restored.
        victim_card = next(f"card-{i:07d}" for i in reversed(range(n)) if _owns(ports[0], f"card-{i:07d}"))
        assert not _owns(ports[1], victim_card)
        killed_at = time.time()
        stop_worker(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 600
        while not _serves(ports[1], victim_card):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the survivor never served {victim_card}")
            time.sleep(0.05)
        served_after = time.time() - killed_at
    finally:
        for worker in workers:
            stop_worker(worker)
        remove_run_topics(bootstrap, prefix)
    return {"keys": n, "standby_replicas": standby_replicas, "served_after_seconds": served_after}


def _owns(port: int, card: str) -> bool:
    """Whether the worker on ``port`` owns ``card``'s partition (its ``/fraud/state/`` says)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/fraud/state/", timeout=5) as response:
        state = orjson.loads(response.read())
    return key_partition(card.encode(), PARTITIONS) in state["card_partitions"]


def _markdown(recoveries: list[dict[str, Any]], failovers: list[dict[str, Any]], command: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = next((r["ready_seconds"] for r in recoveries if r["keys"] == 0), 0.0)
    lines = [
        f"\n## Recovery and failover — {stamp}, commit {commit_of_checkout()}\n",
        f"Command: `{command}`. {PARTITIONS} partitions, local broker on this machine, cards of "
        "5 transactions (about 400 bytes each) in the card table's changelog.\n",
        "| cards in the changelog | worker ready after (s) | of which recovery (s) | card served after |",
        "|---|---|---|---|",
    ]
    for r in recoveries:
        lines.append(
            f"| {r['keys']:,} | {r['ready_seconds']:.1f} | {r['ready_seconds'] - base:.1f} | "
            f"{'yes' if r['restored'] else 'NO'} |"
        )
    lines += [
        "",
        "| cards | standby replicas | a dead worker's card served again after (s) |",
        "|---|---|---|",
    ]
    for f in failovers:
        lines.append(f"| {f['keys']:,} | {f['standby_replicas']} | {f['served_after_seconds']:.1f} |")
    lines.append(
        "\nRecovery: from the worker's start (empty disk) to faust's \"Worker ready\", the start-up "
        "of an empty changelog subtracted. Failover: from SIGKILL of one of two workers to the "
        "survivor serving a card of the dead worker's partitions; it includes the session timeout.\n"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="*", default=[0, 10_000, 100_000, 1_000_000])
    parser.add_argument("--failover-keys", type=int, default=100_000)
    parser.add_argument("--no-record", action="store_true", help="print, do not append to BENCHMARKS.md")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    recoveries, failovers = [], []
    with local_kafka() as bootstrap, tempfile.TemporaryDirectory(prefix="eddy-recovery-") as tmp:
        for n in args.keys:
            recoveries.append(recovery(bootstrap, Path(tmp), n))
            print(recoveries[-1], flush=True)
        for standby in (0, 1):
            failovers.append(failover(bootstrap, Path(tmp), args.failover_keys, standby))
            print(failovers[-1], flush=True)
    command = "python -m benchmarks.recovery" + (f" {' '.join(argv)}" if argv else "")
    report(_markdown(recoveries, failovers, command), record=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The simulate, tail and replay commands against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import orjson

from app.simulation.streams import build_stream
from app.worker_process import PROJECT_ROOT


def _faust(bootstrap: str, prefix: str, *args: str) -> str:
    env = {**os.environ, "KAFKA_BROKER": f"kafka://{bootstrap}", "EDDY_TOPIC_PREFIX": prefix,
           "EDDY_TOPIC_PARTITIONS": "3"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "app", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _per_key(lines: list[dict]) -> dict[tuple[str, str], list]:
    sequences: dict[tuple[str, str], list] = defaultdict(list)
    for line in lines:
        sequences[(line["topic"].split("-", 1)[1], line["key"])].append(line["value"])
    return sequences


def _tail(bootstrap: str, prefix: str, topic: str, path: Path, limit: int) -> list[dict]:
    _faust(bootstrap, prefix, "tail", topic, "--output", str(path), "--limit", str(limit),
           "--idle-timeout", "10")  # fmt: skip
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def test_simulate_produces_the_generated_stream_and_replay_round_trips_it(kafka_bootstrap, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:6]}-"
    _faust(kafka_bootstrap, prefix, "simulate", "transactions", "--size", "40", "--days", "4",
           "--seed", "3", "--no-progress")  # fmt: skip
    events, _, total = build_stream("transactions", seed=3, size=40, days=4.0)
    generated = [{"topic": f"x-{e.topic}", "key": e.key, "value": e.value} for e in events]
    expected = _per_key(generated)
    n_tx = sum(1 for line in generated if line["topic"] == "x-transactions")

    transactions = _tail(kafka_bootstrap, prefix, "transactions", tmp_path / "tx.jsonl", n_tx)
    labels = _tail(kafka_bootstrap, prefix, "fraud-labels", tmp_path / "labels.jsonl", total - n_tx)
    assert len(transactions) + len(labels) == total
    # Exactly the generated events, in generated order within each key.
    assert _per_key(transactions + labels) == expected

    copy = f"r{uuid.uuid4().hex[:6]}-"
    both = tmp_path / "both.jsonl"
    both.write_text("".join(
        orjson.dumps({**line, "topic": line["topic"].removeprefix(prefix)}).decode() + "\n"
        for line in transactions + labels
    ))  # fmt: skip
    assert "replayed" in _faust(kafka_bootstrap, copy, "replay", str(both), "--no-progress")
    replayed = _tail(kafka_bootstrap, copy, "transactions", tmp_path / "again.jsonl", n_tx)
    assert _per_key(replayed) == _per_key(transactions)

"""Per-event cost floor of a Faust agent on this machine: what any Faust pipeline pays per record."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from app.simulation.producer import OutgoingEvent, ensure_topics, produce_events
from app.worker_process import PROJECT_ROOT, free_port

MODES = {
    "noop": "nothing (consume only)",
    "send": "one produce",
    "table": "one RocksDB table get + set (changelogged)",
    "both": "table get + set and one produce",
}
PAYLOAD = {"tx_id": "tx-000000001", "card_id": "card-0001", "merchant_id": "m-0001", "amount": 12.5}


def measure(bootstrap: str, mode: str, events: int, workdir: Path) -> float:
    """Events per second of one worker whose agent does ``mode`` per event on a backlog."""
    run = uuid.uuid4().hex[:8]
    backlog = (OutgoingEvent(f"floor-{run}-source", f"card-{i % 5_000}", PAYLOAD) for i in range(events))
    # The sink has no consumer, so no worker creates it; the broker does not auto-create topics.
    asyncio.run(ensure_topics(bootstrap, [f"floor-{run}-source", f"floor-{run}-sink"], 8))
    asyncio.run(produce_events(backlog, bootstrap))
    env = {**os.environ, "FLOOR_RUN": run, "FLOOR_MODE": mode, "FLOOR_EVENTS": str(events),
           "KAFKA_BROKER": f"kafka://{bootstrap}"}  # fmt: skip
    command = [sys.executable, "-m", "faust", "-A", "benchmarks.faust_floor_app", "--datadir",
               str(workdir / run), "worker", "-l", "info", "--web-port", str(free_port())]  # fmt: skip
    with subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as worker:  # fmt: skip
        try:
            for line in worker.stdout:
                found = re.search(r"FLOOR_RESULT (\d+)", line)
                if found:
                    return float(found.group(1))
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    raise RuntimeError(f"the {mode} floor worker ended without a result")


def measure_all(bootstrap: str, events: int = 30_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="eddy-floor-") as tmp:
        return {label: measure(bootstrap, mode, events, Path(tmp)) for mode, label in MODES.items()}

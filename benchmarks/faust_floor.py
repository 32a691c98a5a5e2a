"""Per-event cost floor of a Faust agent on this machine: what any Faust pipeline pays per record.

``measure(bootstrap, mode, events)`` runs ``benchmarks.faust_floor_app`` in a worker process of
its own on a fresh backlog (:func:`benchmarks.floors.common.produce_backlog`).  ``transport``
picks faust's Kafka driver: ``kafka`` (aiokafka, what eddy runs) or ``confluent``
(``faust.transport.drivers.confluent``, needs the ``confluent-kafka`` package: ``.[bench]``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable

from app.worker_process import PROJECT_ROOT, free_port
from benchmarks.floors.common import MODES, produce_backlog

__all__ = ["MODES", "FloorWorkerFailed", "first_error", "measure"]

_ERROR = re.compile(r"\b[\w.]*(?:Error|Exception|Interrupt)\b.*")
_LOG_PREFIX = re.compile(r"^\[[^\]]*\] \[\d+\] \[\w+\] ")


class FloorWorkerFailed(RuntimeError):
    """The floor worker ended, or was stopped after its timeout, without a result."""


def measure(
    bootstrap: str, mode: str, events: int, *, transport: str = "kafka", timeout: float = 600
) -> float:
    """Events per second of one worker whose agent does ``mode`` per event on a backlog."""
    backlog = produce_backlog(bootstrap, events)
    env = {**os.environ, "FLOOR_RUN": backlog.run, "FLOOR_MODE": mode, "FLOOR_EVENTS": str(events),
           "KAFKA_BROKER": f"{transport}://{bootstrap}"}  # fmt: skip
    tail: deque[str] = deque(maxlen=200)
    stalled: list[str] = []  # the last log line when the watchdog stopped the worker

    def stop_stalled_worker() -> None:
        stalled.append(tail[-1] if tail else "no output")
        worker.terminate()

    with tempfile.TemporaryDirectory(prefix="eddy-floor-") as datadir:
        command = [sys.executable, "-m", "faust", "-A", "benchmarks.faust_floor_app", "--datadir",
                   datadir, "worker", "-l", "info", "--web-port", str(free_port())]  # fmt: skip
        with subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as worker:  # fmt: skip
            watchdog = threading.Timer(timeout, stop_stalled_worker)
            watchdog.start()
            try:
                for line in worker.stdout:
                    found = re.search(r"FLOOR_RESULT (\d+)", line)
                    if found:
                        return float(found.group(1))
                    tail.append(_LOG_PREFIX.sub("", line.strip()))
            finally:
                watchdog.cancel()
                worker.terminate()
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
    if stalled:
        why = f"no result within {timeout:.0f} s, stopped; its last log line then: {stalled[0]}"
    else:
        why = f"ended (exit {worker.returncode}) without a result: {first_error(tail)}"
    raise FloorWorkerFailed(f"faust worker, {transport}:// transport, {mode} mode: {why}")


def first_error(lines: Iterable[str]) -> str:
    """The first line naming an exception in a worker's output, else its last line."""
    lines = list(lines)
    for line in lines:
        found = _ERROR.search(line)
        if found:
            return found.group(0).strip()
    return lines[-1].strip() if lines else "no output"

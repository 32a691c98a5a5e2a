"""Start and stop ``faust -A app worker`` subprocesses (``make run``, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(
    workdir: Path,
    *,
    web_port: int,
    web_host: str = "127.0.0.1",
    log_level: str = "info",
    loop: str = "aio",
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """A worker with its state in ``workdir/data`` and its log in ``workdir/worker.log``.

    It runs in its own process group, so a Ctrl-C meant for the caller does not
    reach it: the caller stops it with :func:`stop_worker`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "faust", "-A", "app", "--loop", loop, "--datadir", str(workdir / "data"),
        "worker", "-l", log_level, "--web-host", web_host, "--web-port", str(web_port),
    ]  # fmt: skip
    with open(workdir / "worker.log", "ab") as log:
        return subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(worker: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop the worker's process group with ``sig``; SIGKILL it if it outlives ``timeout``."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, sig)
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

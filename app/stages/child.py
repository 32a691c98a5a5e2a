"""A worker's child Python process on the machine's other core, spoken to through two pipes.

A worker's event loop runs on one core (Python's interpreter lock).  Work that needs
nothing of the loop - ranking a flush's recommendations, a model's learner - can run
in a child process instead, while the worker goes on with the next records.
:class:`ChildProcess` is the worker's side of such a child: it starts
``python -m app.stages.child ROLE TARGET`` (which imports nothing of the worker's
app), sends it messages and reads its answers, both as framed pickles, and notices
when the child is gone.  What the messages mean is the role's:
:class:`~app.stages.helper.HelperProcess` (``compute``) and
:class:`~app.stages.learner_process.LearnerProcess` (``learn``).

The worker's side never blocks on the pipes while records flow: what it sends waits in a
buffer until the pipe takes it, and answers are read as they come, both from the event
loop (no thread: a reader thread would wait for the interpreter lock behind the busy
event loop at every answer).  Only :meth:`ChildProcess.wait_until` blocks, and it keeps
both pipes moving while it does.

The child is the worker's: it exits when its requests pipe closes (the worker stopped
or died).  A child that dies, answers what cannot be read, or is given up by its user is
lost; a new one starts when next needed, at most once every ``restart_interval``
seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from app.runtime import resident_mb

logger = logging.getLogger(__name__)

# The child imports its modules from the project (as the worker does).
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Each message: its length, then the pickle (the worker's own child: nothing else writes to the pipes).
_FRAME = struct.Struct(">I")


class ChildProcess:
    """The worker's side of one child process; see the module docstring.

    Subclasses give the child's ``role`` and handle each answer (:meth:`_answered`) and the
    loss of the child (:meth:`_lost`).

    Parameters
    ----------
    target
        What the child runs, ``"module:function"``, passed to the role's server.
    restart_interval
        Seconds between starts of a child.
    """

    role = ""

    def __init__(self, target: str, *, restart_interval: float = 10.0) -> None:
        self.target = target
        self.restart_interval = restart_interval
        self.counts: dict[str, int] = {"starts": 0}
        self._process: subprocess.Popen | None = None
        self._to_child = -1
        self._from_child = -1
        self._outbox = bytearray()
        self._inbox = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_start = -float("inf")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Stop the child (it exits when its requests end)."""
        self._lose_child()

    def report(self) -> dict[str, Any]:
        """The counts, whether a child runs, and its resident memory (MB)."""
        process = self._process
        return {
            **self.counts,
            "running": self.running,
            "pid": None if process is None else process.pid,
            "rss_mb": None if process is None else resident_mb(process.pid),
        }

    # --- for subclasses ----------------------------------------------------------------------

    def _answered(self, answer: Any) -> None:
        """One answer from the child."""
        raise NotImplementedError

    def _lost(self) -> None:
        """The child is gone: what it had not answered never will be."""

    def _ready(self) -> bool:
        """Whether a child runs now, starting one if it may."""
        if self.running:
            return True
        if self._process is not None:
            logger.warning("%s child %s exited (%s)", self.role, self.target, self._process.returncode)
            self._lose_child()
        now = time.monotonic()
        if now - self._last_start < self.restart_interval:
            return False
        self._last_start = now
        try:
            self._start()
        except OSError:
            logger.exception("%s child %s: could not start", self.role, self.target)
            return False
        return True

    def _send(self, message: Any) -> None:
        """Queue ``message`` for the child and write what the pipe takes; raises if it cannot
        be pickled (nothing is queued then)."""
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox += _FRAME.pack(len(payload))
        self._outbox += payload
        self._write()

    def wait_until(self, done: Callable[[], bool], patience: float) -> bool:
        """Move both pipes (blocking) until ``done()``; give the child up after ``patience``
        seconds.  Whether ``done()`` holds at the end."""
        deadline = time.monotonic() + patience
        while not done() and self._process is not None:
            left = deadline - time.monotonic()
            if left <= 0.0:
                logger.warning(
                    "%s child %s: no answer in %.1f s; stopping it", self.role, self.target, patience
                )
                self._lose_child()
                break
            writing = [self._to_child] if self._outbox else []
            readable, writable, _ = select.select([self._from_child], writing, [], min(left, 0.5))
            if writable:
                self._write()
            if readable:
                self._read()
        return done()

    def _lose_child(self) -> None:
        process, self._process = self._process, None
        for fd in (self._to_child, self._from_child):
            if fd < 0:
                continue
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            os.close(fd)  # the child exits at the end of its requests
        self._to_child = self._from_child = -1
        self._lost()
        if process is None:
            return
        try:
            process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # --- the pipes -----------------------------------------------------------------------------

    def _start(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.stages.child", self.role, self.target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_PROJECT_ROOT,
        )
        assert process.stdin is not None and process.stdout is not None
        # The descriptors are this object's: the file objects let theirs go.
        self._to_child, self._from_child = os.dup(process.stdin.fileno()), os.dup(process.stdout.fileno())
        process.stdin.close()
        process.stdout.close()
        for fd in (self._to_child, self._from_child):
            os.set_blocking(fd, False)
        self._process = process
        self._outbox.clear()
        self._inbox.clear()
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # no event loop: wait_until() moves the pipes
        if self._loop is not None:
            self._loop.add_reader(self._from_child, self._read)
        self.counts["starts"] += 1
        logger.info("%s child %s started (pid %d)", self.role, self.target, process.pid)

    def _write(self) -> None:
        """Write what the pipe takes now; wait for the rest on the event loop, if there is one."""
        try:
            written = os.write(self._to_child, self._outbox)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the child is gone
            logger.warning("%s child %s: sending failed (%r)", self.role, self.target, exc)
            self._lose_child()
            return
        del self._outbox[:written]
        if self._loop is not None:
            if self._outbox:
                self._loop.add_writer(self._to_child, self._write)
            else:
                self._loop.remove_writer(self._to_child)

    def _read(self) -> None:
        """Take every answer that has arrived."""
        while True:
            try:
                data = os.read(self._from_child, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:  # the child is gone: what it had not answered is lost
                self._lose_child()
                return
            self._inbox += data
        inbox = self._inbox
        while len(inbox) >= _FRAME.size:
            (size,) = _FRAME.unpack_from(inbox)
            if len(inbox) < _FRAME.size + size:
                break
            try:
                answer = pickle.loads(inbox[_FRAME.size : _FRAME.size + size])
            except Exception:  # not what the child writes: nothing after it can be trusted
                logger.exception("%s child %s: an answer could not be read", self.role, self.target)
                self._lose_child()
                return
            del inbox[: _FRAME.size + size]
            self._answered(answer)


# --- the child's side ----------------------------------------------------------------------


def named(name: str) -> Any:
    """The function ``"package.module:function"`` names."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Requests:
    """The child's end of the pipes: framed pickles in, framed pickles out."""

    def __init__(self, requests: BinaryIO, answers: BinaryIO) -> None:
        self._requests = requests
        self._answers = answers

    def __iter__(self) -> Any:
        """Each message the worker sends, until it closes the pipe."""
        while True:
            header = self._requests.read(_FRAME.size)
            if len(header) < _FRAME.size:
                return  # the worker closed the pipe
            (size,) = _FRAME.unpack(header)
            yield pickle.loads(self._requests.read(size))

    def answer(self, answer: Any) -> None:
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        self._answers.write(_FRAME.pack(len(payload)) + payload)
        self._answers.flush()


def _serve(role: str, target: str, requests: Requests) -> None:
    # Imported here: each role's server imports what only its child needs.
    if role == "compute":
        from app.stages.helper import serve
    elif role == "learn":
        from app.stages.learner_process import serve
    else:
        raise SystemExit(f"unknown child role {role!r}")
    serve(target, requests)


def _main(role: str, target: str) -> None:
    # A Ctrl-C reaches the worker's whole process group: the worker stops, and the child with
    # the end of its requests, not with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the child prints goes to the log, not into the answers
    _serve(role, target, Requests(sys.stdin.buffer, answers))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])

"""A pure batch computation run in a child process, on the machine's other core.

A worker's event loop runs on one core (Python's interpreter lock), and a stage's flush
may spend a large part of it on a pure computation of its records' outputs (ranking a
flush's recommendations).  :class:`HelperProcess` runs such a computation in a child
Python process: the stage submits its requests in chunks as records arrive, the child
computes them while the worker goes on with the next records, and the flush collects
the results, waiting only for the last chunk.

The computation is ``function(context, items) -> list[bytes | str]``, named as
``"module:function"`` and imported by the child (``python -m app.stages.helper <name>``),
which imports nothing of the worker's app.  ``context`` is what the items share and
changes rarely (a model's item factors): it is sent once per change, not per chunk.  An
item's result is its output's bytes, or a ``str``: why computing it failed.
:func:`outputs_of` computes a chunk together and, if that raises, one item at a time, so
a failing item costs only itself (the same rule in the child as in the worker).

The child is the worker's: it reads its requests from a pipe and exits when the pipe
closes (the worker stopped or died).  If it dies, or does not answer within ``patience``
seconds, its pending chunks are reported lost (:meth:`HelperProcess.results` returns
``None``: the caller computes them itself) and a new child is started on the next
submission, at most once every ``restart_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

# The child imports the computation's modules from the project (as the worker does).
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Each message: its length, then the pickle (the worker's own child: nothing else writes to the pipes).
_FRAME = struct.Struct(">I")

Computation = Callable[[Any, Sequence[Any]], Sequence[bytes]]


def outputs_of(compute: Computation, context: Any, items: Sequence[Any]) -> list[bytes | str]:
    """Each item's output, computed together; if that raises or miscounts, one at a time.

    An item whose own computation raises gets ``"<exception repr>"`` instead of bytes.

    >>> def inverses(context, items):
    ...     return [str(context / item).encode() for item in items]
    >>> outputs_of(inverses, 1, [2, 0, 4])
    [b'0.5', "ZeroDivisionError('division by zero')", b'0.25']
    """
    try:
        outputs = list(compute(context, items))
    except Exception:
        logger.exception("computing %d outputs together failed; one by one", len(items))
    else:
        if len(outputs) == len(items):
            return outputs
        logger.error("%d outputs for %d requests; one by one", len(outputs), len(items))
    alone: list[bytes | str] = []
    for item in items:
        try:
            (output,) = compute(context, [item])
        except Exception as exc:
            alone.append(repr(exc))
        else:
            alone.append(output)
    return alone


def computation_named(name: str) -> Computation:
    """The function ``"package.module:function"`` names."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


class HelperProcess:
    """A child process computing ``computation`` (``"module:function"``) on chunks; see the module docstring.

    The worker's side never blocks on the pipes while records flow: what it sends waits in a
    buffer until the pipe takes it, and answers are read as they come, both from the event
    loop (no thread: a reader thread would wait for the interpreter lock behind the busy
    event loop at every answer).  Only :meth:`results` waits, for a chunk still being
    computed, and keeps both pipes moving while it does.

    Parameters
    ----------
    computation
        What the child runs: ``function(context, items)``, returning one ``bytes`` per item.
    patience
        Seconds :meth:`results` waits for a chunk before giving the child up.
    restart_interval
        Seconds between starts of a child.
    """

    def __init__(self, computation: str, *, patience: float = 10.0, restart_interval: float = 10.0) -> None:
        self.computation = computation
        self.patience = patience
        self.restart_interval = restart_interval
        self.counts: dict[str, int] = {"chunks": 0, "items": 0, "contexts": 0, "lost_chunks": 0, "starts": 0}
        self._process: subprocess.Popen | None = None
        self._to_child = -1
        self._from_child = -1
        self._outbox = bytearray()
        self._inbox = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context_key: object = None
        self._ids = itertools.count()
        self._pending: set[int] = set()
        self._done: dict[int, list[bytes | str]] = {}
        self._last_start = -float("inf")

    # --- the worker's side -----------------------------------------------------------------

    def submit(self, context_key: object, context: Callable[[], Any], items: Sequence[Any]) -> int | None:
        """Send ``items`` to be computed with the context ``context_key`` stands for (``context()``
        is called and sent only when the child has another; a key of ``None``: any context will
        do); the chunk's number, or ``None``: no child to send to.  The key is compared by
        identity and kept until the next change."""
        if not self._ready():
            return None
        chunk = next(self._ids)
        try:
            if context_key is not None and context_key is not self._context_key:
                self._send(("context", context()))
                self._context_key = context_key
                self.counts["contexts"] += 1
            self._send(("chunk", chunk, items))
        except Exception:  # a context or items that cannot be pickled: computed by the caller
            logger.exception("helper %s: could not send a chunk of %d", self.computation, len(items))
            return None
        self._pending.add(chunk)
        self.counts["chunks"] += 1
        self.counts["items"] += len(items)
        return chunk

    def results(self, chunk: int) -> list[bytes | str] | None:
        """The outputs of ``chunk``, waiting for them (blocking) up to ``patience`` seconds;
        ``None`` if they are lost (the child died or was given up)."""
        deadline = time.monotonic() + self.patience
        while chunk in self._pending and self._process is not None:
            left = deadline - time.monotonic()
            if left <= 0.0:
                logger.warning("helper %s: no answer in %.1f s; stopping it", self.computation, self.patience)
                self._lose_child()
                break
            writing = [self._to_child] if self._outbox else []
            readable, writable, _ = select.select([self._from_child], writing, [], min(left, 0.5))
            if writable:
                self._write()
            if readable:
                self._read()
        outputs = self._done.pop(chunk, None)
        if outputs is None:
            self.counts["lost_chunks"] += 1
        return outputs

    @property
    def idle(self) -> bool:
        """Whether the child has answered every chunk it was sent (as far as has been read)."""
        return not self._pending

    def close(self) -> None:
        """Stop the child (it exits when its requests end)."""
        self._lose_child()

    def report(self) -> dict[str, Any]:
        return {**self.counts, "running": self._process is not None and self._process.poll() is None}

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is None:
            return True
        if self._process is not None:
            logger.warning("helper %s exited (%s)", self.computation, self._process.returncode)
            self._lose_child()
        now = time.monotonic()
        if now - self._last_start < self.restart_interval:
            return False
        self._last_start = now
        try:
            self._start()
        except OSError:
            logger.exception("helper %s: could not start", self.computation)
            return False
        return True

    def _start(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.stages.helper", self.computation],
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
        self._context_key = None
        self._outbox.clear()
        self._inbox.clear()
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # no event loop: results() moves the pipes
        if self._loop is not None:
            self._loop.add_reader(self._from_child, self._read)
        self.counts["starts"] += 1
        logger.info("helper %s started (pid %d)", self.computation, process.pid)

    def _send(self, message: Any) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # before anything is queued
        self._outbox += _FRAME.pack(len(payload))
        self._outbox += payload
        self._write()

    def _write(self) -> None:
        """Write what the pipe takes now; wait for the rest on the event loop, if there is one."""
        try:
            written = os.write(self._to_child, self._outbox)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the child is gone
            logger.warning("helper %s: sending failed (%r)", self.computation, exc)
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
                chunk, outputs = pickle.loads(inbox[_FRAME.size : _FRAME.size + size])
            except Exception:  # not what the child writes: nothing after it can be trusted
                logger.exception("helper %s: an answer could not be read", self.computation)
                self._lose_child()
                return
            del inbox[: _FRAME.size + size]
            if chunk in self._pending:
                self._pending.discard(chunk)
                self._done[chunk] = outputs

    def _lose_child(self) -> None:
        process, self._process = self._process, None
        self._pending.clear()
        self._context_key = None
        for fd in (self._to_child, self._from_child):
            if fd < 0:
                continue
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            os.close(fd)  # the child exits at the end of its requests
        self._to_child = self._from_child = -1
        if process is None:
            return
        try:
            process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the child's side ----------------------------------------------------------------------


def serve(computation: Computation, requests: BinaryIO, answers: BinaryIO) -> None:
    """Compute every chunk read from ``requests`` with the latest context; answer in order."""
    context = None
    while True:
        header = requests.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return  # the worker closed the pipe
        (size,) = _FRAME.unpack(header)
        message = pickle.loads(requests.read(size))
        if message[0] == "context":
            context = message[1]
            continue
        _, chunk, items = message
        payload = pickle.dumps(
            (chunk, outputs_of(computation, context, items)), protocol=pickle.HIGHEST_PROTOCOL
        )
        answers.write(_FRAME.pack(len(payload)) + payload)
        answers.flush()


def _main(computation: str) -> None:
    # A Ctrl-C reaches the worker's whole process group: the worker stops, and the child with
    # the end of its requests, not with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the computation prints goes to the log, not into the answers
    serve(computation_named(computation), sys.stdin.buffer, answers)


if __name__ == "__main__":
    _main(sys.argv[1])

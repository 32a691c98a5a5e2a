"""A pure batch computation run in a child process, on the machine's other core.

A stage's flush may spend a large part of the worker's one core on a pure computation
of its records' outputs (ranking a flush's recommendations).  :class:`HelperProcess`
runs such a computation in a child (:class:`~app.stages.child.ChildProcess`): the stage
submits its requests in chunks as records arrive, the child computes them while the
worker goes on with the next records, and the flush collects the results, waiting only
for the last chunk.

The computation is ``function(context, items) -> list[bytes | str]``, named as
``"module:function"`` and imported by the child.  ``context`` is what the items share and
changes rarely (a model's item factors): it is sent once per change, not per chunk.  An
item's result is its output's bytes, or a ``str``: why computing it failed.
:func:`outputs_of` computes a chunk together and, if that raises, one item at a time, so
a failing item costs only itself (the same rule in the child as in the worker).

If the child dies, or does not answer within ``patience`` seconds, its pending chunks
are reported lost (:meth:`HelperProcess.results` returns ``None``: the caller computes
them itself) and a new child is started on the next submission, at most once every
``restart_interval`` seconds.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from app.stages.child import ChildProcess, Requests, named

logger = logging.getLogger(__name__)

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


class HelperProcess(ChildProcess):
    """A child process computing ``computation`` (``"module:function"``) on chunks; see the module docstring.

    Parameters
    ----------
    computation
        What the child runs: ``function(context, items)``, returning one ``bytes`` per item.
    patience
        Seconds :meth:`results` waits for a chunk before giving the child up.
    restart_interval
        Seconds between starts of a child.
    """

    role = "compute"

    def __init__(self, computation: str, *, patience: float = 10.0, restart_interval: float = 10.0) -> None:
        super().__init__(computation, restart_interval=restart_interval)
        self.computation = computation
        self.patience = patience
        self.counts.update(chunks=0, items=0, contexts=0, lost_chunks=0)
        self._context_key: object = None
        self._ids = itertools.count()
        self._pending: set[int] = set()
        self._done: dict[int, list[bytes | str]] = {}

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
        self.wait_until(lambda: chunk not in self._pending, self.patience)
        outputs = self._done.pop(chunk, None)
        if outputs is None:
            self.counts["lost_chunks"] += 1
        return outputs

    @property
    def idle(self) -> bool:
        """Whether the child has answered every chunk it was sent (as far as has been read)."""
        return not self._pending

    def _answered(self, answer: tuple[int, list[bytes | str]]) -> None:
        chunk, outputs = answer
        if chunk in self._pending:
            self._pending.discard(chunk)
            self._done[chunk] = outputs

    def _lost(self) -> None:
        self._pending.clear()
        self._context_key = None


# --- the child's side ----------------------------------------------------------------------


def serve(computation: str, requests: Requests) -> None:
    """Compute every chunk of ``requests`` with the latest context; answer in order."""
    compute: Computation = named(computation)
    context = None
    for message in requests:
        if message[0] == "context":
            context = message[1]
            continue
        _, chunk, items = message
        requests.answer((chunk, outputs_of(compute, context, items)))

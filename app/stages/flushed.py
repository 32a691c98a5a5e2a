"""Outputs computed at the flush, together, for records applied one by one before it.

A handler applies its record to the key's state at once (the next record of the key
sees it) but leaves what the record emits to :class:`FlushedOutputs`, with what
computing it needs taken at that moment.  As the stage's flush starts, the flush's
requests are computed in one call (array work for thousands of records costs little
more than for one), each output is kept in its key's :class:`~app.stages.redelivery.Applied`
(a redelivered record re-emits it byte for byte) and produced keyed like its record, in
record order, before the flush writes the state and sends its outputs.

A computation that raises costs only the records whose own computation raises: the
requests are then computed one at a time, and those records go to ``dead-letters``
with the reason (their state is applied; only the output is missing).

With :class:`Offloaded`, the requests go to a :class:`~app.stages.helper.HelperProcess`
in chunks as they are added, and the flush collects what the child computed meanwhile;
a chunk the child loses is computed in the worker, by ``compute``, as without it.  The
child's computation must give the same bytes as ``compute`` (the tests check it does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faust.types import Message

from app.stages.helper import HelperProcess, outputs_of
from app.stages.redelivery import Applied
from app.stages.stage import BatchedStage

logger = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Offloaded(Generic[R]):
    """How :class:`FlushedOutputs` hands its requests to a helper process.

    Parameters
    ----------
    helper
        The child that computes them.
    context_of
        A request's context: a key that identifies it and a function that gives it (sent once
        per change of key); ``None`` for a request that needs none.
    wire
        A request as the child's computation takes it.
    chunk
        Requests sent together.
    """

    helper: HelperProcess
    context_of: Callable[[R], tuple[object, Callable[[], Any]] | None]
    wire: Callable[[R], Any]
    chunk: int = 64


class FlushedOutputs(Generic[R]):
    """One output record per request, computed at ``stage``'s flush by ``compute``; see the module docstring.

    Parameters
    ----------
    stage
        The stage whose flush computes and sends them.
    topic
        Where each output goes, keyed by its record's key.
    compute
        The encoded output of each request, in order.
    offloaded
        Computed in a helper process instead, as they are added (``compute`` then only
        computes what the helper loses).
    """

    def __init__(
        self,
        stage: BatchedStage,
        topic: str,
        compute: Callable[[Sequence[R]], Sequence[bytes]],
        offloaded: Offloaded[R] | None = None,
    ) -> None:
        self.stage = stage
        self.topic = topic
        self.compute = compute
        self.offloaded = offloaded
        self._waiting: list[tuple[Message, Applied[Any], R]] = []
        # Requests sent to the helper: (start, end) of ``_waiting`` and the chunk (None: not sent).
        self._sent: list[tuple[int, int, int | None]] = []
        self._sent_up_to = 0
        stage.before_flush.append(self._emit)

    def add(self, message: Message, applied: Applied[Any], request: R) -> None:
        """Emit ``request``'s output for ``message`` (applied already to ``applied``) at the next flush."""
        self._waiting.append((message, applied, request))
        offloaded = self.offloaded
        # A full chunk, or whatever waits when the child has nothing to do: the child stays busy
        # and the flush waits only for what came since its last answer.
        if offloaded is not None and (
            len(self._waiting) - self._sent_up_to >= offloaded.chunk or offloaded.helper.idle
        ):
            self._send_unsent(offloaded)

    def __len__(self) -> int:
        return len(self._waiting)

    def _send_unsent(self, offloaded: Offloaded[R]) -> None:
        """Send the requests not sent yet, in runs of one context (what cannot be sent is computed
        here at the flush)."""
        start, end = self._sent_up_to, len(self._waiting)
        try:
            self._send_runs(offloaded, start, end)
        except Exception:  # a request's context or wire form failed: a bug, not the worker's end
            logger.exception("%s: handing requests to the helper failed; computed here", self.stage.name)
            covered = max(start, self._sent[-1][1]) if self._sent else start
            self._sent.append((covered, end, None))
        self._sent_up_to = end

    def _send_runs(self, offloaded: Offloaded[R], start: int, end: int) -> None:
        waiting = self._waiting
        run_start, run_context = start, None
        for position in range(start, end + 1):
            context = offloaded.context_of(waiting[position][2]) if position < end else None
            if position < end and (context is None or run_context is None or context[0] == run_context[0]):
                run_context = run_context or context
                continue
            if position > run_start:
                requests = [request for _, _, request in waiting[run_start:position]]
                key, give = run_context if run_context is not None else (None, _no_context)
                chunk = offloaded.helper.submit(key, give, [offloaded.wire(request) for request in requests])
                self._sent.append((run_start, position, chunk))
            run_start, run_context = position, context

    def _emit(self) -> None:
        if self.offloaded is not None:
            self._send_unsent(self.offloaded)
        waiting, self._waiting = self._waiting, []
        sent, self._sent, self._sent_up_to = self._sent, [], 0
        if not waiting:
            return
        if self.offloaded is not None:
            outputs = []
            for start, end, chunk in sent:
                outputs += self._collected(chunk, [request for _, _, request in waiting[start:end]])
        else:
            outputs = self._outputs([request for _, _, request in waiting])
        stage = self.stage
        for (message, applied, _), output in zip(waiting, outputs, strict=True):
            if isinstance(output, Exception):
                stage.dead_letter(message, f"{stage.name}: computing its output failed: {output!r}")
                continue
            try:
                applied.add_outputs(message.offset, [output], committed=stage.committed_offset(message))
                stage.emit(self.topic, message.key, output)
            except Exception as exc:  # each record's own: the others' outputs still go out
                logger.exception("%s: keeping or sending an output failed", stage.name)
                stage.dead_letter(message, f"{stage.name}: sending its output failed: {exc!r}")

    def _collected(self, chunk: int | None, requests: list[R]) -> list[bytes | Exception]:
        """The helper's outputs of ``chunk``, or, if it lost them, ``requests`` computed here."""
        answers = None if chunk is None or self.offloaded is None else self.offloaded.helper.results(chunk)
        if answers is None:
            return self._outputs(requests)
        return _as_outputs(answers)

    def _outputs(self, requests: list[R]) -> list[bytes | Exception]:
        return _as_outputs(outputs_of(lambda _, batch: self.compute(batch), None, requests))


def _as_outputs(answers: Sequence[bytes | str]) -> list[bytes | Exception]:
    """Answers of :func:`~app.stages.helper.outputs_of` with each failure's reason as an exception."""
    return [RuntimeError(answer) if isinstance(answer, str) else answer for answer in answers]


def _no_context() -> None:
    return None

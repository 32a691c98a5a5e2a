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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from faust.types import Message

from app.stages.redelivery import Applied
from app.stages.stage import BatchedStage

logger = logging.getLogger(__name__)

R = TypeVar("R")


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
    """

    def __init__(
        self, stage: BatchedStage, topic: str, compute: Callable[[Sequence[R]], Sequence[bytes]]
    ) -> None:
        self.stage = stage
        self.topic = topic
        self.compute = compute
        self._waiting: list[tuple[Message, Applied[Any], R]] = []
        stage.before_flush.append(self._emit)

    def add(self, message: Message, applied: Applied[Any], request: R) -> None:
        """Emit ``request``'s output for ``message`` (applied already to ``applied``) at the next flush."""
        self._waiting.append((message, applied, request))

    def __len__(self) -> int:
        return len(self._waiting)

    def _emit(self) -> None:
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
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

    def _outputs(self, requests: list[R]) -> list[bytes | Exception]:
        try:
            outputs = list(self.compute(requests))
        except Exception:
            logger.exception(
                "%s: computing %d outputs together failed; one by one", self.stage.name, len(requests)
            )
        else:
            if len(outputs) == len(requests):
                return outputs  # type: ignore[return-value]
            logger.error(
                "%s: %d outputs for %d requests; one by one", self.stage.name, len(outputs), len(requests)
            )
        alone: list[bytes | Exception] = []
        for request in requests:
            try:
                (output,) = self.compute([request])
            except Exception as exc:
                alone.append(exc)
            else:
                alone.append(output)
        return alone

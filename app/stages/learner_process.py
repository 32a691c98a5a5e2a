"""A model's learner in a child process, on the machine's other core.

The worker that owns a model's training partition learns every training message, and
on a busy worker that is CPU its event loop does not spend on events.  With a
:class:`LearnerProcess` the worker only hands each message's bytes to a child
(:class:`~app.stages.child.ChildProcess`), which decodes and applies them in order
(:meth:`models.learner.Learner.learn_message`, as the worker would) and encodes the
snapshots the worker publishes.  The worker keeps no copy of the learner.

The child answers each message with its offset (how far learning has got) and each
snapshot request with the signed snapshot, made after every message sent before the
request.  If the child dies, answers what cannot be read, or does not answer a snapshot
within ``patience`` seconds, what it learned since the last published snapshot is lost
with it: :attr:`LearnerProcess.learning` turns false and the learner's owner rebuilds it
from the newest snapshot and replays the training log from there, as after a restart
(:class:`app.learning.LearnerLoop`).  While the child is behind, the messages wait in the
worker's send buffer; :meth:`LearnerProcess.caught_up_enough` waits while that buffer
holds more than ``max_unsent`` bytes, so a backlog holds the training stream back
instead of memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from app.stages.child import ChildProcess, Requests, named
from models.learner import Learner

logger = logging.getLogger(__name__)


class LearnerLost(RuntimeError):
    """The child died or was given up before it answered."""


class LearnerProcess(ChildProcess):
    """A child that learns a model's training messages; see the module docstring.

    Parameters
    ----------
    decode
        ``"module:function"``: a training message's records from its bytes (imported by the child).
    patience
        Seconds a snapshot may take before the child is given up.
    restart_interval
        Seconds between starts of a child.
    max_unsent
        Bytes of messages the worker holds for a child that is behind before it waits.
    """

    role = "learn"

    def __init__(
        self,
        decode: str,
        *,
        patience: float = 30.0,
        restart_interval: float = 10.0,
        max_unsent: int = 4 * 2**20,
    ) -> None:
        super().__init__(decode, restart_interval=restart_interval)
        self.decode = decode
        self.patience = patience
        self.max_unsent = max_unsent
        self.counts.update(messages=0, snapshots=0, lost=0)
        #: Whether the child holds a learner, every message sent to it since :meth:`begin`.
        self.learning = False
        #: The offset of the last message sent to the child, and of the last it learned.
        self.training_offset = -1
        self.learned_offset = -1
        self._ids = itertools.count()
        self._snapshots: dict[int, asyncio.Future[tuple[bytes, int]]] = {}

    def begin(self, learner: Learner, signing_key: bytes) -> bool:
        """Hand ``learner`` to a child (started if need be) to learn from; ``False``: no child
        takes it (none may start now, or the learner cannot be pickled)."""
        self.release()
        if not self._ready():
            return False
        try:
            self._send(("begin", learner, signing_key))
        except Exception:
            logger.exception("learner %s: could not hand it to a child", self.decode)
            return False
        if not self.running:
            return False
        self.learning = True
        self.training_offset = self.learned_offset = learner.training_offset
        return True

    def learn(self, value: bytes | None, offset: int) -> None:
        """Send the training message at ``offset``; the child applies it after those sent before."""
        if not self.learning:
            return  # lost: the owner rebuilds the learner before its next message
        self._send(("learn", offset, value))
        self.training_offset = offset
        self.counts["messages"] += 1

    async def caught_up_enough(self) -> None:
        """Wait while more than ``max_unsent`` bytes of messages wait to be sent to the child."""
        while self.learning and len(self._outbox) > self.max_unsent:
            await asyncio.sleep(0.01)

    async def encoded_snapshot(self) -> tuple[bytes, int]:
        """The signed snapshot after every message sent so far, and its version; raises
        :class:`LearnerLost` if the child is lost first, or why the child could not make it."""
        if not self.learning:
            raise LearnerLost(f"learner {self.decode}: no child holds it")
        request = next(self._ids)
        answer: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self._snapshots[request] = answer
        try:
            self._send(("snapshot", request))
            return await asyncio.wait_for(answer, self.patience)
        except TimeoutError:
            logger.warning("learner %s: no snapshot in %.1f s; stopping it", self.decode, self.patience)
            self._snapshots.pop(request, None)
            self._lose_child()
            raise LearnerLost(f"learner {self.decode}: no snapshot in {self.patience:.1f} s") from None
        finally:
            self._snapshots.pop(request, None)

    def release(self) -> None:
        """Let the child drop its learner (the worker no longer owns the training partition)."""
        if self.learning:
            self.learning = False
            self._send(("end",))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "learning": self.learning}

    def _answered(self, answer: tuple[Any, ...]) -> None:
        if answer[0] == "learned":
            self.learned_offset = answer[1]
            return
        _, request, encoded, version = answer
        waiting = self._snapshots.get(request)
        if waiting is None or waiting.done():
            return
        if isinstance(encoded, bytes):
            waiting.set_result((encoded, version))
            self.counts["snapshots"] += 1
        else:
            waiting.set_exception(
                RuntimeError(f"learner {self.decode}: the child's snapshot failed: {encoded}")
            )

    def _lost(self) -> None:
        if self.learning:
            self.counts["lost"] += 1
        self.learning = False
        for waiting in self._snapshots.values():
            if not waiting.done():
                waiting.set_exception(LearnerLost(f"learner {self.decode}: the child is gone"))


# --- the child's side ----------------------------------------------------------------------


def serve(decode: str, requests: Requests) -> None:
    """Learn every message of ``requests`` with the learner of the latest ``begin``; answer each
    message's offset and each snapshot request, in order."""
    decode_records = named(decode)
    learner: Learner | None = None
    signing_key = b""
    for message in requests:
        kind = message[0]
        if kind == "begin":
            _, learner, signing_key = message
        elif kind == "end":
            learner = None
        elif kind == "learn":
            _, offset, value = message
            if learner is not None:
                learner.learn_message(value, offset, decode_records)
            requests.answer(("learned", offset))
        elif kind == "snapshot":
            _, request = message
            try:
                if learner is None:
                    raise LearnerLost("no learner begun")
                snapshot = learner.snapshot()
                requests.answer(("snapshot", request, snapshot.encode(key=signing_key), snapshot.version))
            except Exception as exc:  # too large, or not picklable: the worker logs it and retries later
                requests.answer(("snapshot", request, repr(exc), None))

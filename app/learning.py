"""One logical online learner per model: a one-partition training log in, versioned snapshots out.

Every worker scores with the newest snapshot of a model; only the worker that owns
the model's training partition learns, so scaling out never splits learning into
fragments.  :class:`LearnerLoop` is that learner's life on a worker:

* it is rebuilt from the newest snapshot whenever this worker (re)gains the training
  partition, and replays what that snapshot had not seen: whichever worker learned
  last, learning continues exactly where the log says it stopped;
* a snapshot is published every ``snapshot_every`` training messages and at least
  every ``snapshot_interval`` seconds while something is unpublished, and when the
  partition leaves this worker;
* a message it cannot decode or a record it cannot apply is counted and logged, never
  fatal (a bad message must not stop learning for the whole cluster); a failed
  publish is logged and retried by the timer;
* with a :class:`~app.stages.learner_process.LearnerProcess` the learner lives in a
  child process on another core, and the worker only hands it each message's bytes; a
  child lost is a learner lost: it is rebuilt from the newest snapshot and replays, as
  after a restart (without one, or when no child starts, it learns in the worker).

The learner itself (:class:`models.learner.Learner`) is the model's pure part.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from faust.types import TP, Message, TopicT

from app import faust_fixes
from app.faust_app import app
from app.pipeline import never_stops_the_worker
from app.settings import settings
from app.stages.inbox import Inbox, direct_inbox
from app.stages.learner_process import LearnerProcess
from app.stages.stage import BatchedStage
from models.learner import Learner
from models.snapshots import SnapshotSubscriber, read_partition_range

logger = logging.getLogger(__name__)

L = TypeVar("L", bound=Learner)

SNAPSHOT_SEND_TIMEOUT = 30.0  # seconds: a publish that hangs must not hold the learner for ever


R = TypeVar("R")


class TrainingLog(Generic[R]):
    """A stage's training records of one flush, sent to the one-partition training topic as a
    few messages of ``per_message`` records each: the learner reads one partition, and a
    per-record overhead there would cap the whole cluster.

    Parameters
    ----------
    stage
        The stage whose flush sends them (with its other outputs, before its acks).
    topic
        The training topic's name.
    key
        The key of every training message (the model's name).
    encode
        One message's bytes from its records.
    """

    def __init__(
        self,
        stage: BatchedStage,
        topic: str,
        key: bytes,
        encode: Callable[[list[R]], bytes],
        per_message: int = 50,
    ) -> None:
        self.stage = stage
        self.topic = topic
        self.key = key
        self.encode = encode
        self.per_message = per_message
        self._records: list[R] = []
        stage.before_flush.append(self._emit)

    def add(self, record: R) -> None:
        self._records.append(record)

    def _emit(self) -> None:
        records, self._records = self._records, []
        for start in range(0, len(records), self.per_message):
            chunk = records[start : start + self.per_message]
            self.stage.emit_to_partition(self.topic, 0, self.key, self.encode(chunk))


class LearnerHere(Generic[L]):
    """A learner in the worker's own process, placed as a :class:`LearnerProcess` is.

    >>> from models.recommender import RecoLearner, Recommender, decode_training
    >>> here = LearnerHere(RecoLearner(Recommender(n_factors=2)), decode_training, b"k" * 16)
    >>> here.learn(b'[["i1", [0.1, 0.2], 0.0, 5.0]]', offset=0)
    >>> here.training_offset, here.learned_offset, here.learner.counts["examples"]
    (0, 0, 1)
    """

    def __init__(self, learner: L, decode: Callable[[bytes | None], list[Any]], signing_key: bytes) -> None:
        self.learner = learner
        self.decode = decode
        self.signing_key = signing_key
        self.learning = True

    @property
    def training_offset(self) -> int:
        return self.learner.training_offset

    learned_offset = training_offset

    def learn(self, value: bytes | None, offset: int) -> None:
        self.learner.learn_message(value, offset, self.decode)

    async def caught_up_enough(self) -> None:
        return None

    async def encoded_snapshot(self) -> tuple[bytes, int]:
        # Encoded on the event loop, between two training messages (a few ms for about 50 KB):
        # the learner cannot change meanwhile, and nothing waits on a thread that a busy loop
        # starves of the GIL (in a soak that kept the learner locked for seconds).
        snapshot = self.learner.snapshot()
        return snapshot.encode(key=self.signing_key), snapshot.version

    def release(self) -> None:
        self.learning = False


#: Where a learner runs: in the worker, or in its child process (the same interface).
PlacedLearner = LearnerHere[Any] | LearnerProcess


class LearnerLoop(Generic[L]):
    """The learner of one model on this worker; see the module docstring.

    Parameters
    ----------
    name
        The model's name: the snapshots' key.
    training_topic, snapshots_topic
        The one-partition training log and the compacted snapshot topic.
    snapshots
        This worker's subscriber to ``snapshots_topic``.
    signing_key
        The key snapshots are signed with.
    fresh
        A learner for a model that has no snapshot yet.
    restore
        A learner from a snapshot (given a copy it may keep).
    decode
        The training records of one training message; raises on a bad one.
    snapshot_every
        Training messages between snapshots.
    snapshot_interval
        Seconds after which whatever was learned is published anyway.
    process
        A child process to learn in (its ``decode`` the same function as ``decode``, by name);
        ``None``: the worker learns.
    direct_handover
        Take the training messages from an :class:`~app.stages.inbox.Inbox` the consumer's fetch
        loop fills (as registered stages do) instead of from the agent's stream.
    """

    def __init__(
        self,
        name: str,
        training_topic: TopicT,
        snapshots_topic: TopicT,
        snapshots: SnapshotSubscriber,
        signing_key: bytes,
        fresh: Callable[[], L],
        restore: Callable[[Any], L],
        decode: Callable[[bytes | None], list[Any]],
        snapshot_every: int,
        snapshot_interval: float = 5.0,
        process: LearnerProcess | None = None,
        direct_handover: bool = False,
    ) -> None:
        self.name = name
        self.training = training_topic.get_topic_name()
        self.snapshots_topic = snapshots_topic.get_topic_name()
        self.snapshots = snapshots
        self.signing_key = signing_key
        self.fresh = fresh
        self.restore = restore
        self.decode = decode
        self.snapshot_every = snapshot_every
        self.process = process
        self.learner: PlacedLearner | None = None
        self.unsnapshotted = 0
        self.failed_publishes = 0
        self.replayed = 0
        # Held while the learner changes (restore, replay, learn).
        self._lock = asyncio.Lock()
        # Held while a snapshot is sent: one at a time, so they reach the topic in version order.
        self._publishing = asyncio.Lock()
        app.on_partitions_revoked.connect(self._hand_over)
        # Its records outweigh the events that made them: a backlog's fetches must not starve it.
        faust_fixes.fetch_more_from(self.training, settings.training_fetch_bytes)
        never_stops_the_worker(snapshot_interval)(self._publish_pending)
        # faust's stream loop yields to the event loop per record: behind a stage taking its
        # records in batches, the learner would get a record per batch.
        self.inbox: Inbox | None = direct_inbox(app, [self.training]) if direct_handover else None

    async def run(self, stream: Any) -> None:
        """The agent body: apply training messages in order, publish snapshots as they are due."""
        async for message in self._training_messages(stream):
            async with self._lock:
                learner = self.learner
                if learner is None or not learner.learning:
                    learner = self.learner = await self._restored()
                offset = message.offset
                new = offset > learner.training_offset  # else in the restored snapshot already
                if new:
                    if offset > learner.training_offset + 1:
                        await self._replay(learner, message.partition, learner.training_offset + 1, offset)
                    learner.learn(message.value, offset)
                    self.unsnapshotted += 1
            if self.inbox is not None:
                # What faust's stream does after each event.  The learner's progress is its
                # snapshots' training offset, not the committed one: a next owner replays from it.
                faust_fixes.ack_processed(app.consumer, message)
            if not new:
                continue
            await learner.caught_up_enough()
            if self.unsnapshotted >= self.snapshot_every:
                await self._publish(learner)

    def _training_messages(self, stream: Any) -> AsyncIterator[Message]:
        if self.inbox is not None:
            return self.inbox.records()
        return (event.message async for event in stream.events())

    def report(self) -> dict[str, Any]:
        """Whether this worker runs the learner and, if so, how far behind the training log it is."""
        report: dict[str, Any] = {
            "failed_snapshot_publishes": self.failed_publishes,
            "messages_replayed": self.replayed,
            "snapshots_refused": self.snapshots.refused,  # unsigned, forged or incompatible
        }
        if self.process is not None:
            report["process"] = self.process.report()
        if self.inbox is not None:
            report["inbox"] = self.inbox.report()
        learner = self.learner
        if learner is not None and learner.learning:
            end = app.consumer.highwater(TP(self.training, 0))
            report.update(
                training_offset=learner.learned_offset,
                training_end_offset=end,
                messages_behind=None if end is None else max(0, end - 1 - learner.learned_offset),
            )
        return report

    # --- internals ---------------------------------------------------------------------------

    async def _restored(self) -> PlacedLearner:
        """The learner as of the newest snapshot, in the child process if one takes it."""
        self.unsnapshotted = 0  # what the last one learned since its snapshot is replayed
        await self.snapshots.caught_up.wait()
        restored = self.snapshots.latest.get(self.name)
        if self.process is not None and self.process.begin(
            self.fresh() if restored is None else self.restore(restored), self.signing_key
        ):
            return self.process  # pickled into the child: the snapshot stays as it was
        learner = self.fresh() if restored is None else self.restore(copy.deepcopy(restored))
        return LearnerHere(learner, self.decode, self.signing_key)

    async def _replay(self, learner: PlacedLearner, partition: int, start: int, stop: int) -> None:
        logger.info("%s learner replays training messages %d..%d", self.name, start, stop - 1)
        async for offset, value in read_partition_range(
            settings.kafka_bootstrap, self.training, partition, start, stop
        ):
            learner.learn(value, offset)
            self.replayed += 1
            await learner.caught_up_enough()

    async def _hand_over(self, app_: Any, revoked: set, **kwargs: Any) -> None:
        """When the training partition leaves this worker, publish what it learned and let go."""
        learner = self.learner
        if learner is None or not any(tp.topic == self.training for tp in revoked):
            return
        if self.unsnapshotted and learner.learning:
            await self._publish(learner)
        learner.release()
        self.learner = None

    async def _publish_pending(self) -> None:
        learner = self.learner
        if learner is not None and not learner.learning and self.unsnapshotted:
            learner = await self._rebuilt(learner)
        if learner is not None and learner.learning and self.unsnapshotted:
            await self._publish(learner)

    async def _rebuilt(self, lost: PlacedLearner) -> PlacedLearner | None:
        """A learner lost (its child gone) while no training message comes: rebuilt from the newest
        snapshot with what it had been sent replayed, so that it can be published now."""
        async with self._lock:
            if self.learner is not lost:
                return self.learner  # the agent rebuilt it meanwhile
            sent = lost.training_offset
            learner = self.learner = await self._restored()
            start = learner.training_offset + 1
            if sent >= start:
                await self._replay(learner, 0, start, sent + 1)  # the training topic's one partition
                self.unsnapshotted = sent + 1 - start
            return learner

    async def _publish(self, learner: PlacedLearner) -> None:
        """Publish a snapshot; on failure keep learning and let the timer try again."""
        async with self._publishing:
            taken = self.unsnapshotted  # the snapshot holds every message sent before it
            try:
                encoded, version = await learner.encoded_snapshot()
                # Awaited: the compacted topic keeps the last one written. Learning goes on meanwhile.
                producer = app.producer._ensure_producer()
                await asyncio.wait_for(
                    producer.send_and_wait(self.snapshots_topic, encoded, key=self.name.encode()),
                    timeout=SNAPSHOT_SEND_TIMEOUT,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed_publishes += 1
                logger.exception("publishing a %s snapshot failed; retrying later", self.name)
                return
            logger.debug("%s snapshot %d published", self.name, version)
            self.unsnapshotted = max(0, self.unsnapshotted - taken)

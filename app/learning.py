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
  publish is logged and retried by the timer.

The learner itself (:class:`models.learner.Learner`) is the model's pure part.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from faust.types import TP, TopicT

from app import faust_fixes
from app.faust_app import app
from app.pipeline import never_stops_the_worker
from app.settings import settings
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
        self.learner: L | None = None
        self.unsnapshotted = 0
        self.failed_publishes = 0
        # Held while the learner changes (restore, replay, learn).
        self._lock = asyncio.Lock()
        # Held while a snapshot is sent: one at a time, so they reach the topic in version order.
        self._publishing = asyncio.Lock()
        app.on_partitions_revoked.connect(self._hand_over)
        # Its records outweigh the events that made them: a backlog's fetches must not starve it.
        faust_fixes.fetch_more_from(self.training, settings.training_fetch_bytes)
        never_stops_the_worker(snapshot_interval)(self._publish_pending)

    async def run(self, stream: Any) -> None:
        """The agent body: apply training messages in order, publish snapshots as they are due."""
        async for event in stream.events():
            async with self._lock:
                learner = self.learner
                if learner is None:
                    learner = self.learner = await self._restored()
                offset = event.message.offset
                if offset <= learner.training_offset:
                    continue  # already in the restored snapshot
                if offset > learner.training_offset + 1:
                    await self._replay(learner, event.message.partition, learner.training_offset + 1, offset)
                self._learn(learner, event.message.value, offset)
                self.unsnapshotted += 1
            if self.unsnapshotted >= self.snapshot_every:
                await self._publish(learner)

    def report(self) -> dict[str, Any]:
        """Whether this worker runs the learner and, if so, how far behind the training log it is."""
        report: dict[str, Any] = {
            "failed_snapshot_publishes": self.failed_publishes,
            "snapshots_refused": self.snapshots.refused,  # unsigned, forged or incompatible
        }
        learner = self.learner
        if learner is not None:
            end = app.consumer.highwater(TP(self.training, 0))
            report.update(
                training_offset=learner.training_offset,
                training_end_offset=end,
                messages_behind=None if end is None else max(0, end - 1 - learner.training_offset),
            )
        return report

    # --- internals ---------------------------------------------------------------------------

    def _learn(self, learner: L, value: bytes | None, offset: int) -> None:
        try:
            records = self.decode(value)
        except Exception as exc:  # a bad message must not stop learning for the whole cluster
            logger.warning("%s: training message at offset %d refused: %r", self.name, offset, exc)
            learner.counts["refused_training_records"] += 1
            records = []
        for record in records:
            try:
                learner.apply(record)
            except Exception:
                logger.exception("%s: training record at offset %d refused", self.name, offset)
                learner.counts["refused_training_records"] += 1
        learner.training_offset = offset

    async def _restored(self) -> L:
        await self.snapshots.caught_up.wait()
        restored = self.snapshots.latest.get(self.name)
        return self.fresh() if restored is None else self.restore(copy.deepcopy(restored))

    async def _replay(self, learner: L, partition: int, start: int, stop: int) -> None:
        logger.info("%s learner replays training messages %d..%d", self.name, start, stop - 1)
        replayed = 0
        async for offset, value in read_partition_range(
            settings.kafka_bootstrap, self.training, partition, start, stop
        ):
            self._learn(learner, value, offset)
            replayed += 1
        learner.counts["replayed_after_restart"] += replayed

    async def _hand_over(self, app_: Any, revoked: set, **kwargs: Any) -> None:
        """When the training partition leaves this worker, publish what it learned and let go."""
        learner = self.learner
        if learner is None or not any(tp.topic == self.training for tp in revoked):
            return
        if self.unsnapshotted:
            await self._publish(learner)
        self.learner = None

    async def _publish_pending(self) -> None:
        learner = self.learner
        if learner is not None and self.unsnapshotted:
            await self._publish(learner)

    async def _publish(self, learner: L) -> None:
        """Publish a snapshot; on failure keep learning and let the timer try again."""
        async with self._publishing:
            try:
                # Encoded on the event loop, between two training messages (a few ms for about
                # 50 KB): the learner cannot change meanwhile, and nothing waits on a thread that
                # a busy loop starves of the GIL (in a soak that kept the learner locked for seconds).
                encoded = learner.snapshot().encode(key=self.signing_key)
                taken = self.unsnapshotted
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
                logger.exception(
                    "publishing %s snapshot %d failed; retrying later", self.name, learner.version
                )
                return
            self.unsnapshotted = max(0, self.unsnapshotted - taken)

"""LearnerLoop: the one learner of a model, in the worker or in a child process, learns each message once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace

import pytest

import app.learning as learning
from app.faust_app import app
from app.learning import LearnerHere, LearnerLoop
from app.stages.learner_process import LearnerProcess
from models.recommender import RecoLearner, Recommender, decode_training
from models.snapshots import Snapshot, SnapshotSubscriber
from tests.unit.stages.test_learner_process import DECODE, KEY, item_state, training_messages

MESSAGES = training_messages(14, seed=3)


def events(offsets: Iterable[int]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(message=SimpleNamespace(offset=offset, partition=0, value=MESSAGES[offset]))
        for offset in offsets
    ]


class Stream:
    """Training events, with a hook run before each one is delivered."""

    def __init__(self, delivered: list[SimpleNamespace], before: dict[int, object]) -> None:
        self.delivered = delivered
        self.before = before

    async def events(self) -> AsyncIterator[SimpleNamespace]:
        for event in self.delivered:
            if (hook := self.before.get(event.message.offset)) is not None:
                hook()
            yield event


def learned_here(offsets: Iterable[int]) -> LearnerHere:
    here = LearnerHere(RecoLearner(Recommender()), decode_training, KEY)
    for offset in offsets:
        here.learn(MESSAGES[offset], offset)
    return here


@pytest.fixture
def loop_with(monkeypatch):
    """A LearnerLoop over MESSAGES whose newest snapshot is the one given; replays read MESSAGES."""

    async def read_partition_range(
        bootstrap: str, topic: str, partition: int, start: int, stop: int
    ) -> AsyncIterator[tuple[int, bytes]]:
        for offset in range(start, stop):
            yield offset, MESSAGES[offset]

    monkeypatch.setattr(learning, "read_partition_range", read_partition_range)
    made: list[LearnerLoop] = []

    def make(snapshot: Snapshot | None, process: LearnerProcess | None) -> LearnerLoop:
        subscriber = SnapshotSubscriber("127.0.0.1:1", "snapshots", KEY)
        if snapshot is not None:
            subscriber.latest[snapshot.name] = snapshot
        subscriber.caught_up.set()
        loop = LearnerLoop(
            RecoLearner.name,
            app.topic("test-training"),
            app.topic("test-snapshots"),
            subscriber,
            KEY,
            fresh=lambda: RecoLearner(Recommender()),
            restore=RecoLearner.from_snapshot,
            decode=decode_training,
            snapshot_every=10**9,  # published by the test
            process=process,
        )
        made.append(loop)
        return loop

    yield make
    for loop in made:
        if loop.process is not None:
            loop.process.close()


async def _snapshot_of(loop: LearnerLoop) -> Snapshot:
    assert loop.learner is not None
    encoded, _ = await loop.learner.encoded_snapshot()
    return Snapshot.decode(encoded, key=KEY)


@pytest.mark.parametrize("in_child", [True, False], ids=["in a child", "in the worker"])
def test_a_learner_resumes_from_the_newest_snapshot_and_replays_what_it_had_not_seen(loop_with, in_child):
    snapshot = Snapshot.decode(asyncio.run(learned_here(range(5)).encoded_snapshot())[0], key=KEY)
    process = LearnerProcess(DECODE) if in_child else None
    loop = loop_with(snapshot, process)
    # Delivered from offset 9 on: 0..4 are in the snapshot, 5..8 are replayed from the log.
    learned = asyncio.run(_learn_then_snapshot(loop, Stream(events(range(9, 14)), {})))
    assert item_state(learned) == item_state(asyncio.run(_snapshot_of_here(range(14))))
    assert learned.version == 14 and loop.replayed == 4
    if in_child:
        assert process.counts["messages"] == 9 and process.learned_offset == 13


def test_a_child_lost_mid_stream_is_a_learner_rebuilt_from_the_snapshot_learning_each_message_once(loop_with):
    snapshot = Snapshot.decode(asyncio.run(learned_here(range(5)).encoded_snapshot())[0], key=KEY)
    process = LearnerProcess(DECODE, restart_interval=0.0)
    loop = loop_with(snapshot, process)

    def kill_child() -> None:
        os.kill(process._process.pid, signal.SIGKILL)
        process.wait_until(lambda: not process.learning, patience=5.0)  # the loop notices its end

    learned = asyncio.run(_learn_then_snapshot(loop, Stream(events(range(5, 14)), {10: kill_child})))
    # Lost with the child: 5..9; replayed from the snapshot's offset on, then 10..13 learned.
    assert item_state(learned) == item_state(asyncio.run(_snapshot_of_here(range(14))))
    assert learned.version == 14 and loop.replayed == 5
    assert process.counts["lost"] == 1 and process.counts["starts"] == 2


async def _learn_then_snapshot(loop: LearnerLoop, stream: Stream) -> Snapshot:
    await loop.run(stream)
    return await _snapshot_of(loop)


async def _snapshot_of_here(offsets: Iterable[int]) -> Snapshot:
    encoded, _ = await learned_here(offsets).encoded_snapshot()
    return Snapshot.decode(encoded, key=KEY)


def test_a_child_lost_while_no_message_comes_is_rebuilt_by_the_snapshot_timer(loop_with):
    snapshot = Snapshot.decode(asyncio.run(learned_here(range(5)).encoded_snapshot())[0], key=KEY)
    process = LearnerProcess(DECODE, restart_interval=0.0)
    loop = loop_with(snapshot, process)

    async def learn_lose_then_tick() -> Snapshot:
        await loop.run(Stream(events(range(5, 14)), {}))
        await process.encoded_snapshot()  # the child has learned 5..13 (none published)
        os.kill(process._process.pid, signal.SIGKILL)
        process.wait_until(lambda: not process.learning, patience=5.0)
        await loop._publish_pending()  # no producer here: the publish itself fails, and is retried
        assert loop.learner is process and process.learning
        return await _snapshot_of(loop)

    learned = asyncio.run(learn_lose_then_tick())
    assert item_state(learned) == item_state(asyncio.run(_snapshot_of_here(range(14))))
    assert learned.version == 14 and loop.replayed == 9 and loop.unsnapshotted == 9
    assert loop.failed_publishes == 1 and process.counts["starts"] == 2

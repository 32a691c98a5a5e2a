"""LearnerProcess: a learner in a child process learns exactly what it would in the worker."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import orjson
import pytest

from app.learning import LearnerHere
from app.stages.learner_process import LearnerLost, LearnerProcess
from models.recommender import RecoLearner, Recommender, decode_training
from models.snapshots import Snapshot
from tests.unit.stages import helper_computations

KEY = b"k" * 16
DECODE = "models.recommender:decode_training"


def training_messages(n: int, seed: int = 0) -> list[bytes]:
    """``n`` training messages of 20 examples each, over 50 items."""
    rng = np.random.default_rng(seed)
    return [
        orjson.dumps(
            [
                [
                    f"i{rng.integers(50)}",
                    rng.normal(0.0, 0.1, 10).tolist(),
                    float(rng.normal()),
                    float(target),
                ]
                for target in rng.choice([0.0, 1.0, 5.0], size=20)
            ]
        )
        for _ in range(n)
    ]


@pytest.fixture
def process_of():
    processes: list[LearnerProcess] = []

    def make(decode: str = DECODE, **options: float) -> LearnerProcess:
        process = LearnerProcess(decode, **options)
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.close()


def item_state(snapshot: Snapshot) -> dict[str, tuple[list[float], float]]:
    factors = snapshot.model.item_factors()
    return {
        item: (factors.matrix[row].tolist(), float(factors.biases[row]))
        for item, row in factors.index.items()
    }


def test_the_child_learns_exactly_what_the_worker_learns(process_of):
    messages = training_messages(30)
    messages.insert(7, b"not a training message")
    here = LearnerHere(RecoLearner(Recommender()), decode_training, KEY)
    process = process_of()

    async def learn_both() -> tuple[bytes, int]:
        assert process.begin(RecoLearner(Recommender()), KEY)
        for offset, value in enumerate(messages):
            here.learn(value, offset)
            process.learn(value, offset)
        return await process.encoded_snapshot()

    encoded, version = asyncio.run(learn_both())
    in_child = Snapshot.decode(encoded, key=KEY)
    in_worker = Snapshot.decode(asyncio.run(here.encoded_snapshot())[0], key=KEY)
    assert version == in_child.version == in_worker.version == len(messages)
    assert in_child.training_offset == in_worker.training_offset == len(messages) - 1
    assert item_state(in_child) == item_state(in_worker) and len(item_state(in_child)) == 50
    assert in_child.state["counts"] == in_worker.state["counts"]
    assert in_child.state["counts"]["refused_training_records"] == 1  # counted, learning went on
    assert process.training_offset == process.learned_offset == len(messages) - 1


def test_a_restored_learner_goes_on_from_its_snapshot(process_of):
    first, rest = training_messages(10, seed=1), training_messages(5, seed=2)
    whole = LearnerHere(RecoLearner(Recommender()), decode_training, KEY)
    for offset, value in enumerate(first + rest):
        whole.learn(value, offset)
    halfway = LearnerHere(RecoLearner(Recommender()), decode_training, KEY)
    for offset, value in enumerate(first):
        halfway.learn(value, offset)
    snapshot = Snapshot.decode(asyncio.run(halfway.encoded_snapshot())[0], key=KEY)
    process = process_of()

    async def resume() -> bytes:
        assert process.begin(RecoLearner.from_snapshot(snapshot), KEY)
        assert process.training_offset == len(first) - 1
        for offset, value in enumerate(rest, start=len(first)):
            process.learn(value, offset)
        return (await process.encoded_snapshot())[0]

    resumed = Snapshot.decode(asyncio.run(resume()), key=KEY)
    expected = Snapshot.decode(asyncio.run(whole.encoded_snapshot())[0], key=KEY)
    assert item_state(resumed) == item_state(expected)
    assert resumed.version == expected.version == len(first) + len(rest)


def test_a_child_that_dies_loses_its_learner_and_a_new_child_takes_the_next(process_of):
    process = process_of(restart_interval=0.0)

    async def kill_then_begin_again() -> None:
        assert process.begin(RecoLearner(Recommender()), KEY)
        process.learn(training_messages(1)[0], 0)
        await process.encoded_snapshot()
        os.kill(process._process.pid, signal.SIGKILL)
        with pytest.raises(LearnerLost):
            await process.encoded_snapshot()
        assert not process.learning and process.counts["lost"] == 1
        process.learn(training_messages(1)[0], 1)  # ignored: nothing holds the learner
        assert process.training_offset == 0
        assert process.begin(RecoLearner(Recommender()), KEY)
        process.learn(training_messages(1)[0], 0)
        encoded, version = await process.encoded_snapshot()
        assert version == 1 and Snapshot.decode(encoded, key=KEY).training_offset == 0

    asyncio.run(kill_then_begin_again())
    assert process.counts["starts"] == 2


def test_a_child_that_does_not_answer_a_snapshot_in_time_is_given_up(process_of):
    process = process_of("tests.unit.stages.helper_computations:slow_records", patience=0.5)

    async def ask() -> None:
        assert process.begin(RecoLearner(Recommender()), KEY)
        process.learn(b"30", 0)  # the child sleeps 30 s decoding it
        with pytest.raises(LearnerLost):
            await process.encoded_snapshot()

    asyncio.run(ask())
    assert not process.learning and not process.running


def test_a_snapshot_the_child_cannot_make_is_reported_and_learning_goes_on(process_of):
    process = process_of()

    async def unpicklable() -> None:
        assert process.begin(helper_computations.UnsnapshottableLearner(Recommender()), KEY)
        process.learn(training_messages(1)[0], 0)
        with pytest.raises(RuntimeError, match="the child's snapshot failed"):
            await process.encoded_snapshot()
        process.learn(training_messages(1)[0], 1)
        with pytest.raises(RuntimeError, match="the child's snapshot failed"):
            await process.encoded_snapshot()  # answered: the child learned on
        assert process.learning and process.learned_offset == 1

    asyncio.run(unpicklable())


def test_the_worker_waits_while_a_slow_child_has_too_much_unsent(process_of):
    process = process_of("tests.unit.stages.helper_computations:slow_records", max_unsent=1_000)

    async def flood() -> bool:
        assert process.begin(RecoLearner(Recommender()), KEY)
        process.learn(b"0.5", 0)  # the child is busy for half a second
        process.learn(b"0" + b" " * 200_000, 1)  # more than the pipe takes at once
        waited = asyncio.ensure_future(process.caught_up_enough())
        await asyncio.sleep(0.1)
        busy = not waited.done()
        await asyncio.wait_for(waited, 10.0)
        return busy

    assert asyncio.run(flood())

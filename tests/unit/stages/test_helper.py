"""HelperProcess: a pure computation in a child process, with its failures reported, never hidden."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from app.stages.helper import HelperProcess, outputs_of
from tests.unit.stages import helper_computations

COMPUTATIONS = "tests.unit.stages.helper_computations"


@pytest.fixture
def helper_of():
    helpers: list[HelperProcess] = []

    def make(function: str, **options: float) -> HelperProcess:
        helper = HelperProcess(f"{COMPUTATIONS}:{function}", **options)
        helpers.append(helper)
        return helper

    yield make
    for helper in helpers:
        helper.close()


def test_chunks_are_computed_by_the_child_with_the_context_of_their_key(helper_of):
    helper = helper_of("scaled")
    twice, thrice = object(), object()
    chunks = [
        helper.submit(twice, lambda: 2, [1, 2, 3]),
        helper.submit(twice, lambda: 999, [4]),  # same key: the child keeps its context
        helper.submit(None, lambda: 999, [5]),  # no key: any context
        helper.submit(thrice, lambda: 3, [6]),
    ]
    assert None not in chunks
    answers = [helper.results(chunk) for chunk in reversed(chunks)][::-1]  # in any order
    assert answers == [[b"2", b"4", b"6"], [b"8"], [b"10"], [b"18"]]
    assert helper.counts["contexts"] == 2 and helper.counts["starts"] == 1
    assert helper.results(chunks[0]) is None  # answered once


def test_an_item_that_fails_gets_its_reason_and_costs_no_other(helper_of):
    helper = helper_of("inverses")
    chunk = helper.submit(None, lambda: None, [4, 0, 2])
    in_child = helper.results(chunk)
    assert in_child == [b"0.25", "ZeroDivisionError('division by zero')", b"0.5"]
    assert in_child == outputs_of(helper_computations.inverses, None, [4, 0, 2])  # the worker's own rule


def test_a_child_that_dies_loses_its_chunks_and_a_new_one_takes_over(helper_of):
    helper = helper_of("pid_after", restart_interval=0.0)
    first = helper.submit(None, lambda: None, [1])
    (pid,) = helper.results(first)
    slow = helper.submit(object(), lambda: 30.0, [1])
    os.kill(int(pid), signal.SIGKILL)
    assert helper.results(slow) is None and helper.counts["lost_chunks"] == 1
    again = helper.submit(None, lambda: None, [1])
    (new_pid,) = helper.results(again)
    assert new_pid != pid and helper.counts["starts"] == 2


def test_a_child_that_does_not_answer_in_time_is_given_up(helper_of):
    helper = helper_of("pid_after", patience=0.5, restart_interval=3600.0)
    chunk = helper.submit(object(), lambda: 30.0, [1])
    assert helper.results(chunk) is None
    assert not helper.report()["running"]
    assert helper.submit(None, lambda: None, [1]) is None  # not restarted before the interval


def test_answers_arrive_through_the_event_loop_while_it_runs(helper_of):
    helper = helper_of("scaled")

    async def submit_then_wait() -> list[bytes | str] | None:
        chunk = helper.submit(object(), lambda: 10, list(range(20_000)))  # more than a pipe holds
        for _ in range(500):
            if chunk not in helper._pending:
                break
            await asyncio.sleep(0.01)
        assert chunk not in helper._pending  # read by the loop, not by results()
        return helper.results(chunk)

    assert asyncio.run(submit_then_wait()) == [str(n * 10).encode() for n in range(20_000)]


def test_a_chunk_that_cannot_be_sent_is_left_to_the_caller_and_the_next_ones_still_go(helper_of):
    helper = helper_of("scaled")
    assert helper.submit(object(), lambda: lambda: 2, [1]) is None  # a context that cannot be pickled
    assert helper.submit(None, lambda: None, [(n for n in ())]) is None  # an item that cannot be
    chunk = helper.submit(object(), lambda: 3, [1, 2])
    assert helper.results(chunk) == [b"3", b"6"]


def test_an_answer_that_cannot_be_read_gives_the_child_up(helper_of):
    helper = helper_of("scaled", restart_interval=3600.0)
    chunk = helper.submit(None, lambda: None, [1])
    helper._inbox += b"\x00\x00\x00\x03bad"  # a frame that is no pickle, before the answer
    assert helper.results(chunk) is None and not helper.report()["running"]

"""FlushedOutputs: outputs computed together at the flush, kept for redelivery, failures dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from app.stages.flushed import FlushedOutputs, Offloaded
from app.stages.helper import HelperProcess
from app.stages.outputs import key_partition
from app.stages.redelivery import MAX_KEPT, Applied
from app.stages.stage import BatchedStage
from tests.unit.stages import helper_computations
from tests.unit.stages.conftest import FakeMessage


async def _stage_with_outputs(faust_app, recording, compute) -> tuple[BatchedStage, FlushedOutputs[int]]:
    stage = BatchedStage(faust_app, "test", [])
    stage.committed_offset = lambda message: 0  # type: ignore[method-assign]  # no consumer here
    outputs: FlushedOutputs[int] = FlushedOutputs(stage, "squares", compute)
    await stage.prepare([recording.topic("squares")])
    return stage, outputs


def _sent(recording, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    written = sorted(recording.written.items())
    return [record for (name, _), records in written if name == topic for record in records]


async def test_a_flushs_requests_are_computed_in_one_call_sent_keyed_and_kept_for_redelivery(
    faust_app, recording
):
    calls: list[list[int]] = []

    def squares(requests: Sequence[int]) -> list[bytes]:
        calls.append(list(requests))
        return [orjson.dumps({"square": n * n}) for n in requests]

    stage, outputs = await _stage_with_outputs(faust_app, recording, squares)
    applied = {key: Applied(None) for key in (b"a", b"b")}
    for offset, (key, n) in enumerate([(b"a", 2), (b"b", 3), (b"a", 4)]):
        message = FakeMessage("numbers", 0, offset, key=key)
        applied[key].apply(n, offset=offset, outputs=(), committed=0)
        outputs.add(message, applied[key], n)
        stage.processed(message)
    assert len(outputs) == 3 and not recording.written  # nothing before the flush
    await stage.flush()

    assert calls == [[2, 3, 4]] and len(outputs) == 0
    for key, expected in ((b"a", [b'{"square":4}', b'{"square":16}']), (b"b", [b'{"square":9}'])):
        on_its_partition = recording.written[("squares", key_partition(key, 4))]
        assert [value for sent_key, value in on_its_partition if sent_key == key] == expected
    # A redelivered record finds its output in the key's state, byte for byte.
    assert applied[b"a"].outputs_of(0) == [b'{"square":4}']
    assert applied[b"a"].outputs_of(2) == [b'{"square":16}']
    assert applied[b"b"].outputs_of(1) == [b'{"square":9}']
    await stage.flush()
    assert calls == [[2, 3, 4]]  # nothing waiting: not called again


async def test_a_request_that_cannot_be_computed_is_dead_lettered_and_costs_no_other(faust_app, recording):
    def inverses(requests: Sequence[int]) -> list[bytes]:
        return [orjson.dumps(1 / n) for n in requests]

    stage, outputs = await _stage_with_outputs(faust_app, recording, inverses)
    for offset, n in enumerate([4, 0, 2]):
        message = FakeMessage("numbers", 0, offset, key=b"k", value=str(n).encode())
        outputs.add(message, Applied(n, offset=offset), n)
        stage.processed(message)
    await stage.flush()

    assert [value for _, value in _sent(recording, "squares")] == [b"0.25", b"0.5"]
    letters = [orjson.loads(value) for _, value in _sent(recording, "dead-letters")]
    assert len(letters) == 1 and "ZeroDivisionError" in letters[0]["error"], letters
    assert stage.counts["dead_letters"] == 1 and recording.log[-1] == ("acked", 2)


async def test_a_computation_giving_too_few_outputs_is_redone_one_request_at_a_time(faust_app, recording):
    def first_only(requests: Sequence[int]) -> list[bytes]:
        return [str(requests[0]).encode()]

    stage, outputs = await _stage_with_outputs(faust_app, recording, first_only)
    for offset, n in enumerate([7, 8]):
        outputs.add(FakeMessage("numbers", 0, offset, key=b"k"), Applied(n, offset=offset), n)
    await stage.flush()
    assert [value for _, value in _sent(recording, "squares")] == [b"7", b"8"]


async def test_outputs_kept_for_redelivery_stay_within_the_bound_however_many_records_a_key_has(
    faust_app, recording
):
    stage, outputs = await _stage_with_outputs(faust_app, recording, lambda requests: [b"1"] * len(requests))
    applied = Applied(None)
    for offset in range(1_000):  # one key's records in one flush, a backlog's worth
        applied.apply(offset, offset=offset, outputs=(), committed=0)
        outputs.add(FakeMessage("numbers", 0, offset, key=b"k"), applied, offset)
    await stage.flush()
    assert sorted(applied.outputs) == list(range(1_000 - MAX_KEPT, 1_000))
    stage.committed_offset = lambda message: 990  # type: ignore[method-assign]
    applied.apply(1_000, offset=1_000, outputs=(), committed=990)
    outputs.add(FakeMessage("numbers", 0, 1_000, key=b"k"), applied, 1_000)
    await stage.flush()
    assert sorted(applied.outputs) == list(range(990, 1_001))  # committed ones are never redelivered


async def test_an_output_that_cannot_be_kept_is_dead_lettered_and_the_others_still_go_out(
    faust_app, recording
):
    stage, outputs = await _stage_with_outputs(faust_app, recording, lambda requests: [b"1"] * len(requests))

    class Unkeepable(Applied):
        def add_outputs(self, *args, **kwargs):
            raise MemoryError("no room")

    outputs.add(FakeMessage("numbers", 0, 0, key=b"a"), Unkeepable(None), 0)
    outputs.add(FakeMessage("numbers", 0, 1, key=b"b"), Applied(None), 1)
    await stage.flush()
    assert [key for key, _ in _sent(recording, "squares")] == [b"b"]
    assert "no room" in orjson.loads(_sent(recording, "dead-letters")[0][1])["error"]


async def test_outputs_computed_by_a_helper_process_are_those_the_worker_computes(faust_app, recording):
    helper = HelperProcess("tests.unit.stages.helper_computations:scaled_unless_own", restart_interval=0.0)
    # A request names its context ("any": it needs none and brings its own factor, 1).
    contexts = {"double": 2, "triple": 3}
    offloaded: Offloaded[tuple[str, int]] = Offloaded(
        helper,
        context_of=lambda request: (
            None if request[0] == "any" else (request[0], lambda: contexts[request[0]])
        ),
        wire=lambda request: (1 if request[0] == "any" else None, request[1]),
        chunk=3,
    )

    def in_worker(requests):
        return [
            helper_computations.scaled_unless_own(contexts.get(name), [offloaded.wire((name, n))])[0]
            for name, n in requests
        ]

    stage = BatchedStage(faust_app, "test", [])
    stage.committed_offset = lambda message: 0  # type: ignore[method-assign]
    outputs = FlushedOutputs(stage, "scaled", in_worker, offloaded)
    await stage.prepare([recording.topic("scaled")])
    requests = [
        ("double", 1),
        ("any", 5),
        ("double", 2),
        ("triple", 3),
        ("triple", 4),
        ("double", 6),
        ("any", 7),
    ]
    try:
        for offset, request in enumerate(requests):
            outputs.add(FakeMessage("numbers", 0, offset, key=b"k"), Applied(None, offset=offset), request)
        assert helper.counts["chunks"] >= 2  # sent while records were added
        await stage.flush()
        assert [value for _, value in _sent(recording, "scaled")] == in_worker(requests)
        assert helper.counts["lost_chunks"] == 0 and helper.counts["items"] == len(requests)

        helper.close()  # a helper that is gone: the worker computes its chunks itself
        helper._ready = lambda: False  # type: ignore[method-assign]
        for offset, request in enumerate(requests, start=len(requests)):
            outputs.add(FakeMessage("numbers", 0, offset, key=b"k"), Applied(None, offset=offset), request)
        await stage.flush()
        assert [value for _, value in _sent(recording, "scaled")] == in_worker(requests) * 2
    finally:
        helper.close()


async def test_requests_that_cannot_be_handed_to_the_helper_are_computed_in_the_worker(faust_app, recording):
    helper = HelperProcess("tests.unit.stages.helper_computations:scaled", restart_interval=0.0)

    def wire(n: int) -> int:
        if n == 3:
            raise ValueError("no wire form")
        return n

    offloaded: Offloaded[int] = Offloaded(helper, context_of=lambda n: None, wire=wire, chunk=2)
    stage = BatchedStage(faust_app, "test", [])
    stage.committed_offset = lambda message: 0  # type: ignore[method-assign]
    outputs = FlushedOutputs(stage, "scaled", lambda ns: [str(n).encode() for n in ns], offloaded)
    await stage.prepare([recording.topic("scaled")])
    try:
        for offset, n in enumerate([1, 2, 3, 4, 5]):
            outputs.add(FakeMessage("numbers", 0, offset, key=b"k"), Applied(None, offset=offset), n)
        await stage.flush()
    finally:
        helper.close()
    assert [value for _, value in _sent(recording, "scaled")] == [b"1", b"2", b"3", b"4", b"5"]
    assert not _sent(recording, "dead-letters")

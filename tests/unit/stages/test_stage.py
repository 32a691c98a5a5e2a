"""BatchedStage: state once per key per flush, state before outputs, outputs before acks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from types import SimpleNamespace

import orjson
import pytest

from app.stages.outputs import HASHES_KEPT, PartitionedRecords, key_partition
from app.stages.stage import LAG_SHARE, BatchedStage
from tests.unit.stages.conftest import FakeMessage, RecordingProducer


async def _stage(faust_app, recording, states, **kwargs) -> BatchedStage:
    stage = BatchedStage(faust_app, "test", states, **kwargs)
    await stage.prepare([recording.topic("decisions")])
    return stage


async def test_each_dirty_key_is_written_once_per_flush_with_its_last_value(faust_app, recording, json_state):
    counts = json_state()
    stage = await _stage(faust_app, recording, [counts])
    for offset, value in enumerate([1, 2, 3]):
        counts.put(2, b"card-1", {"n": value})
        stage.processed(FakeMessage("tx", 2, offset))
    counts.put(1, b"card-2", {"n": 7})
    await stage.flush()

    assert recording.written[(counts.changelog_topic, 2)] == [(b"card-1", b'{"n":3}')]
    assert recording.written[(counts.changelog_topic, 1)] == [(b"card-2", b'{"n":7}')]
    assert counts.table.data.data == {b"card-1": b'{"n":3}', b"card-2": b'{"n":7}'}
    assert stage.counts["changelog_records"] == 2 and stage.counts["events"] == 3
    await stage.flush()  # nothing new: nothing written again
    assert len(recording.written[(counts.changelog_topic, 2)]) == 1


async def test_outputs_follow_acknowledged_state_and_acks_follow_acknowledged_outputs(
    faust_app, recording, json_state
):
    counts = json_state()
    stage = await _stage(faust_app, recording, [counts])
    counts.put(0, b"k", {"n": 1})
    stage.emit("decisions", b"tx-1", b"decided")
    stage.processed(FakeMessage("tx", 0, 41))
    stage.processed(FakeMessage("tx", 0, 42))
    await stage.flush()

    steps = [step for step in recording.log if step[0] != "declared"]
    assert steps == [("sent", counts.changelog_topic), ("sent", "decisions"), ("acked", 41), ("acked", 42)]
    assert recording.written[("decisions", key_partition(b"tx-1", 4))] == [(b"tx-1", b"decided")]


async def test_a_failed_send_is_retried_and_nothing_is_acked_before_it_succeeds(
    faust_app, recording, json_state, monkeypatch
):
    monkeypatch.setattr("app.stages.stage.RETRY_BACKOFF", (0.0,))
    counts = json_state()
    stage = await _stage(faust_app, recording, [counts])
    counts.put(0, b"k", {"n": 1})
    stage.emit("decisions", b"tx-1", b"decided")
    stage.processed(FakeMessage("tx", 0, 7))
    recording.fail_next.add("decisions")
    await stage.flush()

    steps = [step for step in recording.log if step[0] != "declared"]
    assert steps == [("sent", counts.changelog_topic), ("sent", "decisions"), ("acked", 7)]
    assert stage.counts["send_retries"] == 1
    assert sum(len(records) for records in recording.written.values()) == 2  # nothing sent twice


async def test_coalesced_outputs_are_emitted_at_the_start_of_each_flush(faust_app, recording, json_state):
    stage = await _stage(faust_app, recording, [])
    pending: list[bytes] = []
    stage.before_flush.append(lambda: [stage.emit("decisions", key, b"x") for key in pending])
    pending.extend([b"a", b"b"])
    await stage.flush()
    assert sorted(k for records in recording.written.values() for k, _ in records) == [b"a", b"b"]


async def test_a_dead_letter_quotes_the_original_and_its_reason(faust_app, recording, json_state):
    stage = await _stage(faust_app, recording, [])
    stage.dead_letter(FakeMessage("transactions", 3, 9, key=b"card-1", value=b"{oops"), "bad JSON")
    await stage.flush()
    [(key, value)] = [record for (topic, _), records in recording.written.items() for record in records]
    letter = orjson.loads(value)
    assert key == b"transactions"
    assert (letter["error"], letter["offset"], letter["value_text"]) == ("bad JSON", 9, "{oops")


async def test_partitioned_records_split_into_batches_and_report_the_last_offset() -> None:
    producer = RecordingProducer(batch_capacity=3)
    records = PartitionedRecords()
    for i in range(7):
        records.add("t", 1, str(i).encode(), b"v")
    offsets = await records.produce(producer)
    assert offsets == {("t", 1): 6}
    assert [k for k, _ in producer.written[("t", 1)]] == [str(i).encode() for i in range(7)]
    assert producer.log == [("sent", "t")] * 3
    assert not records


@pytest.mark.parametrize("key", [b"card-1", b"tx-000000042", b"m-7"])
def test_key_partition_matches_kafkas_default_partitioner(key: bytes) -> None:
    from aiokafka.partitioner import DefaultPartitioner

    assert key_partition(key, 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))


def test_key_partition_stays_kafkas_beyond_the_hashes_it_keeps() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    keys = [f"user-{n}".encode() for n in range(HASHES_KEPT + 500)]
    for key in [*keys, *keys[:1_000], *reversed(keys)]:  # first asked, kept, and forgotten again
        assert key_partition(key, 12) == DefaultPartitioner()(key, list(range(12)), list(range(12)))


async def test_a_keyed_input_record_on_another_partition_than_its_key_is_dead_lettered(
    faust_app, recording, json_state
):
    counts = json_state()
    stage = BatchedStage(faust_app, "test", [counts])
    await stage.prepare([recording.topic("decisions")], keyed_inputs=[recording.topic("transactions")])
    home = key_partition(b"card-1", 4)
    handled = []

    class Stream:
        def noack(self):
            return self

        async def events(self):
            for partition in (home, (home + 1) % 4):
                message = FakeMessage("transactions", partition, 7, key=b"card-1", value=b"{}")
                yield type("Event", (), {"message": message})()

    await stage.run(Stream(), handled.append)
    await stage.flush()
    assert [message.partition for message in handled] == [home]
    [(_, letter)] = [r for (topic, _), rs in recording.written.items() if topic == "dead-letters" for r in rs]
    error = orjson.loads(letter)["error"]
    assert f"arrived on partition {(home + 1) % 4} of transactions" in error
    assert f"gives it partition {home}" in error


async def test_values_by_key_go_out_as_one_record_per_partition_of_their_keys(faust_app, recording):
    stage = BatchedStage(faust_app, "test", [])
    await stage.prepare([recording.topic("item-events")], keyed_inputs=[recording.topic("item-events")])
    values = {f"item-{n}": n for n in range(40)}
    stage.emit_by_partition("item-events", values, orjson.dumps, keys_per_record=3)
    await stage.flush()

    sent: dict[str, int] = {}
    for (topic, partition), records in recording.written.items():
        assert topic == "item-events"
        for key, value in records:
            chunk = orjson.loads(value)
            assert key is None and 1 <= len(chunk) <= 3
            assert {key_partition(item.encode(), 4) for item in chunk} == {partition}
            sent.update(chunk)
            message = FakeMessage("item-events", partition, 0, key=None, value=value)
            assert stage.keys_elsewhere(message, chunk) is None
    assert sent == values
    expected_records = sum(-(-n // 3) for n in Counter(key_partition(k.encode(), 4) for k in values).values())
    assert sum(len(records) for records in recording.written.values()) == expected_records


async def test_a_key_whose_state_lives_on_another_partition_is_named(faust_app, recording):
    stage = BatchedStage(faust_app, "test", [])
    await stage.prepare([recording.topic("item-events")], keyed_inputs=[recording.topic("item-events")])
    home = key_partition(b"item-1", 4)
    message = FakeMessage("item-events", (home + 1) % 4, 0, key=None, value=b"{}")
    reason = stage.keys_elsewhere(message, ["item-1"])
    assert reason == (
        f"key 'item-1' in a record on partition {(home + 1) % 4} of item-events, "
        f"but its state lives on partition {home}"
    )


async def test_a_stage_whose_newest_events_are_late_flushes_less_often_up_to_a_maximum(faust_app, recording):
    stage = BatchedStage(faust_app, "test", [], flush_interval=0.02, max_flush_interval=0.1)
    await stage.prepare([recording.topic("decisions")])
    now = time.time()
    for offset, age in enumerate([30.0, 0.08, 0.09]):  # the newest of them counts
        stage.processed(FakeMessage("tx", 0, offset, timestamp=now - age))
    await stage.flush()
    assert 0.08 <= stage.newest_lag < 0.08 + 1.0  # the flush itself took under a second
    interval = stage.report()["flush_interval_ms"]
    assert interval == pytest.approx(1000 * min(0.1, max(0.02, LAG_SHARE * stage.newest_lag)), abs=0.01)

    stage.processed(FakeMessage("tx", 0, 3, timestamp=now - 60.0))  # far behind: the maximum
    await stage.flush()
    assert stage.report()["flush_interval_ms"] == 100.0
    stage.processed(FakeMessage("tx", 0, 4, timestamp=time.time()))  # caught up: back towards the base
    await stage.flush()
    assert stage.newest_lag < 1.0
    expected = 1000 * min(0.1, max(0.02, LAG_SHARE * stage.newest_lag))
    assert stage.report()["flush_interval_ms"] == pytest.approx(expected, abs=0.01)


# --- records taken directly from the fetch loop ------------------------------------------------


@pytest.fixture
def direct_stage(faust_app, recording, monkeypatch):
    """A stage of ``clicks`` taking records from its inbox; ``tracked``: what the consumer tracked."""
    tracked: list[int] = []
    consumer = SimpleNamespace(track_message=lambda message: tracked.append(message.offset))
    monkeypatch.setattr(type(faust_app), "consumer", property(lambda app: consumer))
    faust_app.flow_control.resume()
    faust_app.consumer_generation_id = 3

    async def make(**kwargs) -> BatchedStage:
        stage = BatchedStage(faust_app, "test", [], **kwargs)
        await stage.prepare([recording.topic("decisions")])
        stage.take_directly(["clicks"])
        stage.tracked = tracked  # type: ignore[attr-defined]
        return stage

    return make


async def _until(condition) -> None:
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_a_stage_taking_records_directly_handles_the_current_ones_in_order_and_tracks_them(
    faust_app, recording, direct_stage
):
    stage = await direct_stage()
    handled: list[int] = []
    for offset in range(3):
        stage.inbox.put(FakeMessage("clicks", 0, offset, generation_id=3))
    stage.inbox.put(FakeMessage("clicks", 0, 3, generation_id=2))  # fetched before the last rebalance
    running = asyncio.ensure_future(stage.run(None, lambda message: handled.append(message.offset)))
    await _until(lambda: stage.inbox.skipped == 1)
    faust_app.flow_control.suspend()  # a rebalance begins: what is taken now is skipped too
    stage.inbox.put(FakeMessage("clicks", 0, 4, generation_id=3))
    await _until(lambda: stage.inbox.skipped == 2)
    running.cancel()
    await stage.flush()

    assert handled == [0, 1, 2]
    assert stage.tracked == [0, 1, 2]  # type: ignore[attr-defined]
    assert [offset for step, offset in recording.log if step == "acked"] == [0, 1, 2]


async def test_a_stage_taking_a_large_batch_flushes_at_max_pending_and_lets_other_tasks_run(
    faust_app, recording, direct_stage
):
    stage = await direct_stage(max_pending=50)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    handled: list[tuple[int, int]] = []
    for offset in range(100):
        stage.inbox.put(FakeMessage("clicks", 0, offset, generation_id=3))
    running = asyncio.ensure_future(stage.run(None, lambda message: handled.append((message.offset, ticks))))
    await _until(lambda: len(handled) == 100)
    running.cancel()
    ticking.cancel()

    assert [offset for offset, _ in handled] == list(range(100))
    assert stage.counts["flushes"] == 2  # at 50 pending records, twice
    # The other task ran while the batch was handled, at least every 32 records (Inbox.records).
    ticks_every_32 = [ticked for _, ticked in handled[::32]]
    assert all(later > earlier for earlier, later in itertools.pairwise(ticks_every_32))


async def test_the_rest_of_a_batch_taken_before_the_inbox_is_cleared_is_skipped(
    faust_app, recording, direct_stage
):
    stage = await direct_stage()
    handled: list[int] = []

    def handle(message) -> None:
        handled.append(message.offset)
        if message.offset == 1:
            stage.inbox.clear()  # a rebalance or a recovery's seek while the batch is handled

    for offset in range(4):
        stage.inbox.put(FakeMessage("clicks", 0, offset, generation_id=3))
    running = asyncio.ensure_future(stage.run(None, handle))
    await _until(lambda: stage.inbox.skipped == 2)
    running.cancel()
    assert handled == [0, 1]
    assert stage.tracked == [0, 1]  # type: ignore[attr-defined]

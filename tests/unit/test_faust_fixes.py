"""app.faust_fixes without a broker: version guard, fingerprints, commit rule, drain loop, stream loops.

The consumer here is a real faust consumer of an app that is never started (nothing
connects); fetches are replaced by records built in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import faust
import faust.streams
import pytest
from faust.streams import Stream
from faust.transport._cython.conductor import ConductorHandler
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.types.enums import ProcessingGuarantee
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree

from app import faust_fixes
from app.faust_fixes import (
    FAUST_VERSION,
    LeanMonitor,
    _new_offset_after_every_fetched_offset,
    _Resumed,
    _unacked_fetched,
    ack_processed,
    changed_sources,
    check_faust_version,
)
from app.stages.inbox import Inbox

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARTITION = TP("transactions", 0)
GENERATION = 7


# --- version guard and fingerprints -------------------------------------------------------------


def test_the_installed_faust_is_the_one_the_patches_were_written_for():
    check_faust_version()  # what importing app.faust_fixes does


def test_another_faust_version_is_refused():
    with pytest.raises(RuntimeError, match=r"0\.15\.3.*0\.16\.0.*EDDY_ALLOW_UNTESTED_FAUST=1"):
        check_faust_version("0.16.0", environ={})


def test_the_override_runs_another_faust_version_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="app.faust_fixes"):
        check_faust_version("0.16.0", environ={"EDDY_ALLOW_UNTESTED_FAUST": "1"})
    assert "faust-streaming 0.16.0 is installed" in caplog.text
    with pytest.raises(RuntimeError):  # only "1" overrides
        check_faust_version("0.16.0", environ={"EDDY_ALLOW_UNTESTED_FAUST": "yes"})


def _import_with_faust_version(version: str, **env: str) -> subprocess.CompletedProcess:
    code = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        f"m.version = lambda name: {version!r} if name == 'faust-streaming' else real(name)\n"
        "import app.faust_app\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "EDDY_ALLOW_UNTESTED_FAUST"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_app_does_not_start_with_another_faust_version():
    refused = _import_with_faust_version("0.99.0")
    assert refused.returncode != 0
    assert "RuntimeError" in refused.stderr and "faust-streaming 0.99.0 is installed" in refused.stderr
    allowed = _import_with_faust_version("0.99.0", EDDY_ALLOW_UNTESTED_FAUST="1")
    assert allowed.returncode == 0, allowed.stderr


def test_every_patched_and_relied_upon_faust_source_is_unchanged():
    # Fails when faust changes a function patched here (or one the patches rely on): re-read the
    # new faust code, re-check the patch, then update the fingerprint and FAUST_VERSION.
    assert changed_sources() == {}, f"faust changed under the patches (faust {FAUST_VERSION} expected)"


def test_a_changed_original_is_detected(monkeypatch):
    name = "faust.transport.consumer:Consumer._drain_messages"
    monkeypatch.setitem(faust_fixes.PATCHED, name, "0" * 64)
    assert list(changed_sources()) == [name]


def test_the_patches_replace_exactly_the_fingerprinted_originals():
    assert set(faust_fixes._ORIGINALS) == set(faust_fixes.PATCHED)
    for owner, name, patch in faust_fixes._PATCHES:
        assert getattr(owner, name) is patch
        qualified = f"{owner.__module__}:{owner.__qualname__}.{name}"
        assert faust_fixes._ORIGINALS[qualified] is not patch
    assert not hasattr(faust_fixes, "_ack_unless_skipped_in_rebalance")  # deleted: see stream loop tests
    assert Consumer.ack is faust_fixes._original_ack


# --- an app that is never started ----------------------------------------------------------------


def make_app(**options) -> faust.App:
    app = faust.App(
        f"test-fixes-{uuid.uuid4().hex[:8]}",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        Monitor=LeanMonitor,
        **options,
    )
    app.sensors.add(app.monitor)
    app.flow_control.resume()
    app.topics._acking_topics.add(PARTITION.topic)
    app.consumer_generation_id = GENERATION
    return app


def message(offset: int, generation: int = GENERATION) -> ConsumerMessage:
    return ConsumerMessage(
        PARTITION.topic, 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, PARTITION, generation_id=generation
    )


def queued_event(app: faust.App, stream: Stream, offset: int, generation: int = GENERATION):
    msg = message(offset, generation)
    msg.refcount = 1  # what the conductor does when it hands the event to one stream
    _unacked_fetched(app.consumer).setdefault(PARTITION, set()).add(offset)  # what a fetch notes
    stream.channel.queue.force_put_nowait(app.create_event(b"k", offset, [], msg))
    return msg


async def until(condition, *, steps: int = 1000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# --- commit rule ---------------------------------------------------------------------------------


def consumer_state(*, unacked: set[int], acked: list[int], committed: int | None = None):
    """A stand-in with the fields faust's Consumer keeps per partition."""
    consumer = SimpleNamespace(
        app=SimpleNamespace(conf=SimpleNamespace(processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE)),
        _acked=defaultdict(list, {PARTITION: list(acked)}),
        _acked_index=defaultdict(set, {PARTITION: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {PARTITION: committed}),
    )
    _unacked_fetched(consumer)[PARTITION] = set(unacked)
    return consumer


def test_a_skipped_first_record_of_a_fresh_partition_holds_the_commit_back():
    consumer = consumer_state(unacked={0}, acked=[1, 2, 3])
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) is None


def test_a_skipped_record_at_the_committed_offset_holds_the_commit_back():
    consumer = consumer_state(unacked={10}, acked=[11, 12], committed=10)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) is None


def test_consecutive_acks_are_committed_up_to_the_first_hole_and_the_next_commit_follows():
    consumer = consumer_state(unacked=set(), acked=[0, 1, 2, 4])
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 3
    consumer._acked[PARTITION].append(3)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 5


def test_offsets_acked_inline_by_the_cython_loop_do_not_hold_the_commit_back():
    # The Cython loop acks without Consumer.ack: its offsets stay noted as fetched until a commit.
    consumer = consumer_state(unacked={0, 1, 2, 3}, acked=[0, 1, 2, 3])
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 4
    consumer._committed_offset[PARTITION] = 4
    consumer._acked[PARTITION].extend([5, 6])
    _unacked_fetched(consumer)[PARTITION].update({4, 5, 6})  # 4 was skipped
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) is None
    assert _unacked_fetched(consumer)[PARTITION] == {4, 5, 6}


def test_offsets_known_to_be_absent_count_as_processed():
    consumer = consumer_state(unacked=set(), acked=[5, 8])
    consumer._gap[PARTITION].addi(6, 8)  # 6 and 7 are not records (e.g. transaction markers)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 9


def test_a_fetched_record_marked_absent_still_holds_the_commit_back():
    # A stale record once jumped the read offset from 5 to 9: faust marked 6-8 absent, but 6
    # and 7 were fetched (they exist) and are not processed yet.
    consumer = consumer_state(unacked={6, 7}, acked=[5, 8])
    consumer._gap[PARTITION].addi(6, 9)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 6


class OrderedConsumer(SimpleNamespace):
    """A consumer stand-in for the hand-over order: read offsets as a seek left them, fetched
    offsets, a clock the test moves, and its seeks noted."""

    def __init__(self, monkeypatch, *, committed: int, fetched: set[int]) -> None:
        super().__init__(
            flow_active=True,
            app=SimpleNamespace(rebalancing=False),
            _read_offset={PARTITION: committed},
            _committed_offset={PARTITION: committed},
            _acked=defaultdict(list),
            _gap=defaultdict(IntervalTree),
            _is_changelog_tp=lambda tp: False,
            _eddy_seeks=1,
            seeks=[],
            clock=[100.0],
        )
        _unacked_fetched(self)[PARTITION] = set(fetched)
        monkeypatch.setattr(faust_fixes, "monotonic", lambda: self.clock[0])

    async def perform_seek(self):
        self.seeks.append("seek")

    def seek_done(self, committed: int) -> None:
        """What the one-step seek leaves: a new count and the read offsets at the committed ones."""
        self._eddy_seeks += 1
        self._read_offset[PARTITION] = committed


async def hand_over(order, consumer, offsets) -> list[int]:
    handed = [offset for offset in offsets if order.may_hand_over(PARTITION, offset)]
    await asyncio.sleep(0)
    return handed


async def check_after(order, consumer, seconds: float) -> list[str]:
    consumer.clock[0] += seconds
    order.check_stalled()
    await asyncio.sleep(0)
    return consumer.seeks


async def test_records_handed_over_in_order_from_the_committed_offset_need_no_seek(monkeypatch):
    consumer = OrderedConsumer(monkeypatch, committed=4, fetched={4, 5, 6})
    order = faust_fixes._HandOverOrder(consumer)
    assert await hand_over(order, consumer, [4, 5, 6]) == [4, 5, 6]
    assert await check_after(order, consumer, 60) == []


async def test_a_record_past_fetched_records_never_handed_over_is_held_and_they_are_fetched_again(
    monkeypatch, caplog
):
    # Seen at a worker's first assignment: 449..486 fetched and skipped, 487.. handed over.
    consumer = OrderedConsumer(monkeypatch, committed=449, fetched={449, 450, 487, 488})
    order = faust_fixes._HandOverOrder(consumer)
    assert await hand_over(order, consumer, [487, 488]) == []
    assert consumer.seeks == ["seek"]
    assert "[0]@449 was fetched and never handed over (@487 was about to be handed over" in caplog.text
    consumer.seek_done(449)  # fetched again from the committed offset
    assert await hand_over(order, consumer, [449, 450, 487, 488]) == [449, 450, 487, 488]
    assert consumer.seeks == ["seek"]


async def test_offsets_never_fetched_are_a_legitimate_gap(monkeypatch):
    # Transaction markers of an upstream transactional producer take offsets no record has.
    consumer = OrderedConsumer(monkeypatch, committed=10, fetched={10, 12, 13})
    order = faust_fixes._HandOverOrder(consumer)
    assert await hand_over(order, consumer, [10, 12, 13]) == [10, 12, 13]
    assert consumer.seeks == []


async def test_a_skipped_record_at_the_tail_of_a_partition_is_fetched_again(monkeypatch):
    # Fetched while a rebalance was under way, skipped, and no seek came after.
    consumer = OrderedConsumer(monkeypatch, committed=7, fetched={7, 8})
    order = faust_fixes._HandOverOrder(consumer)
    assert await check_after(order, consumer, 0) == []
    assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE - 1) == []
    assert await check_after(order, consumer, 1) == ["seek"]
    assert await check_after(order, consumer, 60) == ["seek"]  # one seek, then it waits for it
    assert await hand_over(order, consumer, [7]) == []


async def test_records_handed_over_and_waiting_for_the_broker_are_not_fetched_again(monkeypatch):
    # The broker is away: a stage holds 7 and 8, processed but not durable, so not acked.
    consumer = OrderedConsumer(monkeypatch, committed=7, fetched={7, 8})
    order = faust_fixes._HandOverOrder(consumer)
    assert await hand_over(order, consumer, [7, 8]) == [7, 8]
    assert await check_after(order, consumer, 0) == []
    assert await check_after(order, consumer, 600) == []


async def test_records_handed_over_and_lost_before_their_stream_took_them_are_fetched_again(
    monkeypatch, caplog
):
    # Seen when recovery cleared the stream queues after its seek: 400 and 401 were handed over
    # and never processed, while 402.. were; the commit waited at 400 for good.
    consumer = OrderedConsumer(monkeypatch, committed=400, fetched=set(range(400, 406)))
    order = faust_fixes._HandOverOrder(consumer)
    assert await hand_over(order, consumer, range(400, 406)) == list(range(400, 406))
    consumer._acked[PARTITION] = [402, 403, 404, 405]
    _unacked_fetched(consumer)[PARTITION] = {400, 401}
    assert await check_after(order, consumer, 0) == []
    assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE - 1) == []
    assert await check_after(order, consumer, 1) == ["seek"]
    assert "[0]@400 was never processed (the commit waited 10 s for it" in caplog.text


async def test_a_commit_waiting_at_the_committed_offset_behind_processed_records_fetches_it_again(
    monkeypatch,
):
    consumer = OrderedConsumer(monkeypatch, committed=400, fetched=set())
    order = faust_fixes._HandOverOrder(consumer)
    consumer._acked[PARTITION] = [418, 419]
    assert await check_after(order, consumer, 0) == []
    assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE) == ["seek"]


async def test_a_commit_that_still_waits_for_the_same_record_after_fetching_it_again_is_left(
    monkeypatch, caplog
):
    consumer = OrderedConsumer(monkeypatch, committed=400, fetched=set())
    order = faust_fixes._HandOverOrder(consumer)
    consumer._acked[PARTITION] = [418, 419]
    await check_after(order, consumer, 0)
    assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE) == ["seek"]
    consumer.seek_done(400)
    for _ in range(3):
        await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE)
    assert consumer.seeks == ["seek"]
    assert caplog.text.count("the commit still waits for @400 after it was fetched again") == 1


async def test_a_commit_that_can_move_is_not_a_wait(monkeypatch):
    consumer = OrderedConsumer(monkeypatch, committed=10, fetched=set())
    order = faust_fixes._HandOverOrder(consumer)
    consumer._acked[PARTITION] = [11, 12]  # faust commits past one offset: a transaction marker
    assert await check_after(order, consumer, 0) == []
    assert await check_after(order, consumer, 60) == []
    consumer._committed_offset[PARTITION] = 12
    consumer._acked[PARTITION] = [16, 17]
    consumer._gap[PARTITION].addi(13, 16)  # faust found 13..15 absent
    assert await check_after(order, consumer, 60) == []
    assert await check_after(order, consumer, 60) == []


async def test_a_partition_that_makes_progress_is_not_fetched_again(monkeypatch):
    consumer = OrderedConsumer(monkeypatch, committed=4, fetched=set(range(4, 100)))
    order = faust_fixes._HandOverOrder(consumer)
    for offset in range(4, 40):  # slow, but moving
        assert await hand_over(order, consumer, [offset]) == [offset]
        assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE - 1) == []


async def test_no_record_is_fetched_again_during_a_rebalance(monkeypatch):
    consumer = OrderedConsumer(monkeypatch, committed=4, fetched={4})
    order = faust_fixes._HandOverOrder(consumer)
    assert await check_after(order, consumer, 0) == []
    consumer.flow_active = False
    assert await check_after(order, consumer, 60) == []
    consumer.flow_active = True
    assert await check_after(order, consumer, 1) == []  # patience starts again after it
    assert await check_after(order, consumer, faust_fixes.SKIPPED_PATIENCE) == ["seek"]


def test_under_exactly_once_faust_own_rule_is_kept():
    consumer = consumer_state(unacked={0}, acked=[1, 2])
    consumer.app.conf.processing_guarantee = ProcessingGuarantee.EXACTLY_ONCE
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 3


def test_records_below_the_committed_offset_no_longer_hold_the_commit_back():
    # Fetched here before a rebalance, processed and committed by another worker since.
    consumer = consumer_state(unacked={10, 20}, acked=[50, 51], committed=50)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 52
    assert _unacked_fetched(consumer)[PARTITION] == set()


# --- fetched offsets and the seek back -------------------------------------------------------------


def fetched_record(offset: int, topic: str = PARTITION.topic) -> SimpleNamespace:
    """What aiokafka hands faust's driver for one fetched record."""
    fields = ("timestamp", "timestamp_type", "headers", "key", "value", "checksum")
    return SimpleNamespace(
        topic=topic,
        partition=0,
        offset=offset,
        serialized_key_size=1,
        serialized_value_size=1,
        **dict.fromkeys(fields),
    )


async def test_records_fetched_for_acking_streams_are_noted_until_revoked(monkeypatch):
    app = make_app()
    consumer = app.consumer
    converted = consumer._to_message(PARTITION, fetched_record(3))
    assert converted.offset == 3 and converted.generation_id == GENERATION
    other = TP("not-acked", 0)
    consumer._to_message(other, fetched_record(4, topic=other.topic))
    assert _unacked_fetched(consumer) == {PARTITION: {3}}

    committed_before_faust_forgets = []

    async def faust_revoke(self, revoked):
        # faust's handler commits too: the guard against unprocessed records is still there.
        committed_before_faust_forgets.append((list(committed), dict(_unacked_fetched(consumer))))

    committed = []

    async def force_commit(topics=None, start_new_transaction=True):
        acked = consumer._acked[PARTITION]
        committed.append((set(topics), list(acked)))
        acked.clear()
        if len(committed) == 1:
            acked.append(4)  # a stage acked another record while the commit was on the wire
        return True

    consumer._acked[PARTITION].append(2)
    monkeypatch.setattr(consumer, "force_commit", force_commit)
    monkeypatch.setattr(faust_fixes, "_original_on_partitions_revoked", faust_revoke)
    await consumer.on_partitions_revoked({PARTITION})
    expected_commits = [({PARTITION}, [2]), ({PARTITION}, [4])]
    assert committed_before_faust_forgets == [(expected_commits, {PARTITION: {3}})]
    assert _unacked_fetched(consumer) == {}


async def test_acks_the_revoke_handler_could_not_commit_are_forgotten_with_the_partition(monkeypatch):
    # Seen in a scaling drill: 449..486 were skipped, 487..598 processed and acked; the
    # revoke's commits held back at the hole, and the acks stayed.  The worker got the
    # partition again and was stopped during recovery, before any seek: its last commit
    # started the run of acks at 487 (no committed offset known) and committed 599.
    app = make_app()
    consumer = app.consumer
    for offset in range(449, 452):
        consumer._to_message(PARTITION, fetched_record(offset))

    async def faust_revoke(self, revoked):
        for tp in revoked:  # faust forgets first, then its handler flushes the stages
            consumer._acked.pop(tp, None)
            consumer._committed_offset.pop(tp, None)
        consumer._acked[PARTITION].extend([450, 451])
        assert consumer._new_offset(PARTITION) is None  # the hole at 449 holds it back

    async def force_commit(topics=None, start_new_transaction=True):
        return False

    monkeypatch.setattr(consumer, "force_commit", force_commit)
    monkeypatch.setattr(faust_fixes, "_original_on_partitions_revoked", faust_revoke)
    await consumer.on_partitions_revoked({PARTITION})
    assert PARTITION not in consumer._acked and PARTITION not in _unacked_fetched(consumer)
    assert consumer._new_offset(PARTITION) is None  # the next commit, before any seek


def test_an_ack_of_a_record_fetched_before_the_partitions_moved_is_not_counted():
    app = make_app()
    consumer = app.consumer
    old = message(7, generation=GENERATION - 1)
    consumer.track_message(old)
    ack_processed(consumer, old)
    assert old.acked and old not in consumer._unacked_messages  # the revoke handler does not wait for it
    assert consumer._acked[PARTITION] == [] and consumer._new_offset(PARTITION) is None


class FakeFetcher:
    def __init__(self) -> None:
        self.sought, self.reset, self.events = {}, [], []

    def seek_to(self, tp, offset) -> None:
        self.sought[tp] = offset
        self.events.append("seek")

    def request_offset_reset(self, tps, strategy):
        self.reset.extend(tps)
        self.events.append("reset")
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeAIOKafkaConsumer:
    def __init__(self, committed: dict, assigned: set) -> None:
        self._committed, self.assigned = committed, assigned
        self._fetcher = FakeFetcher()
        self._request_timeout_ms = 1000
        unassigned = asyncio.get_event_loop_policy().get_event_loop().create_future()
        self._subscription = SimpleNamespace(
            subscription=SimpleNamespace(assignment=SimpleNamespace(unassign_future=unassigned))
        )

    async def committed(self, tp):
        self._fetcher.events.append("committed")
        await asyncio.sleep(0)  # a broker round trip
        return self._committed[tp]

    def assignment(self) -> set:
        return self.assigned


def consumer_thread(aiokafka_consumer: FakeAIOKafkaConsumer, reset: str = "earliest"):
    async def call_thread(fn, *args):
        return await fn(*args)

    return SimpleNamespace(
        app=SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset=reset)),
        consumer=SimpleNamespace(
            _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"), _read_offset={}
        ),
        _ensure_consumer=lambda: aiokafka_consumer,
        call_thread=call_thread,
    )


async def test_partitions_without_a_committed_offset_are_sought_to_the_beginning():
    fresh, zero, committed = TP("t", 0), TP("t", 1), TP("t", 2)
    changelog = TP("t-changelog", 0)
    offsets = {fresh: None, zero: 0, committed: 5, changelog: None}
    aiokafka_consumer = FakeAIOKafkaConsumer(offsets, assigned={fresh, zero, committed, changelog})
    thread = consumer_thread(aiokafka_consumer)
    assert await faust_fixes._seek_to_committed_or_beginning(thread) == offsets
    assert sorted(aiokafka_consumer._fetcher.reset) == [fresh, zero]
    assert aiokafka_consumer._fetcher.sought == {committed: 5}
    # The read offsets move in the same step (faust's perform_seek sets the same values later).
    assert thread.consumer._read_offset == {fresh: None, zero: 0, committed: 5}


async def test_every_partition_moves_in_one_counted_step_after_all_committed_offsets_are_read():
    partitions = {TP("t", p): 10 * p for p in range(4)}
    aiokafka_consumer = FakeAIOKafkaConsumer(partitions, assigned=set(partitions))
    thread = consumer_thread(aiokafka_consumer)
    await faust_fixes._seek_to_committed_or_beginning(thread)
    events = aiokafka_consumer._fetcher.events
    assert events == ["committed"] * 4 + ["seek"] * 3 + ["reset"]
    assert faust_fixes._seeks(thread.consumer) == 1


async def test_a_partition_revoked_while_offsets_are_read_is_not_sought():
    kept, revoked = TP("t", 0), TP("t", 1)
    aiokafka_consumer = FakeAIOKafkaConsumer({kept: 3, revoked: 4}, assigned={kept, revoked})
    original_committed = aiokafka_consumer.committed

    async def committed_then_revoked(tp):
        offset = await original_committed(tp)
        aiokafka_consumer.assigned = {kept}
        return offset

    aiokafka_consumer.committed = committed_then_revoked
    await faust_fixes._seek_to_committed_or_beginning(consumer_thread(aiokafka_consumer))
    assert aiokafka_consumer._fetcher.sought == {kept: 3}


async def test_with_auto_offset_reset_latest_nothing_is_sought_to_the_beginning():
    aiokafka_consumer = FakeAIOKafkaConsumer({TP("t", 0): None}, assigned={TP("t", 0)})
    await faust_fixes._seek_to_committed_or_beginning(consumer_thread(aiokafka_consumer, reset="latest"))
    assert aiokafka_consumer._fetcher.reset == []


async def test_a_fetched_batch_notes_the_seek_count_of_its_moment():
    consumer = SimpleNamespace(_eddy_seeks=3)
    thread = SimpleNamespace(consumer=consumer, app=SimpleNamespace(consumer_generation_id=GENERATION))

    async def fetch(self, consumer_, active_partitions, timeout=None, max_records=None):
        return {"records": active_partitions}

    original = faust_fixes._original_fetch_records
    faust_fixes._original_fetch_records = fetch
    try:
        records = await faust_fixes._fetch_records_counted(thread, None, {PARTITION}, timeout=1.0)
    finally:
        faust_fixes._original_fetch_records = original
    assert records == {"records": {PARTITION}}
    assert faust_fixes._batch_seeks(consumer) == 3


async def test_a_fetch_that_outlived_a_rebalance_hands_out_nothing_and_moves_back():
    consumer = SimpleNamespace(_eddy_seeks=3, _eddy_batch_seeks=2)
    app = SimpleNamespace(consumer_generation_id=GENERATION)
    thread = SimpleNamespace(consumer=consumer, app=app)
    kept, gone = TP("t", 0), TP("t", 1)
    aiokafka_consumer = FakeAIOKafkaConsumer({}, assigned={kept})

    async def fetch_across_a_rebalance(self, consumer_, active_partitions, timeout=None, max_records=None):
        app.consumer_generation_id = GENERATION + 1  # the listener, in the consumer thread
        return {
            kept: [SimpleNamespace(offset=40), SimpleNamespace(offset=41)],
            gone: [SimpleNamespace(offset=7)],
        }

    original = faust_fixes._original_fetch_records
    faust_fixes._original_fetch_records = fetch_across_a_rebalance
    try:
        records = await faust_fixes._fetch_records_counted(thread, aiokafka_consumer, {kept, gone})
    finally:
        faust_fixes._original_fetch_records = original
    assert records == {}
    assert aiokafka_consumer._fetcher.sought == {kept: 40}  # fetched again by whoever gets them
    assert faust_fixes._batch_seeks(consumer) == 2  # the current batch's note is left alone


# --- skipped events are never acked --------------------------------------------------------------


@pytest.mark.parametrize("cython_optimizations", [False, True])
async def test_the_stream_loop_acks_processed_events_and_never_a_skipped_one(cython_optimizations):
    app = make_app(cython_optimizations=cython_optimizations)
    consumer = app.consumer
    stream = app.stream(app.channel())
    assert stream.__aiter__().ag_code.co_name == "_c_aiter"
    queued_event(app, stream, 0, generation=GENERATION - 1)  # fetched before the last rebalance
    queued_event(app, stream, 1)
    skipped_in_rebalance = None
    seen = []

    async def agent():
        nonlocal skipped_in_rebalance
        async for event in stream.events():
            seen.append(event.message.offset)
            if event.message.offset == 1:
                app.flow_control.suspend()  # a rebalance starts while the agent holds offset 1
                skipped_in_rebalance = queued_event(app, stream, 2)
            if event.message.offset == 3:
                return

    agent_task = asyncio.ensure_future(agent())
    await until(lambda: skipped_in_rebalance is not None and stream.channel.queue.empty())
    await asyncio.sleep(0)
    # Offset 1 was processed: acked although flow is suspended (what wait_empty waits for).
    assert consumer._acked[PARTITION] == [1]
    app.flow_control.resume()  # the rebalance is over
    queued_event(app, stream, 3)
    await asyncio.wait_for(agent_task, 5)

    assert seen == [1, 3]
    assert consumer._acked[PARTITION] == [1]  # 3 is acked when the agent asks for the next event
    assert not skipped_in_rebalance.acked and skipped_in_rebalance not in consumer._unacked_messages
    # Neither skipped record can be committed over: the commit stops before offset 0.
    assert consumer._new_offset(PARTITION) is None


async def test_faust_pure_python_loop_acks_skipped_events_so_it_is_not_used():
    # If this fails, faust stopped acking skipped events in Stream._py_aiter: the Cython-only
    # rule (_stream_aiter_cython_loop, require_cython_stream_loop) may go.
    app = make_app()
    stream = app.stream(app.channel())
    stale = queued_event(app, stream, 0, generation=GENERATION - 1)
    queued_event(app, stream, 1)
    async for value in stream._py_aiter():
        assert value == 1  # the event's value is its offset
        break
    assert stale.acked and app.consumer._acked[PARTITION] == [0]


def test_without_the_cython_stream_loop_the_app_refuses_to_start(monkeypatch):
    monkeypatch.setattr(faust.streams, "_CStreamIterator", None)
    with pytest.raises(RuntimeError, match="Cython stream loop is unavailable"):
        faust_fixes.apply()


# --- ack_processed ---------------------------------------------------------------------------------


def fetched_and_tracked(app: faust.App, offset: int) -> ConsumerMessage:
    msg = message(offset)
    _unacked_fetched(app.consumer).setdefault(PARTITION, set()).add(offset)
    app.consumer.track_message(msg)
    return msg


def test_ack_processed_acks_during_a_rebalance_and_lets_the_commit_pass():
    app = make_app()
    consumer = app.consumer
    first, second = fetched_and_tracked(app, 0), fetched_and_tracked(app, 1)
    app.flow_control.suspend()
    consumer.stop_flow()
    ack_processed(consumer, first)
    ack_processed(consumer, first)  # a second ack changes nothing
    assert first.acked and consumer._acked[PARTITION] == [0]
    assert _unacked_fetched(consumer)[PARTITION] == {1}
    assert first not in consumer._unacked_messages and second in consumer._unacked_messages
    assert consumer._new_offset(PARTITION) == 1


def test_ack_processed_of_an_older_message_keeps_the_commit_rule_consistent():
    app = make_app()
    consumer = app.consumer
    messages = [fetched_and_tracked(app, offset) for offset in range(3)]
    ack_processed(consumer, messages[2])
    assert consumer._new_offset(PARTITION) is None  # 0 and 1 are not processed yet
    ack_processed(consumer, messages[0])
    ack_processed(consumer, messages[1])
    assert consumer._new_offset(PARTITION) == 3


async def test_the_revoke_handlers_wait_for_in_flight_messages_ends_with_ack_processed(monkeypatch):
    app = make_app()
    consumer = app.consumer
    commits = []

    async def commit(*args, **kwargs):
        commits.append(consumer._new_offset(PARTITION))
        return False

    monkeypatch.setattr(consumer, "commit", commit)
    in_flight = fetched_and_tracked(app, 0)
    app.flow_control.suspend()
    consumer.stop_flow()
    waiting = asyncio.ensure_future(consumer.wait_empty())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    ack_processed(consumer, in_flight)
    await asyncio.wait_for(waiting, 0.5)  # woken by the ack, not by its 1 s timeout
    assert 1 in commits


# --- the drain loop --------------------------------------------------------------------------------


class Drain:
    """The patched drain loop of a never-started consumer over records built in memory."""

    def __init__(self, app: faust.App, offsets, callback, after_yield=None) -> None:
        self.app = app
        self.consumer = app.consumer
        self.consumer._commit_every = None
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.wait_first_calls = 0
        self.consumer.callback = callback
        offsets = list(offsets)

        async def getmany(timeout: float):
            self.fetcher._stopped.set()  # one batch
            self.consumer._eddy_batch_seeks = faust_fixes._seeks(self.consumer)  # _fetch_records_counted
            for offset in offsets:
                yield PARTITION, message(offset)
                if after_yield is not None:
                    after_yield(offset)  # runs once the drain loop asks for the next record

        original_wait_first = self.consumer.wait_first

        async def wait_first(*coros, **kwargs):
            self.wait_first_calls += 1
            return await original_wait_first(*coros, **kwargs)

        self.consumer.getmany = getmany
        self.consumer.wait_first = wait_first

    def start(self) -> asyncio.Future:
        return asyncio.ensure_future(
            faust_fixes._drain_messages_awaiting_directly(self.consumer, self.fetcher)
        )


async def test_records_that_do_not_block_are_handed_over_without_tasks():
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    drain = Drain(make_app(), range(250), callback)
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == list(range(250))
    assert drain.wait_first_calls == 0
    assert drain.consumer._read_offset[PARTITION] == 249


async def test_a_hand_over_that_blocks_continues_as_a_task_and_keeps_the_order():
    delivered = []
    unblock = asyncio.Event()

    async def callback(msg):
        if msg.offset == 1:
            await unblock.wait()
        delivered.append(msg.offset)

    drain = Drain(make_app(), range(4), callback)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    await asyncio.sleep(0.01)
    assert delivered == [0] and not draining.done()
    unblock.set()
    await asyncio.wait_for(draining, 5)
    assert delivered == [0, 1, 2, 3]
    assert drain.wait_first_calls == 1


async def test_a_rebalance_interrupts_a_blocked_hand_over():
    events = []

    async def callback(msg):
        try:
            if msg.offset == 1:
                await asyncio.get_running_loop().create_future()  # blocks until cancelled
            events.append(("delivered", msg.offset))
        except asyncio.CancelledError:
            events.append(("cancelled", msg.offset))
            raise

    app = make_app()
    drain = Drain(app, range(3), callback)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    app.consumer.stop_flow()  # what the revoke handler does first
    await asyncio.wait_for(draining, 5)
    # Offset 2 arrives with flow suspended: not handed over; neither moves the read offset, so
    # both are read again after the rebalance's seek to the committed offset.
    assert events == [("delivered", 0), ("cancelled", 1)]
    assert drain.wait_first_calls == 1
    assert drain.consumer._read_offset[PARTITION] == 0


async def test_records_fetched_for_an_earlier_assignment_are_not_handed_over_nor_read():
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()
    drain = Drain(app, range(3), callback)
    app.consumer_generation_id = GENERATION + 1  # a rebalance happened after the fetch
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == [] and drain.consumer._read_offset[PARTITION] is None


def inbox_drain(offsets, callback=None, maxsize: int = 4_096, generation: int = GENERATION):
    """A drain loop over ``offsets`` whose topic is handed over directly to a new inbox."""
    app = make_app()
    inbox = Inbox(app, maxsize=maxsize)
    faust_fixes.hand_over_directly(app, [PARTITION.topic], inbox)
    drain = Drain(app, offsets, callback)
    app.consumer_generation_id = generation
    return app, inbox, drain


async def test_records_of_a_topic_handed_over_directly_go_to_its_inbox_in_order_without_the_conductor():
    conducted = []

    async def callback(msg):
        conducted.append(msg.offset)

    _, inbox, drain = inbox_drain(range(250), callback)
    await asyncio.wait_for(drain.start(), 5)
    assert [message.offset for message in await inbox.take()] == list(range(250))
    assert conducted == [] and drain.wait_first_calls == 0
    assert drain.consumer._read_offset[PARTITION] == 249


async def test_a_full_inbox_holds_the_drain_until_its_agent_takes_the_records():
    _, inbox, drain = inbox_drain(range(5), maxsize=2)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    await asyncio.sleep(0.01)
    assert len(inbox) == 2 and not draining.done()
    taken = [message.offset for message in await inbox.take()]
    await until(lambda: drain.wait_first_calls == 2)
    taken += [message.offset for message in await inbox.take()]
    await asyncio.wait_for(draining, 5)
    taken += [message.offset for message in await inbox.take()]
    assert taken == [0, 1, 2, 3, 4]


async def test_a_rebalance_interrupts_a_drain_waiting_for_room_and_clears_the_inbox():
    app, inbox, drain = inbox_drain(range(4), maxsize=2)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    app.consumer.stop_flow()  # what the revoke handler does, then:
    app.flow_control.suspend()
    app.flow_control.clear()
    await asyncio.wait_for(draining, 5)
    # Offsets 0 and 1 were put and cleared, 2 and 3 arrive with flow suspended: all are read
    # again from the committed offset after the rebalance.
    assert len(inbox) == 0 and inbox.cleared == 2
    assert drain.consumer._read_offset[PARTITION] == 1


async def test_records_fetched_for_an_earlier_assignment_are_not_put_in_an_inbox():
    # A rebalance happened after the fetch.
    _, inbox, drain = inbox_drain(range(3), generation=GENERATION + 1)
    await asyncio.wait_for(drain.start(), 5)
    assert len(inbox) == 0 and drain.consumer._read_offset[PARTITION] is None


def test_a_topic_is_handed_over_to_one_inbox_only():
    app = make_app()
    faust_fixes.hand_over_directly(app, [PARTITION.topic], Inbox(app))
    with pytest.raises(ValueError, match="another inbox"):
        faust_fixes.hand_over_directly(app, [PARTITION.topic], Inbox(app))


def test_resuming_flow_clears_an_inbox_as_it_clears_the_stream_queues():
    app = make_app()
    inbox = Inbox(app)
    faust_fixes.hand_over_directly(app, [PARTITION.topic], inbox)
    inbox.put(message(0))
    app.flow_control.suspend()
    app.flow_control.resume()
    assert len(inbox) == 0 and inbox.cleared == 1


def seek_in_the_consumer_thread(consumer) -> None:
    """What _seek_in_one_step does to the count when the consumer thread moves the positions."""
    consumer._eddy_seeks = faust_fixes._seeks(consumer) + 1


async def test_records_fetched_before_a_seek_are_not_handed_over_nor_read_after_it():
    # faust resumes fetching before it seeks back to the committed offsets: the rest of a
    # batch fetched from the old position must not be handed over once a seek ran.
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()

    def a_seek_runs_after_offset_1(offset):
        if offset == 1:
            seek_in_the_consumer_thread(app.consumer)

    drain = Drain(app, range(5), callback, after_yield=a_seek_runs_after_offset_1)
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == [0, 1]
    assert drain.consumer._read_offset[PARTITION] == 1
    assert not drain.consumer._gap[PARTITION]


async def test_the_drain_loop_hands_over_nothing_past_fetched_records_it_never_handed_over():
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()
    seeks = []

    async def perform_seek():
        seeks.append("seek")

    app.consumer.perform_seek = perform_seek
    app.consumer._read_offset[PARTITION] = 3  # as the last seek left it: the committed offset
    _unacked_fetched(app.consumer)[PARTITION] = {3, 4, 5, 6, 9, 10}  # 5 and 6 were skipped
    drain = Drain(app, [3, 4, 9, 10], callback)
    await asyncio.wait_for(drain.start(), 5)
    await asyncio.sleep(0)
    assert delivered == [3, 4] and seeks == ["seek"]


async def test_records_fetched_again_after_a_seek_are_handed_over_in_order():
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()
    app.consumer.perform_seek = None  # would fail if called

    sought = []

    def a_seek_and_a_fetch_from_the_new_position_after_offset_2(offset):
        if offset == 2 and not sought:
            sought.append(offset)
            seek_in_the_consumer_thread(app.consumer)
            app.consumer._read_offset[PARTITION] = 1  # the committed offset: 1 and 2 come again
            app.consumer._eddy_batch_seeks = faust_fixes._seeks(app.consumer)

    _unacked_fetched(app.consumer)[PARTITION] = {0, 1, 2}
    drain = Drain(
        app, [0, 1, 2, 1, 2, 3], callback, after_yield=a_seek_and_a_fetch_from_the_new_position_after_offset_2
    )
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == [0, 1, 2, 1, 2, 3]


async def test_changelog_records_fetched_before_a_seek_are_still_handed_over():
    # The seek moves stream partitions only: a standby's changelog records are not fetched again.
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()
    app.consumer._is_changelog_tp = lambda tp: True

    def a_seek_runs_after_offset_1(offset):
        if offset == 1:
            seek_in_the_consumer_thread(app.consumer)

    drain = Drain(app, range(4), callback, after_yield=a_seek_runs_after_offset_1)
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == [0, 1, 2, 3]


async def test_a_batch_fetched_after_a_seek_is_handed_over():
    delivered = []

    async def callback(msg):
        delivered.append(msg.offset)

    app = make_app()
    seek_in_the_consumer_thread(app.consumer)
    drain = Drain(app, range(3), callback)  # its batch notes the count, as _fetch_records does
    await asyncio.wait_for(drain.start(), 5)
    assert delivered == [0, 1, 2]


async def test_a_hand_over_that_waits_across_a_seek_does_not_move_the_read_offset():
    delivered = []
    unblock = asyncio.Event()

    async def callback(msg):
        if msg.offset == 1:
            await unblock.wait()
        delivered.append(msg.offset)

    app = make_app()
    drain = Drain(app, range(3), callback)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    seek_in_the_consumer_thread(app.consumer)
    unblock.set()
    await asyncio.wait_for(draining, 5)
    assert delivered == [0, 1]  # 1 reached the stream (which skips stale events); 2 did not
    assert drain.consumer._read_offset[PARTITION] == 0


async def test_an_error_in_the_hand_over_propagates_as_in_faust():
    async def callback(msg):
        raise ValueError(f"bad record {msg.offset}")

    drain = Drain(make_app(), range(3), callback)
    with pytest.raises(ValueError, match="bad record 0"):
        await asyncio.wait_for(drain.start(), 5)


def full_stream_queue_behind_the_conductor(app: faust.App) -> Stream:
    stream = app.stream(app.channel(maxsize=2))
    app.topics._tp_to_callback[PARTITION] = ConductorHandler(app.topics, PARTITION, {stream.channel})
    return stream


def revoke(app: faust.App) -> None:
    """What App._on_partitions_revoked does before it waits for in-flight events."""
    app.consumer.stop_flow()
    app.flow_control.suspend()
    app.flow_control.clear()


async def test_a_revoke_unblocks_a_hand_over_waiting_on_a_full_stream_queue():
    app = make_app()
    stream = full_stream_queue_behind_the_conductor(app)
    queue = stream.channel.queue
    drain = Drain(app, range(5), app.topics.on_message)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1 and queue._putters)  # offset 2 waits for room
    assert queue.qsize() == 2
    revoke(app)
    await asyncio.wait_for(draining, 5)
    await asyncio.sleep(0.01)
    assert queue.empty()  # nothing reached the stream after the clear
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()] == []


async def test_a_hand_over_that_outlives_a_rebalance_is_skipped_by_the_stream_unacked():
    # faust's conductor puts into a full queue from a task of its own, which a revoke does not
    # cancel when it has not reached the queue yet: the record lands after the rebalance.
    app = make_app(cython_optimizations=True)
    stream = full_stream_queue_behind_the_conductor(app)
    queue = stream.channel.queue
    drain = Drain(app, range(3), app.topics.on_message)
    draining = drain.start()
    await until(lambda: drain.wait_first_calls == 1)
    revoke(app)
    await asyncio.wait_for(draining, 5)
    app.consumer_generation_id += 1  # the rebalance completes
    app.flow_control.resume()
    app.consumer.resume_flow()
    await until(lambda: queue.qsize() == 1)  # offset 2, from before the rebalance
    queued_event(app, stream, 10, generation=app.consumer_generation_id)

    async def next_offset() -> int:
        async for event in stream.events():
            return event.message.offset

    assert await asyncio.wait_for(next_offset(), 5) == 10  # offset 2 was skipped
    assert app.consumer._acked[PARTITION] == []


async def test_a_resumed_hand_over_cancelled_before_its_first_step_is_cancelled_where_it_waits():
    waited = asyncio.get_running_loop().create_future()
    cleanup = []

    async def hand_over():
        try:
            await waited
        except asyncio.CancelledError:
            cleanup.append("cancelled at its await")
            raise

    coro = hand_over()
    yielded = coro.send(None)
    assert yielded is waited
    task = asyncio.ensure_future(_Resumed(coro, yielded))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleanup == ["cancelled at its await"]


async def test_a_resumed_hand_over_returns_the_result_as_a_task_or_awaited():
    loop = asyncio.get_running_loop()

    async def hand_over(waited):
        await asyncio.sleep(0)
        return await waited + 1

    for run in (asyncio.ensure_future, lambda resumed: resumed):
        waited = loop.create_future()
        coro = hand_over(waited)
        resumed = run(_Resumed(coro, coro.send(None)))  # stopped at its sleep(0)
        loop.call_later(0.01, waited.set_result, 41)
        assert await resumed == 42


# --- the lean monitor --------------------------------------------------------------------------------


def test_the_app_uses_the_lean_monitor_and_the_cython_fast_paths():
    from app.faust_app import app

    assert isinstance(app.monitor, LeanMonitor)
    assert app.conf.cython_optimizations is True


def test_the_lean_monitor_keeps_what_faust_reads_and_the_totals():
    monitor = LeanMonitor()
    msg = message(5)
    monitor.on_message_in(PARTITION, 5, msg)
    state = monitor.on_stream_event_in(PARTITION, 5, stream=None, event=None)
    monitor.on_stream_event_out(PARTITION, 5, None, None, state)
    monitor.on_message_out(PARTITION, 5, msg)
    monitor.on_send_initiated(None, "out", None, 1, 1)
    assert state is None
    assert PARTITION in monitor.stream_inbound_time  # faust's livelock detector reads it
    assert (monitor.messages_received_total, monitor.events_total, monitor.messages_sent) == (1, 1, 1)
    assert monitor.tp_read_offsets == {PARTITION: 5}
    assert monitor.asdict()["events_total"] == 1


def _thread_with_partition_state(state) -> SimpleNamespace:
    assignment = SimpleNamespace(state_value=lambda tp: state)
    subscriptions = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
    return SimpleNamespace(_ensure_consumer=lambda: consumer)


@pytest.mark.parametrize(
    ("state", "checked"),
    [
        (SimpleNamespace(has_valid_position=False), False),  # just sought: no position, no crash
        (None, False),  # no longer assigned
        (SimpleNamespace(has_valid_position=True), True),
    ],
)
def test_the_livelock_check_skips_partitions_without_a_position(monkeypatch, state, checked):
    calls = []
    monkeypatch.setattr(faust_fixes, "_original_verify_event_path", lambda self, now, tp: calls.append(tp))
    thread = _thread_with_partition_state(state)
    assert faust_fixes._verify_event_path_once_positioned(thread, 0.0, PARTITION) is None
    assert calls == ([PARTITION] if checked else [])


async def test_the_livelock_check_of_faust_asserts_on_a_partition_without_a_position():
    """Why the patch exists: aiokafka's ``position`` asserts while a partition awaits a reset."""
    from aiokafka.consumer.subscription_state import TopicPartitionState

    state = TopicPartitionState(assignment=None)
    state.await_reset(1)
    assert not state.has_valid_position
    with pytest.raises(AssertionError):
        _ = state.position


# --- one memory budget for every RocksDB store ---------------------------------------------------


def test_every_rocksdb_store_draws_on_one_budget_whatever_their_number(tmp_path):
    import time

    from faust.stores.rocksdb import RocksDBOptions

    budget = 8 * 2**20
    memory = faust_fixes.share_rocksdb_memory(budget)
    try:
        # 8 MB memtables: on its own no store below would ever flush its 3 MB.
        options = RocksDBOptions(write_buffer_size=8 * 2**20, max_write_buffer_number=2, use_rocksdict=True)
        stores = [options.open(tmp_path / f"partition-{n}") for n in range(12)]
        value = os.urandom(1_000)
        for store in stores:
            for key in range(3_000):
                store[key.to_bytes(4, "big")] = value

        def memtables() -> int:
            return sum(store.property_int_value("rocksdb.cur-size-all-mem-tables") for store in stores)

        # Past the budget, a store being written to flushes its memtable (in the background): 36 MB
        # written, the memtables come down to the budget plus each store's active arena (1 MB), where
        # the stores on their own would keep all 36 MB.  A store decides on its writes, so the
        # traffic goes on, one key per store per round, until they are down (a store written before
        # the others filled the budget has had no write since that would make it flush).
        deadline = time.monotonic() + 30
        while memtables() > budget + len(stores) * 2**20 and time.monotonic() < deadline:
            for store in stores:
                store[b"traffic"] = value
            time.sleep(0.1)
        assert memtables() <= budget + len(stores) * 2**20
        assert memory.cache.get_usage() >= memory.write_buffers.get_usage() > 0  # charged to the cache
        assert all(store[(2_999).to_bytes(4, "big")] == value for store in stores)
        for store in stores:
            store.close()
    finally:
        faust_fixes.share_rocksdb_memory()  # back to the default budget for other tests


# --- recovery's seek ---------------------------------------------------------------------------


def test_resuming_flow_control_clears_what_streams_were_handed(monkeypatch):
    # The faust behaviour the recovery patch guards against: mode's FlowControlEvent.resume
    # empties every stream queue, whatever was handed over while flow control was already on.
    app = make_app()
    stream = app.stream(app.channel())
    queued_event(app, stream, 400)
    app.flow_control.resume()
    assert stream.channel.queue.empty()


async def recovery_completed(app: faust.App, monkeypatch) -> tuple[Stream, list[int]]:
    """Run the app's real ``Recovery.on_recovery_completed`` (the consumer calls it makes stubbed)
    after changelog recovery left the flow on; while it seeks the stream partitions, the drain
    loop hands offset 400 to a stream if the consumer's flow lets it.  Returns the stream and
    what was handed over meanwhile."""
    consumer = app.consumer
    consumer.resume_flow()
    stream = app.stream(app.channel())
    handed_over: list[int] = []

    async def perform_seek():
        if not consumer.suspend_flow.is_set():  # the drain loop's check before a hand-over
            queued_event(app, stream, 400)
            handed_over.append(400)

    async def nothing():
        return None

    monkeypatch.setattr(consumer, "assignment", lambda: {PARTITION})
    monkeypatch.setattr(consumer, "resume_partitions", lambda partitions: None)
    monkeypatch.setattr(consumer, "perform_seek", perform_seek)
    monkeypatch.setattr(app._fetcher, "maybe_start", nothing)
    monkeypatch.setattr(app.assignor, "assigned_standbys", lambda: set())
    await asyncio.wait_for(app.tables.recovery.on_recovery_completed(app.consumer_generation_id), 5)
    return stream, handed_over


async def test_no_record_is_handed_over_while_recovery_seeks_so_none_is_cleared_after_it(monkeypatch):
    app = make_app()
    _, handed_over = await recovery_completed(app, monkeypatch)
    assert handed_over == []  # nothing handed over meanwhile, so nothing to lose in the clear
    assert app.consumer.flow_active and app.flow_control.is_active()  # and it flows again after


async def test_faust_own_recovery_would_clear_records_handed_over_during_its_seek(monkeypatch):
    # The same recovery without the patch: the record handed over during the seek is gone.
    app = make_app()
    monkeypatch.setattr(
        type(app.tables.recovery), "on_recovery_completed", faust_fixes._original_on_recovery_completed
    )
    stream, handed_over = await recovery_completed(app, monkeypatch)
    assert handed_over == [400] and stream.channel.queue.empty()


async def test_recovery_takes_the_queued_changelog_events_before_faust_clears_the_queue(monkeypatch):
    # Standby partitions fill the changelog queue from just before on_recovery_completed; what
    # the resume cleared, a standby never applied.
    app = make_app()
    queue = app.tables.changelog_queue
    for offset in range(3):
        queue.force_put_nowait(offset)
    taken = []

    async def changelog_reader():  # recovery's _slurp_changelogs, slower than the seek
        while True:
            taken.append(await queue.get())
            await asyncio.sleep(0.01)

    reading = asyncio.ensure_future(changelog_reader())
    try:
        await recovery_completed(app, monkeypatch)
    finally:
        reading.cancel()
    assert taken == [0, 1, 2]


async def test_changelog_events_left_past_the_patience_are_reported(caplog):
    app = make_app()
    app.tables.changelog_queue.force_put_nowait(0)
    await faust_fixes._changelog_events_taken(app.tables.changelog_queue, patience=0.05)
    assert "1 changelog events still queued after 0 s" in caplog.text


async def test_the_worker_consumer_fetches_wait_for_records_to_accumulate_when_asked(monkeypatch):
    app = make_app()
    thread = AIOKafkaConsumerThread(app.consumer)
    transport = app.transport

    monkeypatch.setattr(faust_fixes, "_fetch_max_wait_ms", 0)
    faust_own = thread._create_worker_consumer(transport)
    assert (faust_own._fetch_min_bytes, faust_own._fetch_max_wait_ms) == (1, 1500)  # faust's settings

    faust_fixes.batch_fetches(50)
    batching = thread._create_worker_consumer(transport)
    assert (batching._fetch_min_bytes, batching._fetch_max_wait_ms) == (faust_fixes.FETCH_MIN_BYTES, 50)
    with pytest.raises(ValueError):
        faust_fixes.batch_fetches(-1)


def test_a_topic_asked_to_fetch_more_gets_its_size_in_every_fetch_request_and_others_keep_theirs(monkeypatch):
    from aiokafka.protocol.fetch import FetchRequest

    def aiokafkas_requests(self, assignment):
        topics = [("clicks", [(0, 10, 262144), (1, 12, 262144)]), ("reco-training", [(0, 5, 262144)])]
        return [(1, FetchRequest(50, 1, 52428800, 0, topics))], {}, 0.1, False, []

    monkeypatch.setattr(faust_fixes, "_original_get_actions_per_node", aiokafkas_requests)
    monkeypatch.setattr(faust_fixes, "_larger_fetches", {})
    faust_fixes.fetch_more_from("reco-training", 16 * 2**20)
    requests, *rest = faust_fixes._actions_per_node_fetching_more(object(), None)
    assert requests[0][1].topics == [
        ("clicks", [(0, 10, 262144), (1, 12, 262144)]),
        ("reco-training", [(0, 5, 16 * 2**20)]),
    ]
    assert rest == [{}, 0.1, False, []]
    faust_fixes.fetch_more_from("clicks", 1024)  # never less than the consumer's own size
    requests = faust_fixes._actions_per_node_fetching_more(object(), None)[0]
    assert requests[0][1].topics[0] == ("clicks", [(0, 10, 262144), (1, 12, 262144)])
    with pytest.raises(ValueError):
        faust_fixes.fetch_more_from("clicks", 0)


def test_every_learners_training_topic_is_fetched_in_larger_pieces():
    from app import app  # builds every pipeline: the learners register their topics as they are built
    from app.settings import settings

    assert app is not None

    for topic in ("fraud-training", "reco-training"):
        assert faust_fixes._larger_fetches[settings.topic_name(topic)] == settings.training_fetch_bytes

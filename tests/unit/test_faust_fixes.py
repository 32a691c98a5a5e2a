"""The commit-offset rule of app.faust_fixes, on a consumer's bookkeeping without a broker."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP
from faust.types.enums import ProcessingGuarantee
from intervaltree import IntervalTree

from app.faust_fixes import _new_offset_after_every_fetched_offset, _unacked_fetched

PARTITION = TP("transactions", 0)


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


def test_offsets_known_to_be_absent_count_as_processed():
    consumer = consumer_state(unacked=set(), acked=[5, 8])
    consumer._gap[PARTITION].addi(6, 8)  # 6 and 7 are not records (e.g. transaction markers)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 9


def test_under_exactly_once_faust_own_rule_is_kept():
    consumer = consumer_state(unacked={0}, acked=[1, 2])
    consumer.app.conf.processing_guarantee = ProcessingGuarantee.EXACTLY_ONCE
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 3


def test_records_below_the_committed_offset_no_longer_hold_the_commit_back():
    # Fetched here before a rebalance, processed and committed by another worker since.
    consumer = consumer_state(unacked={10, 20}, acked=[50, 51], committed=50)
    assert _new_offset_after_every_fetched_offset(consumer, PARTITION) == 52
    assert _unacked_fetched(consumer)[PARTITION] == set()

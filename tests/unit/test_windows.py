"""Tests of the event-time window primitives: EventLog and BucketCounts."""

from __future__ import annotations

import math
from bisect import bisect_right

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.windows import DAY, HOUR, MINUTE, BucketCounts, EventLog, bucket_of

# --- bucket_of ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "width", "expected"),
    [
        (0.0, HOUR, 0),
        (3_599.999, HOUR, 0),
        (3_600.0, HOUR, 1),
        (86_399.0, DAY, 0),
        (86_400.0, DAY, 1),
        (-0.5, MINUTE, -1),
        (-60.0, MINUTE, -1),
        (-60.5, MINUTE, -2),
    ],
)
def test_bucket_of_is_floor_of_ts_over_width_and_bucket_starts_are_inclusive(ts, width, expected):
    assert bucket_of(ts, width) == expected


# --- EventLog.insert ---------------------------------------------------------------------


def test_insert_into_empty_log_returns_index_zero():
    log = EventLog(("v",), retention=100.0)
    assert log.insert(5.0, ("a",)) == 0
    assert log.ts == [5.0]
    assert log.column("v") == ["a"]


def test_insert_places_event_after_all_events_with_the_same_timestamp():
    log = EventLog(("v",), retention=100.0)
    for ts, v in [(1.0, "a"), (2.0, "b"), (3.0, "c"), (2.0, "d")]:
        log.insert(ts, (v,))
    assert log.ts == [1.0, 2.0, 2.0, 3.0]
    assert log.column("v") == ["a", "b", "d", "c"]
    assert log.insert(2.0, ("e",)) == 3
    assert log.column("v") == ["a", "b", "d", "e", "c"]


def test_insert_keeps_everything_until_expire_drops_events_behind_the_retention():
    log = EventLog(("v",), retention=10.0)
    log.insert(0.0, ("old",))
    log.insert(5.0, ("mid",))
    index = log.insert(12.0, ("new",))
    assert (log.ts, index) == ([0.0, 5.0, 12.0], 2)
    assert log.expire() == 1  # cutoff 2.0 drops the event at 0.0
    assert log.ts == [5.0, 12.0]
    assert log.column("v") == ["mid", "new"]


def test_insert_of_out_of_order_event_keeps_log_sorted_and_columns_parallel():
    log = EventLog(("a", "b"), retention=100.0)
    for ts in [10.0, 5.0, 7.0, 5.0, 1.0]:
        index = log.insert(ts, (ts * 2, f"x{ts}"))
        assert log.ts[index] == ts
        assert log.column("a")[index] == ts * 2
    assert log.ts == sorted(log.ts)
    assert log.column("a") == [t * 2 for t in log.ts]
    assert log.column("b") == [f"x{t}" for t in log.ts]


def test_retention_drops_events_at_or_older_than_retention_behind_newest():
    log = EventLog(("v",), retention=10.0)
    log.insert(0.0, ("at_cutoff",))
    log.insert(0.5, ("inside",))
    log.insert(10.0, ("newest",))
    log.expire()
    assert log.ts == [0.5, 10.0]
    assert log.column("v") == ["inside", "newest"]
    assert log.newest == 10.0


def test_newest_of_empty_log_is_minus_infinity():
    assert EventLog(("v",), retention=1.0).newest == -math.inf


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=40), st.integers(1, 30))
def test_insert_returns_index_of_inserted_event_keeps_ties_in_insertion_order_and_expire_applies_retention(
    timestamps, retention
):
    log = EventLog(("seq",), retention=float(retention))
    inserted: list[tuple[float, int]] = []
    for seq, ts in enumerate(timestamps):
        ts = float(ts)
        newest_before = log.newest
        index = log.insert(ts, (seq,))
        inserted.append((ts, seq))
        newest = max(newest_before, ts)
        assert log.ts[index] == ts
        assert log.column("seq")[index] == seq
        log.expire()
        # The log holds exactly the events newer than the retention cutoff, in (ts, arrival) order.
        expected = sorted((t, s) for t, s in inserted if t > newest - retention)
        assert list(zip(log.ts, log.column("seq"), strict=True)) == expected
        assert log.newest == newest


def test_a_full_log_drops_its_oldest_event_to_make_room_for_any_insert():
    log = EventLog(("v",), retention=100.0, max_events=3)
    for ts, v in [(1.0, "a"), (2.0, "b"), (3.0, "c")]:
        log.insert(ts, (v,))
    assert log.insert(2.5, ("d",)) == 1  # "a" made room
    assert (log.ts, log.column("v")) == ([2.0, 2.5, 3.0], ["b", "d", "c"])
    assert log.insert(0.5, ("late",)) == 0  # older than all: still inserted, "b" made room
    assert log.column("v") == ["late", "d", "c"]


def test_expire_also_cuts_a_log_over_its_count_limit():
    log = EventLog.from_state({"ts": [1.0, 2.0, 3.0, 4.0], "v": list("abcd")}, ("v",), 100.0, max_events=2)
    assert log.expire() == 2
    assert (log.ts, log.column("v")) == ([3.0, 4.0], ["c", "d"])
    with pytest.raises(ValueError, match="max_events"):
        EventLog(("v",), retention=1.0, max_events=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=40), st.integers(1, 5), st.integers(1, 30))
def test_a_count_limited_log_holds_what_a_plain_log_holds_minus_the_oldest_dropped_before_each_insert(
    timestamps, max_events, retention
):
    log = EventLog(("seq",), retention=float(retention), max_events=max_events)
    expected: list[tuple[float, int]] = []  # (ts, arrival), the reference log
    for seq, ts in enumerate(timestamps):
        del expected[: max(0, len(expected) - max_events + 1)]
        index = log.insert(float(ts), (seq,))
        expected.insert(bisect_right([t for t, _ in expected], float(ts)), (float(ts), seq))
        assert list(zip(log.ts, log.column("seq"), strict=True)) == expected
        assert log.column("seq")[index] == seq
        log.expire()
        expected = [(t, s) for t, s in expected if t > expected[-1][0] - retention]
        assert list(zip(log.ts, log.column("seq"), strict=True)) == expected
        assert len(log.ts) <= max_events


# --- EventLog.window ---------------------------------------------------------------------


def test_window_is_half_open_on_the_left_and_excludes_later_ties():
    log = EventLog(("v",), retention=1_000.0)
    for ts in [0.0, 5.0, 10.0, 10.0, 15.0]:
        log.insert(ts, (ts,))
    assert log.window(2, 10.0) == range(1, 3)  # (0, 10]: the event at 0 is out, the later tie too
    assert log.window(3, 10.0) == range(1, 4)  # the earlier tie is in
    assert log.window(2, 10.5) == range(0, 3)
    assert log.window(4, 5.0) == range(4, 5)  # (10, 15]
    assert log.window(0, 1.0) == range(0, 1)  # always holds its own event


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=30),
    st.sampled_from([0.5, 1.0, 5.0, 10.0, 25.0, 100.0]),
)
def test_window_matches_brute_force_for_every_end_index(timestamps, horizon):
    log = EventLog(("v",), retention=1_000.0)
    for ts in timestamps:
        log.insert(float(ts), (None,))
    for end in range(len(log.ts)):
        expected = [j for j in range(end + 1) if log.ts[end] - horizon < log.ts[j] <= log.ts[end]]
        assert list(log.window(end, horizon)) == expected


# --- EventLog state ----------------------------------------------------------------------


def test_event_log_state_round_trips_through_orjson():
    log = EventLog(("amount", "merchant"), retention=100.0)
    for ts, amount, merchant in [(1.0, 2.5, "m1"), (3.0, 0.0, None), (2.0, 7.0, "m2")]:
        log.insert(ts, (amount, merchant))
    state = orjson.loads(orjson.dumps(log.to_state()))
    restored = EventLog.from_state(state, ("amount", "merchant"), retention=100.0)
    assert restored.ts == log.ts
    assert restored.column("amount") == log.column("amount")
    assert restored.column("merchant") == log.column("merchant")
    assert restored.insert(2.0, (1.0, "m3")) == log.insert(2.0, (1.0, "m3"))
    assert restored.to_state() == log.to_state()


def test_event_log_from_none_state_is_empty():
    log = EventLog.from_state(None, ("v",), retention=1.0)
    assert log.ts == []
    assert log.column("v") == []


# --- BucketCounts ------------------------------------------------------------------------


def brute_force_sums(
    adds: list[tuple[float, tuple[float, ...]]], width: float, ts: float, n: int, fields: int
):
    end = math.floor(ts / width)
    totals = [0.0] * fields
    for add_ts, values in adds:
        if end - n < math.floor(add_ts / width) <= end:
            for i, value in enumerate(values):
                totals[i] += value
    return totals


def test_bucket_window_holds_exactly_n_buckets_ending_at_the_bucket_of_ts():
    counts = BucketCounts(width=HOUR, keep=24, fields=2)
    counts.add(0.0, (1, 10.0))  # bucket 0
    counts.add(3_600.0, (1, 20.0))  # bucket 1
    counts.add(7_199.0, (1, 5.0))  # bucket 1
    counts.add(7_200.0, (1, 1.0))  # bucket 2
    assert counts.window_sums(7_200.0, 1) == [1, 1.0]
    assert counts.window_sums(7_200.0, 2) == [3, 26.0]
    assert counts.window_sums(7_200.0, 3) == [4, 36.0]
    assert counts.window_sums(3_600.0, 1) == [2, 25.0]  # bucket 2 is after the window
    assert counts.window_sums(-1.0, 24) == [0, 0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 3), st.floats(0, 1_000, allow_nan=False)),
        max_size=60,
    ),
    st.integers(0, 220),
    st.integers(1, 40),
)
def test_window_sums_match_brute_force_when_nothing_is_pruned(adds, query_ts, n):
    counts = BucketCounts(width=10.0, keep=10_000, fields=2)
    history = []
    for ts, count, amount in adds:
        counts.add(float(ts), (count, amount))
        history.append((float(ts), (count, amount)))
    got = counts.window_sums(float(query_ts), n)
    expected = brute_force_sums(history, 10.0, float(query_ts), n, 2)
    assert got[0] == expected[0]
    assert math.isclose(got[1], expected[1], rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=80),
    st.integers(1, 12),
)
def test_window_sums_match_brute_force_for_in_order_adds_with_pruning_and_state_stays_bounded(steps, keep):
    counts = BucketCounts(width=10.0, keep=keep, fields=2)
    history = []
    ts = 0.0
    for gap, amount in steps:
        ts += gap
        counts.add(ts, (1, amount))
        history.append((ts, (1, amount)))
        assert len(counts.buckets) <= keep + 1
        for n in range(1, keep + 1):
            got = counts.window_sums(ts, n)
            expected = brute_force_sums(history, 10.0, ts, n, 2)
            assert got[0] == expected[0]
            assert math.isclose(got[1], expected[1], rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.floats(-1_000, 1_000, allow_nan=False)), max_size=60),
    st.integers(0, 220),
    st.integers(1, 40),
)
def test_min_and_max_reducers_match_brute_force_extremes_and_survive_the_state(adds, query_ts, n):
    counts = BucketCounts(width=10.0, keep=10_000, fields=3, reducers=("sum", "min", "max"))
    for ts, value in adds:
        counts.add(float(ts), (1, value, value))
    end = bucket_of(float(query_ts), 10.0)
    inside = [value for ts, value in adds if end - n < bucket_of(float(ts), 10.0) <= end]
    expected = [len(inside), min(inside, default=math.inf), max(inside, default=-math.inf)]
    assert counts.window_sums(float(query_ts), n) == expected
    assert counts.nested_window_sums(float(query_ts), (n,)) == [expected]
    restored = BucketCounts.from_state(
        orjson.loads(orjson.dumps(counts.to_state())), 10.0, 10_000, 3, ("sum", "min", "max")
    )
    assert restored.window_sums(float(query_ts), n) == expected


def test_bucket_counts_reject_an_unknown_reducer_or_one_per_field_missing():
    with pytest.raises(ValueError, match="reducers"):
        BucketCounts(width=10.0, keep=5, fields=2, reducers=("sum", "median"))
    with pytest.raises(ValueError, match="reducers"):
        BucketCounts(width=10.0, keep=5, fields=2, reducers=("sum",))


def test_bucket_counts_state_stays_bounded_after_a_long_stream():
    counts = BucketCounts(width=MINUTE, keep=60, fields=2)
    for i in range(10_000):
        counts.add(i * 7.0, (1, 1.0))
        assert len(counts.buckets) <= 61
    assert max(counts.buckets) - min(counts.buckets) < 60


def test_bucket_counts_state_round_trips_through_orjson():
    counts = BucketCounts(width=HOUR, keep=24, fields=2)
    for ts, amount in [(0.0, 1.5), (10.0, 2.0), (4_000.0, 0.0), (90_000.0, 3.25)]:
        counts.add(ts, (1, amount))
    state = orjson.loads(orjson.dumps(counts.to_state()))
    restored = BucketCounts.from_state(state, width=HOUR, keep=24, fields=2)
    assert restored.buckets == counts.buckets
    for ts in [0.0, 4_000.0, 90_000.0, 200_000.0]:
        for n in (1, 5, 24):
            assert restored.window_sums(ts, n) == counts.window_sums(ts, n)
    restored.add(90_001.0, (1, 1.0))
    counts.add(90_001.0, (1, 1.0))
    assert restored.to_state() == counts.to_state()


def test_bucket_counts_add_copies_values_instead_of_aliasing_them():
    counts = BucketCounts(width=HOUR, keep=24, fields=2)
    values = [1, 5.0]
    counts.add(0.0, values)
    counts.add(1.0, (1, 2.0))
    assert values == [1, 5.0]
    assert counts.window_sums(0.0, 1) == [2, 7.0]


def test_bucket_counts_drop_stale_buckets_at_once_and_keep_them_in_order():
    counts = BucketCounts(width=MINUTE, keep=120, fields=2)
    counts.add(0.0, (1, 1.0))
    counts.add(10 * HOUR, (1, 2.0))  # bucket 0 is 600 behind: gone at once, not at the 121st bucket
    assert list(counts.buckets) == [600]
    counts.add(10 * HOUR - 30 * MINUTE, (1, 3.0))  # a late event opens an older bucket
    assert list(counts.buckets) == [570, 600]
    assert counts.window_sums(10 * HOUR, 60) == [2, 5.0]


def test_a_very_late_event_counts_itself_even_behind_what_the_buckets_keep():
    counts = BucketCounts(width=MINUTE, keep=120, fields=2)
    counts.add(10 * HOUR, (1, 2.0))
    counts.add(0.0, (1, 1.0))  # 600 buckets behind the newest
    assert counts.window_sums(0.0, 60) == [1, 1.0]
    counts.add(10 * HOUR + MINUTE, (1, 1.0))  # the next add drops it
    assert list(counts.buckets) == [600, 601]


def test_bucket_counts_read_states_in_any_order_and_write_them_in_order():
    state = [[5, 1, 1.0], [2, 1, 2.0], [7, 2, 3.0]]  # insertion order, as older versions wrote it
    counts = BucketCounts.from_state(state, width=10.0, keep=100, fields=2)
    assert counts.to_state() == sorted(state)
    assert counts.window_sums(70.0, 6) == [4, 6.0]
    counts.add(30.0, (1, 1.0))
    assert [row[0] for row in counts.to_state()] == [2, 3, 5, 7]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=60),
    st.integers(1, 12),
    st.integers(0, 40),
)
def test_windows_reaching_no_further_back_than_keep_from_the_newest_match_brute_force_in_any_order(
    adds, keep, lateness
):
    counts = BucketCounts(width=10.0, keep=keep, fields=2)
    history = []
    newest = -math.inf
    for ts, amount in adds:
        counts.add(float(ts), (1, amount))
        history.append((float(ts), (1, amount)))
        newest = max(newest, float(ts))
        assert list(counts.buckets) == sorted(counts.buckets)
        assert len(counts.buckets) <= keep + 1
        query = newest - lateness
        for n in range(1, keep + 1):
            if math.floor(query / 10.0) - n >= math.floor(newest / 10.0) - keep:
                got = counts.window_sums(query, n)
                expected = brute_force_sums(history, 10.0, query, n, 2)
                assert got[0] == expected[0]
                assert math.isclose(got[1], expected[1], rel_tol=1e-9, abs_tol=1e-9)

"""Tests of a device metric's rolling statistics against a brute-force recomputation."""

from __future__ import annotations

import math
import statistics

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tables.device_stats import COARSE_KEEP, FINE_KEEP, LATENESS, WINDOWS, MetricStats, WindowStats
from tables.windows import bucket_of

WIDTHS = {True: 10.0, False: 60.0}


def window_values(readings: list[tuple[float, float]], ts: float, name: str, ref: float = 0.0) -> list[float]:
    """The values (minus ``ref``) of the readings in window ``name`` at ``ts`` (the module's bucket rule)."""
    fine, n_buckets = WINDOWS[name]
    width = WIDTHS[fine]
    end = bucket_of(ts, width)
    return [value - ref for when, value in readings if end - n_buckets < bucket_of(when, width) <= end]


def brute_force(readings: list[tuple[float, float]], ts: float, name: str) -> WindowStats:
    """The window's statistics from every reading, by the bucket rule of the module docstring."""
    values = window_values(readings, ts, name)
    if not values:
        return WindowStats(0, math.nan, math.nan, math.nan, math.nan)
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    return WindowStats(len(values), mean, std, min(values), max(values))


def assert_same(got: WindowStats, expected: WindowStats, values_from_ref: list[float]) -> None:
    """``values_from_ref``: the window's readings minus the series' first one (what is summed)."""
    assert got.count == expected.count
    if expected.count == 0:
        assert all(math.isnan(x) for x in (got.mean, got.std, got.min, got.max))
        return
    assert (got.min, got.max) == (expected.min, expected.max)  # exact: no arithmetic
    scale = max(1.0, abs(expected.mean), expected.max - expected.min)
    assert got.mean == pytest.approx(expected.mean, rel=1e-9, abs=1e-9 * scale)
    # The bound of the module docstring: what the sums' cancellation leaves (readings far from
    # the first one and close together, e.g. 0 and 1e-05 after 371), then rounding.
    cancellation = math.sqrt(8 * 2**-52 * statistics.fmean(x * x for x in values_from_ref))
    assert got.std == pytest.approx(expected.std, rel=1e-6, abs=1e-6 * scale + cancellation)


readings_strategy = st.lists(
    st.tuples(
        st.floats(0.0, 400.0),  # seconds the newest reading moves on
        st.one_of(st.just(0.0), st.floats(0.0, LATENESS)),  # how late this reading is
        st.one_of(st.floats(-1e4, 1e4), st.integers(-50, 50).map(float), st.floats(19.0, 21.0)),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(steps=readings_strategy, start=st.floats(0.0, 2e9))
@example(steps=[(0.0, 0.0, 371.0), (400.0, 0.0, 0.0), (0.0, 0.0, 1e-05)], start=0.0)  # far from the first
def test_every_window_statistic_equals_a_recomputation_over_the_readings_at_every_reading(steps, start):
    stats = MetricStats()
    readings: list[tuple[float, float]] = []
    newest = start
    ref = steps[0][2]  # the first value: what the sums are taken from
    for advance, late, value in steps:
        newest += advance
        ts = newest - late
        stats.add(ts, value)
        readings.append((ts, value))
        for query in (ts, newest):  # a late reading's own windows, and the newest ones
            for name in WINDOWS:
                expected = brute_force(readings, query, name)
                assert_same(stats.window(query, name), expected, window_values(readings, query, name, ref))


@settings(max_examples=100, deadline=None)
@given(steps=readings_strategy)
def test_state_round_trips_through_orjson_exactly_and_answers_the_same(steps):
    stats = MetricStats()
    newest = 1_767_225_600.0
    for advance, late, value in steps:
        newest += advance
        stats.add(newest - late, value)
        restored = MetricStats.from_state(orjson.loads(orjson.dumps(stats.to_state())))
        assert restored.to_state() == stats.to_state()
        assert restored.windows(newest) == stats.windows(newest)  # an empty window's nan is math.nan


def test_memory_is_bounded_whatever_the_stream_length_and_rate():
    stats = MetricStats()
    for i in range(50_000):  # a reading every second for about 14 hours
        stats.add(float(i), float(i % 7))
    state = stats.to_state()
    assert len(state["fine"]) <= FINE_KEEP
    assert len(state["coarse"]) <= COARSE_KEEP
    assert len(orjson.dumps(state)) < 8_000


def test_the_variance_of_readings_close_together_far_from_zero_does_not_cancel_away():
    stats = MetricStats()
    values = [1e6 + 0.001 * (i % 3) for i in range(60)]
    for i, value in enumerate(values):
        stats.add(60.0 * i, value)
    assert stats.window(60.0 * 59, "1h").std == pytest.approx(statistics.pstdev(values), rel=1e-6)


def test_an_empty_series_and_an_empty_window_report_count_zero():
    assert MetricStats().window(0.0, "1h").count == 0
    stats = MetricStats()
    stats.add(0.0, 5.0)
    assert stats.window(3_600.0, "5m").count == 0
    assert stats.window(0.0, "5m") == WindowStats(1, 5.0, 0.0, 5.0, 5.0)

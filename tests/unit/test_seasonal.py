"""Tests of the daily profile against brute-force recomputations."""

from __future__ import annotations

import math
import statistics
from itertools import pairwise

import orjson
import pytest

from models.seasonal import HOURS, DailyProfile
from tables.windows import DAY, HOUR


def wavy(ts: float) -> float:
    """A daily cycle and a 7-hour wander that does not repeat daily."""
    return 20.0 + 2.0 * math.cos(2 * math.pi * ts / DAY) + 0.3 * math.sin(2 * math.pi * ts / (7 * HOUR))


def test_the_levels_are_the_hour_means_averaged_over_the_first_days():
    profile = DailyProfile(horizon_days=7.0)
    for i in range(4 * 1_440 + 1):  # the reading at 4 days closes the last hour of day 4
        profile.learn(60.0 * i, wavy(60.0 * i) + (0.1 if i % 2 else -0.1))
    for hour in range(HOURS):
        means = [
            statistics.fmean(wavy(60.0 * i) + (0.1 if i % 2 else -0.1) for i in range(start, start + 60))
            for start in (1_440 * day + 60 * hour for day in range(4))
        ]
        assert profile.levels[hour] == pytest.approx(statistics.fmean(means), abs=1e-9)
    assert profile.hours == 3 * HOURS  # the first day sets the levels, the next three are errors
    assert profile.warm


def test_the_profile_is_read_between_hour_middles_by_linear_interpolation():
    profile = DailyProfile()
    profile.levels = [float(hour) for hour in range(HOURS)]
    assert profile.expected(10.5 * HOUR) == 10.0
    assert profile.expected(10.75 * HOUR) == 10.25
    assert profile.expected(23.75 * HOUR) == pytest.approx(23.0 - 23.0 / 4)  # towards hour 0's level
    profile.levels[11] = None
    assert math.isnan(profile.expected(10.75 * HOUR))


def test_the_offset_weights_readings_exponentially_in_time_since_it_restarted():
    profile = DailyProfile(offset_seconds=HOUR)
    profile.levels = [0.0] * HOURS
    profile.restart_offset(0.0)
    times, values = [60.0, 120.0, 600.0, 3_000.0], [1.0, 3.0, -2.0, 5.0]
    for ts, value in zip(times, values, strict=True):
        profile.learn(ts, value)
    # reading k weighs exp(-(t_last - t_k) / HOUR) - exp(-(t_last - t_{k-1}) / HOUR), t_0 the restart
    edges = [0.0, *times]
    weights = [math.exp(-(3_000.0 - b) / HOUR) - math.exp(-(3_000.0 - a) / HOUR) for a, b in pairwise(edges)]
    weighted = sum(w * v for w, v in zip(weights, values, strict=True))
    assert profile.offset == pytest.approx(weighted / sum(weights))
    assert profile.offset_weight == pytest.approx(1.0 - math.exp(-3_000.0 / HOUR))
    assert not profile.settled  # 50 minutes of readings, under the hour the offset averages over
    profile.learn(3_600.0, 5.0)
    assert profile.settled


def test_the_deviation_is_the_mean_absolute_error_of_the_hour_means():
    profile = DailyProfile(deviation_days=3.0)
    for i in range(2 * 1_440 + 1):
        day = i // 1_440
        profile.learn(60.0 * i, 10.0 + (0.5 if day == 1 else 0.0))  # day 2 is 0.5 higher all day
    assert profile.hours == HOURS
    assert profile.deviation == pytest.approx(0.5)
    assert profile.levels == pytest.approx([10.25] * HOURS)  # the mean of the two days


def test_moving_the_profile_moves_every_level_and_state_round_trips_through_orjson():
    profile = DailyProfile()
    for i in range(2 * 1_440):
        profile.learn(60.0 * i, wavy(60.0 * i))
    restored = DailyProfile.from_state(orjson.loads(orjson.dumps(profile.to_state())))
    assert restored.to_state() == profile.to_state()
    assert restored.expected(5_000.0) == profile.expected(5_000.0)
    before = profile.expected(5_000.0)
    profile.move(1.5)
    assert profile.expected(5_000.0) == pytest.approx(before + 1.5)


def test_the_state_stays_24_levels_and_8_numbers_however_long_the_series():
    profile = DailyProfile()
    for i in range(30 * 1_440):
        profile.learn(60.0 * i, wavy(60.0 * i))
    levels, *numbers = profile.to_state()
    assert len(levels) == HOURS and len(numbers) == 8
    assert profile.hours == 7 * HOURS  # capped

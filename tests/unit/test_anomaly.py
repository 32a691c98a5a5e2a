"""Tests of the robust z-score detector against brute-force recomputations."""

from __future__ import annotations

import statistics

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.anomaly import MAD_TO_SD, RESIDUALS, WINDOW, Detector, QuantileTracker


def theil_sen(points: list[tuple[float, float]], at: float) -> float:
    slopes = [(v2 - v1) / (t2 - t1) for i, (t1, v1) in enumerate(points) for t2, v2 in points[i + 1 :]]
    slope = statistics.median(slopes)
    return statistics.median(v - slope * (t - at) for t, v in points)


def test_a_noiseless_line_is_predicted_exactly_and_scores_zero():
    detector = Detector()
    for i in range(40):
        detector.learn(60.0 * i, 5.0 + 0.5 * i)
    expected, slope = detector.predict(60.0 * 40)
    assert expected == pytest.approx(25.0)
    assert slope * 60.0 == pytest.approx(0.5)
    assert detector.score(60.0 * 40, 25.0).z == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=15, max_size=90), st.floats(-100, 100))
def test_prediction_scale_and_score_equal_a_recomputation_over_the_kept_readings(values, probe):
    detector = Detector(min_scale=1e-3)
    learned: list[tuple[float, float]] = []
    residuals: list[float] = []
    for i, value in enumerate(values):
        ts = 60.0 * i
        recent = learned[-WINDOW:]
        if len(recent) >= 3:
            residuals.append(abs(value - theil_sen(recent, ts)))
        detector.learn(ts, value)
        learned.append((ts, value))
    at = 60.0 * len(values)
    recent = learned[-WINDOW:]
    assert detector.predict(at)[0] == theil_sen(recent, at)  # the same pairs, sorted alike: exact
    scale = max(1e-3, MAD_TO_SD * statistics.median(residuals[-RESIDUALS:]))
    assert detector.scale() == scale
    assert len(detector.values) <= WINDOW and len(detector.residuals) <= RESIDUALS
    if detector.warm:
        assert detector.score(at, probe).z == pytest.approx(
            abs(probe - theil_sen(recent, at)) / scale, rel=1e-6
        )


def test_state_round_trips_through_orjson_and_scores_the_same():
    detector = Detector()
    for i in range(50):
        detector.learn(60.0 * i, 20.0 + (i % 5) * 0.1)
    restored = Detector.from_state(orjson.loads(orjson.dumps(detector.to_state())))
    assert restored.to_state() == detector.to_state()
    assert restored.score(3_000.0, 23.0) == detector.score(3_000.0, 23.0)


def test_no_score_before_warmup_readings_of_prediction_error():
    detector = Detector(warmup=10)
    for i in range(13):  # the first 3 give no prediction error, the next 10 do
        assert not detector.warm
        assert detector.score(60.0 * i, 1e6).z == 0.0
        detector.learn(60.0 * i, float(i % 2))
    assert detector.warm


def test_the_learned_threshold_never_goes_below_its_floor_and_rises_on_heavy_tails():
    quiet, noisy = Detector(min_threshold=6.0), Detector(min_threshold=6.0)
    for _ in range(20_000):
        quiet.threshold.update(1.0)
        noisy.threshold.update(50.0)
    assert max(quiet.min_threshold, quiet.threshold.value) == 6.0
    assert noisy.threshold.value > 40.0


def test_quantile_tracker_settles_near_the_quantile_of_a_uniform_stream():
    tracker = QuantileTracker(tau=0.99, step=0.2, initial=0.0)
    for i in range(200_000):
        tracker.update(float((i * 7919) % 1000))
    assert 980 < tracker.value < 1000


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-1, 3), st.floats(-100, 100), st.sampled_from(["learn", "reset", "restore"])),
        min_size=1,
        max_size=120,
    ),
    st.floats(0, 10_000),
)
def test_slopes_and_residuals_kept_along_give_what_a_detector_rebuilt_from_its_state_gives(steps, at):
    detector, ts = Detector(), 0.0
    for gap, value, action in steps:
        ts += 30.0 * gap  # 0: readings at the same time, whose pair has no slope; -1: out of order
        if action == "reset":
            detector.reset()
        elif action == "restore":
            detector = Detector.from_state(detector.to_state())
        detector.learn(ts, value, detector.score(ts, value))
        rebuilt = Detector.from_state(detector.to_state())
        assert rebuilt.predict(at) == detector.predict(at)
        assert rebuilt.scale() == detector.scale()

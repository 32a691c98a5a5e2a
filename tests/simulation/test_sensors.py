"""Tests of the simulated sensor-reading stream."""

from __future__ import annotations

import doctest
import re
import statistics
from collections import Counter, defaultdict
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.simulation import sensors
from app.simulation.sensors import (
    ANOMALY_KINDS,
    SensorStreamConfig,
    SimulatedEvent,
    generate_sensor_stream,
)

SMALL = SensorStreamConfig(seed=3, n_devices=6, days=2, anomaly_rate=0.01)
MEDIUM = SensorStreamConfig(seed=5, n_devices=12, days=5, anomaly_rate=0.005)
DAY = 86_400.0


def by_device(events: list[SimulatedEvent]) -> dict[str, list[SimulatedEvent]]:
    devices: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for event in events:
        devices[event.key].append(event)
    return devices


def episodes(readings: list[SimulatedEvent], kind: str | None) -> list[list[SimulatedEvent]]:
    """Maximal runs of consecutive readings of one device with the given anomaly kind (None: normal)."""
    runs: list[list[SimulatedEvent]] = []
    inside = False
    for reading in readings:
        if reading.truth["anomaly_kind"] == kind:
            if not inside:
                runs.append([])
            runs[-1].append(reading)
            inside = True
        else:
            inside = False
    return runs


def noise_sd(readings: list[SimulatedEvent]) -> float:
    """Robust noise estimate from the differences of consecutive normal readings."""
    diffs = [
        abs(b.value["value"] - a.value["value"])
        for a, b in pairwise(readings)
        if not a.truth["is_anomaly"] and not b.truth["is_anomaly"]
    ]
    return statistics.median(diffs) / (0.6745 * 2**0.5)


def longest_equal_run(values: list[float]) -> int:
    longest = run = 1
    for a, b in pairwise(values):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    return longest


@pytest.fixture(scope="module")
def small() -> list[SimulatedEvent]:
    return list(generate_sensor_stream(SMALL))


@pytest.fixture(scope="module")
def medium() -> dict[str, list[SimulatedEvent]]:
    return by_device(list(generate_sensor_stream(MEDIUM)))


def test_helpers() -> None:
    assert longest_equal_run([1.0, 2.0, 2.0, 2.0, 3.0, 3.0]) == 3
    assert longest_equal_run([1.0]) == 1


def test_same_seed_same_stream(small: list[SimulatedEvent]) -> None:
    assert list(generate_sensor_stream(SMALL)) == small


def test_different_seeds_differ(small: list[SimulatedEvent]) -> None:
    other = SensorStreamConfig(seed=4, n_devices=6, days=2, anomaly_rate=0.01)
    assert list(generate_sensor_stream(other)) != small


def test_time_order_span_and_cadence(small: list[SimulatedEvent]) -> None:
    times = [event.event_time for event in small]
    assert times == sorted(times)
    assert all(event.event_time == event.value["ts"] for event in small)
    assert all(SMALL.start <= moment < SMALL.end for moment in times)
    devices = by_device(small)
    assert len(devices) == SMALL.n_devices
    for readings in devices.values():
        assert len(readings) == 2 * 1_440
        gaps = [b.event_time - a.event_time for a, b in pairwise(readings)]
        assert all(54.0 <= gap <= 66.0 for gap in gaps)
        assert len(set(gaps)) > 100  # jitter


def test_payload_contract(small: list[SimulatedEvent]) -> None:
    assert len({event.value["reading_id"] for event in small}) == len(small)
    for event in small:
        value = event.value
        assert event.topic == "sensor-readings" == sensors.SENSOR_TOPIC
        assert set(value) == {"reading_id", "device_id", "metric", "value", "ts"}
        assert type(value["reading_id"]) is str and re.fullmatch(r"r-\d{9}", value["reading_id"])
        assert re.fullmatch(r"dev-\d{3}", value["device_id"]) and event.key == value["device_id"]
        assert value["metric"] == "temperature"
        assert type(value["value"]) is float and round(value["value"], 3) == value["value"]
        assert -30.0 < value["value"] < 60.0
        assert type(value["ts"]) is float and round(value["ts"], 3) == value["ts"]
        assert set(event.truth) == {"is_anomaly", "anomaly_kind"}
        assert type(event.truth["is_anomaly"]) is bool
        assert (event.truth["anomaly_kind"] is not None) is event.truth["is_anomaly"]
        assert event.truth["anomaly_kind"] in (None, *ANOMALY_KINDS)


def test_anomaly_share_and_kinds(medium: dict[str, list[SimulatedEvent]]) -> None:
    readings = [reading for device in medium.values() for reading in device]
    kinds = Counter(r.truth["anomaly_kind"] for r in readings if r.truth["is_anomaly"])
    share = kinds.total() / len(readings)
    assert 0.3 * MEDIUM.anomaly_rate <= share <= 3 * MEDIUM.anomaly_rate
    assert set(kinds) == set(ANOMALY_KINDS)


@pytest.mark.parametrize("rate", [0.0, 0.001, 0.02, 0.1])
def test_anomaly_share_follows_config(rate: float) -> None:
    config = SensorStreamConfig(seed=1, n_devices=8, days=3, anomaly_rate=rate)
    readings = list(generate_sensor_stream(config))
    share = sum(reading.truth["is_anomaly"] for reading in readings) / len(readings)
    assert 0.3 * rate <= share <= 3 * rate


def test_daily_cycle_is_visible(medium: dict[str, list[SimulatedEvent]]) -> None:
    peaks = set()
    for readings in medium.values():
        hourly: dict[int, list[float]] = defaultdict(list)
        for reading in readings:
            if not reading.truth["is_anomaly"]:
                hourly[int(reading.event_time % DAY // 3_600)].append(reading.value["value"])
        means = {hour: statistics.mean(values) for hour, values in hourly.items()}
        assert len(means) == 24
        assert max(means.values()) - min(means.values()) > 2 * noise_sd(readings)
        peaks.add(max(means, key=means.__getitem__))
    assert len(peaks) >= 4  # devices have their own phase


def test_spikes_are_far_from_the_device_level(medium: dict[str, list[SimulatedEvent]]) -> None:
    checked = 0
    for readings in medium.values():
        sd = noise_sd(readings)
        for i, reading in enumerate(readings):
            if reading.truth["anomaly_kind"] == "spike":
                around = [r.value["value"] for r in readings[max(0, i - 5) : i + 6] if r is not reading]
                assert abs(reading.value["value"] - statistics.median(around)) > 4 * sd
                checked += 1
    assert checked >= 20


def test_stuck_segments_repeat_one_value(medium: dict[str, list[SimulatedEvent]]) -> None:
    runs = [run for readings in medium.values() for run in episodes(readings, "stuck")]
    assert runs
    for run in runs:
        assert len(run) >= 10
        assert len({reading.value["value"] for reading in run}) == 1


def test_normal_readings_do_not_repeat_for_long(medium: dict[str, list[SimulatedEvent]]) -> None:
    for readings in medium.values():
        for run in episodes(readings, None):
            assert longest_equal_run([reading.value["value"] for reading in run]) < 4


def test_shifts_and_drifts_move_the_level(medium: dict[str, list[SimulatedEvent]]) -> None:
    for kind in ("level_shift", "drift"):
        checked = 0
        for readings in medium.values():
            sd = noise_sd(readings)
            index = {id(reading): i for i, reading in enumerate(readings)}
            for run in episodes(readings, kind):
                first = index[id(run[0])]
                before = statistics.median(r.value["value"] for r in readings[max(0, first - 10) : first])
                tail = statistics.median(r.value["value"] for r in run[-3:])
                assert abs(tail - before) > 4 * sd
                checked += 1
        assert checked >= 1


@given(
    seed=st.integers(0, 2**32),
    n_devices=st.integers(1, 8),
    days=st.floats(0.001, 2.0),
    start_offset=st.floats(0.0, DAY),
    interval=st.floats(1.0, 3_600.0),
    rate=st.floats(0.0, 0.2),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_odd_configs(
    seed: int, n_devices: int, days: float, start_offset: float, interval: float, rate: float
) -> None:
    days = min(days, 3_000 * interval / DAY)  # at most 3,000 readings per device
    config = SensorStreamConfig(
        seed=seed,
        n_devices=n_devices,
        start=1_767_225_600.0 + start_offset,
        days=days,
        interval_seconds=interval,
        anomaly_rate=rate,
    )
    readings = list(generate_sensor_stream(config))
    times = [reading.event_time for reading in readings]
    assert times == sorted(times)
    assert all(config.start <= moment < config.end for moment in times)
    expected = days * DAY / interval
    for device in by_device(readings).values():
        assert expected - 1 <= len(device) <= expected + 1


@pytest.mark.parametrize(
    "changes",
    [
        {"seed": -1},
        {"n_devices": 0},
        {"days": 0.0},
        {"interval_seconds": 0.5},
        {"anomaly_rate": -0.01},
        {"anomaly_rate": 0.5},
    ],
)
def test_invalid_config_is_rejected(changes: dict) -> None:
    with pytest.raises(ValueError):
        SensorStreamConfig(**changes)


def test_docstring_examples() -> None:
    assert doctest.testmod(sensors, raise_on_error=True).attempted > 0

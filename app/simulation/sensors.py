"""Deterministic temperature readings of a fleet of devices, with injected anomalies.

The stream is what a monitoring backend receives: one ``temperature`` reading
per device every ``interval_seconds`` on the ``sensor-readings`` topic, keyed
by device. Whether a reading is anomalous, and how, travels only in
:attr:`SimulatedEvent.truth`, never in a payload.

Devices
    Each device sits at a site that sets the range of its parameters:
    ``indoor`` (half of the devices; 19-24 degC, daily amplitude 0.5-2.5,
    noise 0.05-0.3), ``outdoor`` (35 %; 4-18 degC, amplitude 3-8, noise 0.1-0.5,
    warmest at 13-16 h UTC) or ``cold_storage`` (15 %; 2-6 degC, amplitude
    0.3-1, noise 0.05-0.15, defrost cycle at any hour). A device has its own
    baseline, daily amplitude and hour of maximum (a cosine over the UTC day),
    a slow wander (weather, occupancy: linear between random knots every 3
    hours, standard deviation 0.3x the amplitude) and white noise of its own
    standard deviation.

Clock
    Device ``d`` reports at ``start + (k + phase_d) x interval_seconds`` plus a
    small jitter (standard deviation 1 % of the interval), its phase in
    [0.05, 0.95): the k-th readings of all devices fall within the k-th
    interval, so the stream interleaves the devices.

Anomalies, ``anomaly_rate`` of the readings on average
    ``spike`` (15 % of the anomalous readings)
        A single reading 8-20 noise sd plus 0.5-1.5 daily amplitudes off.
    ``level_shift`` (30 %)
        A step of 6-15 noise sd plus 0.3-1 amplitudes for 30 minutes to 12
        hours (at least 3 readings), then back to normal.
    ``drift`` (35 %)
        An offset growing linearly to 10-30 noise sd plus 0.5-1.5 amplitudes
        over 2 hours to 3 days (at least 10 readings), then gone
        (recalibration).
    ``stuck`` (20 %)
        The device repeats the value of its last normal reading exactly, for 20
        minutes to 4 hours (at least 10 readings).
    Durations are log-uniform, capped by what remains of the kind's share of
    anomalous readings (never below the minimum), so small or short streams
    get the shorter episodes; the last episode of a kind is kept with the
    probability that keeps the expected share exact. An episode that finds no
    free place is halved until it fits (or the kind gives up), which matters
    only at rates of several percent. Shifts and drifts go up or down at
    random. Episodes of one device neither overlap nor touch, and every reading
    of an episode is anomalous (the first readings of a drift too).

Values are rounded to 3 decimals, so normal readings almost never repeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.simulation.transactions import SimulatedEvent

SENSOR_TOPIC = "sensor-readings"
METRIC = "temperature"
ANOMALY_KINDS: tuple[str, ...] = ("spike", "level_shift", "drift", "stuck")

_NORMAL, _SPIKE, _LEVEL_SHIFT, _DRIFT, _STUCK = range(5)  # 1 + index in ANOMALY_KINDS
_DAY = 86_400.0
_HOUR = 3_600.0
_MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class SensorStreamConfig:
    """Fleet size, span, reporting interval and anomaly share of a simulated stream."""

    seed: int = 0
    n_devices: int = 50
    start: float = 1_767_225_600.0
    days: float = 7.0
    interval_seconds: float = 60.0
    anomaly_rate: float = 0.002

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.n_devices < 1:
            raise ValueError("n_devices must be >= 1")
        if self.days <= 0:
            raise ValueError("days must be > 0")
        if self.interval_seconds < 1.0:
            raise ValueError("interval_seconds must be >= 1")
        if not 0 <= self.anomaly_rate < 0.5:
            raise ValueError("anomaly_rate must be in [0, 0.5)")

    @property
    def end(self) -> float:
        """First instant after the span of readings."""
        return self.start + self.days * _DAY


@dataclass(frozen=True)
class _Site:
    name: str
    share: float  # of devices
    baseline: tuple[float, float]  # degC, uniform
    amplitude: tuple[float, float]  # of the daily cycle, uniform
    noise: tuple[float, float]  # standard deviation, log-uniform
    peak_hour: tuple[float, float]  # UTC, uniform


_SITES = (
    _Site("indoor", 0.50, (19.0, 24.0), (0.5, 2.5), (0.05, 0.3), (11.0, 19.0)),
    _Site("outdoor", 0.35, (4.0, 18.0), (3.0, 8.0), (0.1, 0.5), (13.0, 16.0)),
    _Site("cold_storage", 0.15, (2.0, 6.0), (0.3, 1.0), (0.05, 0.15), (0.0, 24.0)),
)


@dataclass(frozen=True)
class _Kind:
    share: float  # of the anomalous readings
    duration: tuple[float, float]  # seconds, log-uniform
    min_readings: int
    noise_size: tuple[float, float]  # offset in noise standard deviations, uniform
    amplitude_size: tuple[float, float]  # plus offset in daily amplitudes, uniform


_KINDS = (  # in the order of ANOMALY_KINDS
    _Kind(0.15, (0.0, 0.0), 1, (8.0, 20.0), (0.5, 1.5)),
    _Kind(0.30, (30 * _MINUTE, 12 * _HOUR), 3, (6.0, 15.0), (0.3, 1.0)),
    _Kind(0.35, (2 * _HOUR, 3 * _DAY), 10, (10.0, 30.0), (0.5, 1.5)),
    _Kind(0.20, (20 * _MINUTE, 4 * _HOUR), 10, (0.0, 0.0), (0.0, 0.0)),
)
_KNOT_SECONDS = 3 * _HOUR
_WANDER = 0.3  # standard deviation of the wander, in daily amplitudes
_JITTER = 0.01  # standard deviation of the clock jitter, in intervals (clipped at 4x)
_PLACEMENT_ATTEMPTS = 50
_EMIT_STEPS = 1_440  # readings per device converted to Python objects at once


@dataclass(frozen=True)
class _Devices:
    baseline: np.ndarray
    amplitude: np.ndarray
    peak_hour: np.ndarray
    noise: np.ndarray
    phase: np.ndarray  # position of the readings within their interval


def generate_sensor_stream(config: SensorStreamConfig) -> Iterator[SimulatedEvent]:
    """Readings of every device, merged in non-decreasing event_time order.

    >>> config = SensorStreamConfig(seed=1, n_devices=5, days=2, anomaly_rate=0.01)
    >>> first = next(generate_sensor_stream(config))
    >>> first.topic, first.value["metric"], first.truth["anomaly_kind"] in (None, *ANOMALY_KINDS)
    ('sensor-readings', 'temperature', True)
    >>> readings = list(generate_sensor_stream(config))
    >>> anomalous = sum(reading.truth["is_anomaly"] for reading in readings)
    >>> len(readings) == 5 * 2 * 1_440, 0 < anomalous < 0.05 * len(readings)
    (True, True)
    """
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    device_rng, clock_rng, signal_rng, anomaly_rng = (np.random.default_rng(s) for s in seeds)
    devices = _build_devices(config, device_rng)
    ts = _clock(devices, config, clock_rng)
    value = _signal(devices, ts, config, signal_rng)
    kind = _inject(devices, value, ts < config.end, config, anomaly_rng)
    yield from _emit(ts, value, kind, config)


# Devices and normal signal


def _build_devices(config: SensorStreamConfig, rng: np.random.Generator) -> _Devices:
    """Sites and parameters of every device."""
    n = config.n_devices
    shares = np.array([site.share for site in _SITES])
    site = rng.choice(len(_SITES), size=n, p=shares / shares.sum())
    baseline = rng.uniform(*_site_ranges("baseline", site))
    amplitude = rng.uniform(*_site_ranges("amplitude", site))
    noise = np.exp(rng.uniform(*np.log(_site_ranges("noise", site))))
    peak_hour = rng.uniform(*_site_ranges("peak_hour", site))
    return _Devices(baseline, amplitude, peak_hour % 24.0, noise, rng.uniform(0.05, 0.95, n))


def _site_ranges(field: str, site: np.ndarray) -> np.ndarray:
    """Lows and highs (2 x device) of a site parameter range, for each device's site."""
    return np.array([getattr(each, field) for each in _SITES])[site].T


def _clock(devices: _Devices, config: SensorStreamConfig, rng: np.random.Generator) -> np.ndarray:
    """Device x step reading times; step k of every device lies within the k-th interval."""
    n_steps = math.ceil(config.days * _DAY / config.interval_seconds)
    jitter = np.clip(rng.normal(0.0, _JITTER, (devices.phase.size, n_steps)), -4 * _JITTER, 4 * _JITTER)
    position = np.arange(n_steps) + devices.phase[:, None] + jitter
    return np.round(config.start + position * config.interval_seconds, 3)


def _signal(
    devices: _Devices, ts: np.ndarray, config: SensorStreamConfig, rng: np.random.Generator
) -> np.ndarray:
    """Normal values: baseline, daily cosine, slow wander and white noise."""
    hour = ts % _DAY / _HOUR
    cycle = devices.amplitude[:, None] * np.cos(2 * math.pi * (hour - devices.peak_hour[:, None]) / 24.0)
    origin = math.floor(config.start / _KNOT_SECONDS) * _KNOT_SECONDS
    position = (ts - origin) / _KNOT_SECONDS
    n_knots = int(position.max(initial=0.0)) + 2
    knots = rng.normal(0.0, 1.0, (ts.shape[0], n_knots)) * (_WANDER * devices.amplitude[:, None])
    left = position.astype(np.int64)
    fraction = position - left
    wander = np.take_along_axis(knots, left, axis=1) * (1.0 - fraction)
    wander += np.take_along_axis(knots, left + 1, axis=1) * fraction
    noise = rng.normal(0.0, 1.0, ts.shape) * devices.noise[:, None]
    return devices.baseline[:, None] + cycle + wander + noise


# Anomalies


def _inject(
    devices: _Devices,
    value: np.ndarray,
    valid: np.ndarray,
    config: SensorStreamConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Add anomaly episodes to ``value`` in place; return the device x step kind codes."""
    kind = np.zeros(value.shape, dtype=np.int8)
    n_valid = valid.sum(axis=1)  # readings in the span form a prefix of each device's steps
    budget = config.anomaly_rate * float(n_valid.sum())
    for code, spec in enumerate(_KINDS, start=1):
        remaining = spec.share * budget
        while remaining > 0:
            length = _episode_length(spec, remaining, config, rng)
            if length > remaining and rng.random() >= remaining / length:
                break
            placed = _place(kind, n_valid, length, rng)
            while placed is None and length > spec.min_readings:
                length = max(spec.min_readings, length // 2)
                placed = _place(kind, n_valid, length, rng)
            if placed is None:
                break  # no room left for this kind
            remaining -= length
            device, begin = placed
            window = slice(begin, begin + length)
            kind[device, window] = code
            if code == _STUCK:
                value[device, window] = value[device, begin - 1]
                continue
            low, high = spec.noise_size
            size = rng.uniform(low, high) * devices.noise[device]
            low, high = spec.amplitude_size
            size += rng.uniform(low, high) * devices.amplitude[device]
            sign = 1.0 if rng.random() < 0.5 else -1.0
            ramp = np.arange(1, length + 1) / length if code == _DRIFT else 1.0
            value[device, window] += sign * size * ramp
    return kind


def _episode_length(
    spec: _Kind, remaining: float, config: SensorStreamConfig, rng: np.random.Generator
) -> int:
    """Readings of one episode: log-uniform duration, capped by the remaining budget."""
    low, high = spec.duration
    seconds = math.exp(rng.uniform(math.log(low), math.log(high))) if low > 0 else 0.0
    length = max(spec.min_readings, round(seconds / config.interval_seconds))
    return min(length, max(spec.min_readings, math.ceil(remaining)))


def _place(
    kind: np.ndarray, n_valid: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A free window of ``length`` readings after a normal reading, or None if none is found."""
    for _ in range(_PLACEMENT_ATTEMPTS):
        device = int(rng.integers(n_valid.size))
        room = int(n_valid[device]) - length
        if room < 1:
            continue
        begin = int(rng.integers(1, room + 1))
        if not kind[device, begin - 1 : begin + length + 1].any():
            return device, begin
    return None


# Emission


def _emit(
    ts: np.ndarray, value: np.ndarray, kind: np.ndarray, config: SensorStreamConfig
) -> Iterator[SimulatedEvent]:
    """Readings step by step, the devices of a step in time order."""
    device_ids = [f"dev-{i:03d}" for i in range(config.n_devices)]
    value = np.round(value, 3)
    seq = 0
    for first in range(0, ts.shape[1], _EMIT_STEPS):
        steps = slice(first, first + _EMIT_STEPS)
        order = np.argsort(ts[:, steps], axis=0, kind="stable").T  # step x device
        columns = np.arange(order.shape[0])[:, None] + first
        moments = ts[order, columns].ravel()
        keep = moments < config.end
        devices = order.ravel()[keep].tolist()
        values = value[order, columns].ravel()[keep].tolist()
        kinds = kind[order, columns].ravel()[keep].tolist()
        for device, moment, reading, code in zip(devices, moments[keep].tolist(), values, kinds, strict=True):
            payload = {
                "reading_id": f"r-{seq:09d}",
                "device_id": device_ids[device],
                "metric": METRIC,
                "value": reading,
                "ts": moment,
            }
            truth = {"is_anomaly": code != _NORMAL, "anomaly_kind": ANOMALY_KINDS[code - 1] if code else None}
            yield SimulatedEvent(SENSOR_TOPIC, payload["device_id"], payload, moment, truth)
            seq += 1

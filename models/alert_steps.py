"""The alerts pipeline's step as a pure function: a device's state and a reading in, alerts out.

:func:`assess_reading` counts the reading in its metric's rolling statistics
(:mod:`tables.device_stats`), scores it with the metric's detector
(:mod:`models.anomaly`), compares the series with its daily profile
(:mod:`models.seasonal`) and runs one small state machine per (device, metric):

``spike``
    One outlier whose next reading is normal again.  The alert carries the
    outlier's value, score and time; it is published when that next reading
    comes (a lone outlier is a spike or the start of a level shift, and only
    the next reading tells).
``level_shift``
    Two outliers in a row on the same side.  It is over once
    ``resolve_readings`` readings in a row are closer to the level expected
    before the shift than to the shifted one, that level moving along the daily
    profile (a shift of hours would otherwise meet the daily cycle and end early).
``drift``
    The profile's offset (the last hour's readings minus the profile) beyond
    ``drift_deviations`` deviations (how far an hour usually is from its profile)
    ``drift_readings`` learned readings in a row: readings that each look like the
    one before, the detector's line following them.  It is over once
    ``resolve_readings`` readings in a row are nearer the profile than half the
    offset it opened with, as when a drifted sensor is recalibrated, which the
    open alert absorbs instead of it being a level shift.
``stuck``
    ``stuck_readings`` identical values in a row (readings with decimals
    almost never repeat exactly).  Over once the value moves again.

While an alert is open no other opens for the metric, and outliers are not
learned, so the detector and the profile keep describing normal.  An alert
open for ``max_open_seconds`` (a drift: ``max_drift_seconds``) is resolved and
the detector starts afresh, since the level it knew is that old; if the series
is still away from its profile, a drift opens about an hour later; a drift
open so long is the new normal, and the profile moves to it.  An outlier that
takes the series back towards its profile, from an offset of at least
``return_deviations`` deviations to nearer than it was, is the end of an
episode no alert covers (any longer), not a new one: it is not alerted and the
detector starts afresh.  A ``resolved`` alert (severity ``resolved``)
follows ``resolve_readings`` normal readings in a row.  At most one alert
opens per metric per ``cooldown_seconds``: one that would open sooner is
tracked the same way but not published, and neither is its resolution.

Late and repeated readings: a reading more than ``lateness_seconds`` behind
its metric's newest is ignored (counted in :attr:`DeviceState.ignored`); a
later one, but not after the newest, counts in the statistics only (the
detector follows the series in time order); an exact repeat of the newest
reading (same time and value, a redelivery) is ignored.

Bounded state: a device keeps at most ``max_metrics`` metrics, the first it
reports; readings of any other metric are ignored and counted, so a device
sending random metric names cannot grow its table value.  Nothing here raises
on a parsed reading: whatever the values, the step returns a state and alerts.

The function mutates and returns ``state``; the same readings in the same order
give the same alerts (no clock, no randomness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.contracts import Alert, SensorReading
from models.anomaly import Detector, Score
from models.seasonal import DailyProfile
from tables.device_stats import LATENESS, MetricStats
from tables.windows import DAY, HOUR, MINUTE

SPIKE, LEVEL_SHIFT, DRIFT, STUCK = "spike", "level_shift", "drift", "stuck"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Thresholds and limits of :func:`assess_reading` (see the module docstring)."""

    min_threshold: float = 6.0
    quantile: float = 0.999
    critical_factor: float = 2.0
    cooldown_seconds: float = 30 * MINUTE
    resolve_readings: int = 3
    stuck_readings: int = 6
    drift_deviations: float = 4.5
    drift_readings: int = 10
    return_deviations: float = 2.0
    max_open_seconds: float = 12 * HOUR
    max_drift_seconds: float = 3 * DAY
    lateness_seconds: float = LATENESS
    max_metrics: int = 16

    def detector(self, state: list[Any] | None = None) -> Detector:
        return Detector.from_state(state, min_threshold=self.min_threshold, quantile=self.quantile)

    def profile(self, state: list[Any] | None = None) -> DailyProfile:
        return DailyProfile.from_state(state)

    def severity(self, z: float, threshold: float) -> str:
        """``critical`` from ``critical_factor`` times the threshold up, ``warning`` below.

        >>> AlertPolicy().severity(7.0, 6.0), AlertPolicy().severity(12.0, 6.0)
        ('warning', 'critical')
        """
        return "critical" if z >= self.critical_factor * threshold else "warning"


class MetricState:
    """Everything one (device, metric) series keeps between readings."""

    __slots__ = (
        "detector",
        "drifting",
        "last_alert",
        "last_value",
        "newest",
        "open",
        "pending",
        "profile",
        "repeats",
        "stats",
    )

    def __init__(self, policy: AlertPolicy, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.stats = MetricStats.from_state(state.get("stats"))
        self.detector = policy.detector(state.get("detector"))
        self.newest: float = state.get("newest", -math.inf)
        self.last_value: float | None = state.get("last_value")
        self.repeats: int = state.get("repeats", 0)  # readings in a row equal to last_value
        self.profile = policy.profile(state.get("profile"))
        self.drifting: int = state.get("drifting", 0)  # learned readings in a row far from the profile
        # [ts, value, z, low, high, expected] of an outlier awaiting the next reading
        self.pending: list[float] | None = state.get("pending")
        # [reason, opened_ts, published, anchor, shift, normal_run, base] of the open alert
        self.open: list[Any] | None = state.get("open")
        if self.open is not None and len(self.open) == 6:  # stored before the profile: no base
            self.open.append(None)
        self.last_alert: float = state.get("last_alert", -math.inf)

    def to_state(self) -> dict[str, Any]:
        """The plain form, which earlier versions stored as JSON and ``__init__`` reads."""
        state: dict[str, Any] = {
            "stats": self.stats.to_state(),
            "detector": self.detector.to_state(),
            "newest": self.newest,
            "last_value": self.last_value,
            "repeats": self.repeats,
            "profile": self.profile.to_state(),
            "drifting": self.drifting,
        }
        # -inf is not JSON: an absent key means none yet
        if self.pending is not None:
            state["pending"] = self.pending
        if self.open is not None:
            state["open"] = self.open
        if self.last_alert > -math.inf:
            state["last_alert"] = self.last_alert
        return state


class DeviceState:
    """A device's metrics and how many of its readings were ignored; one table value
    (:mod:`models.device_state_codec` stores it)."""

    __slots__ = ("device_id", "ignored", "metrics")

    def __init__(self, device_id: str, metrics: dict[str, MetricState] | None = None, ignored: int = 0):
        self.device_id = device_id
        self.metrics = metrics if metrics is not None else {}
        self.ignored = ignored

    @property
    def newest(self) -> float:
        """Event time of the device's newest reading (``-inf``: none yet)."""
        return max((metric.newest for metric in self.metrics.values()), default=-math.inf)

    def is_idle(self, watermark: float, idle_seconds: float) -> bool:
        """Whether the device sent nothing for ``idle_seconds`` of event time before ``watermark``.

        Such a device is dropped (an alert still open is dropped with it, without a
        ``resolved`` event); its next reading starts it afresh.
        """
        return self.newest < watermark - idle_seconds

    def open_alerts(self) -> dict[str, str]:
        """Metric -> reason of each alert open now (published or not)."""
        return {name: metric.open[0] for name, metric in self.metrics.items() if metric.open is not None}


def assess_reading(
    state: DeviceState | None, reading: SensorReading, policy: AlertPolicy
) -> tuple[DeviceState, list[Alert]]:
    """Count ``reading`` in its device's ``state`` (``None``: a new device) and say what to alert.

    >>> policy = AlertPolicy()
    >>> state, alerts = None, []
    >>> for i in range(40):  # quiet readings, one a minute, then a spike at i = 30
    ...     value = 50.0 if i == 30 else 20.0 + (0.1 if i % 2 else -0.1)
    ...     state, new = assess_reading(state, SensorReading("dev-1", "temp", value, 60.0 * i), policy)
    ...     alerts += new
    >>> [(a.severity, a.reason, a.value, a.ts) for a in alerts]
    [('critical', 'spike', 50.0, 1800.0), ('resolved', 'spike', 20.1, 1980.0)]
    """
    if state is None:
        state = DeviceState(reading.device_id)
    if why_ignored(state, reading, policy) is not None:
        state.ignored += 1
        return state, []
    metric = state.metrics.get(reading.metric)
    if metric is None:
        metric = state.metrics[reading.metric] = MetricState(policy)
    ts, value = reading.ts, reading.value
    metric.stats.add(ts, value)
    if ts <= metric.newest:
        return state, []
    metric.newest = ts
    alerts = _step(metric, reading, policy)
    return state, alerts


#: Why :func:`why_ignored` ignores a reading that is an exact repeat (a redelivery or a retry).
REPEATED = "repeated"


def why_ignored(state: DeviceState | None, reading: SensorReading, policy: AlertPolicy) -> str | None:
    """Why :func:`assess_reading` would ignore ``reading`` (``None``: it would not).

    >>> policy = AlertPolicy()
    >>> state, _ = assess_reading(None, SensorReading("dev-1", "temp", 20.0, 1_000.0), policy)
    >>> why_ignored(state, SensorReading("dev-1", "temp", 20.0, 1_000.0), policy)
    'repeated'
    >>> why_ignored(state, SensorReading("dev-1", "temp", 21.0, 600.0), policy)
    'reading at ts 600.0 is 400 s behind the newest reading of temp (at most 300 s taken)'
    """
    if state is None:
        return None
    if reading.device_id != state.device_id:  # a routing bug upstream: never mix two devices
        return f"reading of device {reading.device_id!r} in the state of {state.device_id!r}"
    metric = state.metrics.get(reading.metric)
    if metric is None:
        if len(state.metrics) >= policy.max_metrics:
            return (
                f"device {state.device_id!r} already reports {len(state.metrics)} metrics "
                f"(at most {policy.max_metrics}); {reading.metric!r} is not tracked"
            )
        return None
    ts, value = reading.ts, reading.value
    if ts == metric.newest and value == metric.last_value:
        return REPEATED
    if ts < metric.newest - policy.lateness_seconds:
        return (
            f"reading at ts {ts} is {metric.newest - ts:.0f} s behind the newest reading of "
            f"{reading.metric} (at most {policy.lateness_seconds:.0f} s taken)"
        )
    return None


def _step(metric: MetricState, reading: SensorReading, policy: AlertPolicy) -> list[Alert]:
    ts, value = reading.ts, reading.value
    repeated = value == metric.last_value
    metric.repeats = metric.repeats + 1 if repeated else 1
    metric.last_value = value
    detector = metric.detector
    score = detector.score(ts, value)
    outlier = score.warm and score.z >= score.threshold
    if metric.open is not None:
        return _while_open(metric, reading, score, outlier, repeated, policy)
    alerts: list[Alert] = []
    if metric.repeats >= policy.stuck_readings:
        metric.pending = None
        return _open(metric, reading, STUCK, score, float(metric.repeats), policy)
    if metric.pending is not None:
        pending_ts, pending_value, pending_z, low, high, expected = metric.pending
        metric.pending = None
        same_side = outlier and (value - expected) * (pending_value - expected) > 0
        if same_side:
            return _open(metric, reading, LEVEL_SHIFT, score, score.z, policy, anchor=expected)
        spike = SensorReading(reading.device_id, reading.metric, pending_value, pending_ts)
        pending_score = Score(pending_z, expected, low, high, score.threshold, score.slope_per_hour)
        alerts = _open(metric, spike, SPIKE, pending_score, pending_z, policy, anchor=expected)
        metric.open[5] = 0 if outlier else 1  # this reading is the first normal one (or not)
        if not outlier and not repeated:
            _learn(metric, ts, value, score)
        return alerts
    if outlier and _returning(metric, reading, score, policy):
        # The end of an episode no alert covers (any longer): what the detector knew is the episode.
        detector.reset()
        metric.profile.restart_offset(ts)
        metric.drifting = 0
        _learn(metric, ts, value, None)
        return []
    if outlier:
        detector.observe(score.z)
        metric.pending = [ts, value, score.z, score.low, score.high, score.expected]
        return []
    if repeated:  # a stuck value is not what the series normally does
        return alerts
    _learn(metric, ts, value, score)
    if _drifting(metric, policy):
        return _open_drift(metric, reading, policy)
    return alerts


def _returning(metric: MetricState, reading: SensorReading, score: Score, policy: AlertPolicy) -> bool:
    """Whether an outlier takes the series back towards its daily profile from an offset of at
    least ``return_deviations`` deviations, to nearer the profile than it was."""
    profile = metric.profile
    offset = profile.offset
    if not (profile.warm and profile.settled) or offset is None:
        return False
    if abs(offset) < policy.return_deviations * profile.scale:
        return False
    towards = (reading.value - score.expected) * offset < 0
    return towards and abs(reading.value - profile.expected(reading.ts)) < abs(offset)


def _learn(metric: MetricState, ts: float, value: float, score: Score | None) -> None:
    metric.detector.learn(ts, value, score)
    metric.profile.learn(ts, value)


def _drifting(metric: MetricState, policy: AlertPolicy) -> bool:
    """Whether the offset has been beyond ``drift_deviations`` deviations ``drift_readings`` learned
    readings in a row (counting this one)."""
    profile = metric.profile
    offset = profile.offset
    away = (
        profile.warm
        and profile.settled
        and offset is not None
        and abs(offset) > policy.drift_deviations * profile.scale
    )
    metric.drifting = metric.drifting + 1 if away else 0
    return metric.drifting >= policy.drift_readings


def _open_drift(metric: MetricState, reading: SensorReading, policy: AlertPolicy) -> list[Alert]:
    """Open a drift: the level before it is the profile, the shift the offset (scored in deviations)."""
    profile = metric.profile
    expected, offset, scale = profile.expected(reading.ts), profile.offset or 0.0, profile.scale
    bound, bar = policy.drift_deviations * scale, policy.drift_deviations
    how = Score(abs(offset) / scale, expected, expected - bound, expected + bound, bar, 0.0)
    return _open(metric, reading, DRIFT, how, how.z, policy, anchor=expected, shift=offset)


def _open(
    metric: MetricState,
    reading: SensorReading,
    reason: str,
    score: Score,
    alert_score: float,
    policy: AlertPolicy,
    *,
    anchor: float = math.nan,
    shift: float | None = None,
) -> list[Alert]:
    published = reading.ts >= metric.last_alert + policy.cooldown_seconds
    if shift is None:
        shift = reading.value - anchor if math.isfinite(anchor) else 0.0
    base = metric.profile.expected(reading.ts)  # the anchor moves along the daily profile
    metric.open = [
        reason,
        reading.ts,
        published,
        anchor if math.isfinite(anchor) else None,
        shift,
        0,
        base if math.isfinite(base) else None,
    ]
    metric.drifting = 0
    if not published:
        return []
    metric.last_alert = reading.ts
    severity = "warning" if reason == STUCK else policy.severity(score.z, score.threshold)
    return [_alert(metric, reading, severity, alert_score, reason, score)]


def _reference(metric: MetricState, anchor: float, base: float | None, ts: float) -> float:
    """The level expected before the episode, at ``ts``: ``anchor`` moved along the daily profile."""
    if base is None:
        return anchor
    now = metric.profile.expected(ts)
    return anchor if math.isnan(now) else anchor + now - base


def _while_open(
    metric: MetricState,
    reading: SensorReading,
    score: Score,
    outlier: bool,
    repeated: bool,
    policy: AlertPolicy,
) -> list[Alert]:
    assert metric.open is not None
    reason, opened, published, anchor, shift, normal_run, base = metric.open
    value = reading.value
    reference = _reference(metric, anchor, base, reading.ts) if anchor is not None else None
    if reason == SPIKE and outlier and reference is not None and (value - reference) * shift > 0:
        # Outliers on the spike's side again: a level shift that began with a spike-sized step
        # (or a small one, its second reading under the threshold).  Same alert, new rule.
        reason = metric.open[0] = LEVEL_SHIFT
        shift = metric.open[4] = value - reference
    if reason == STUCK:
        normal = not repeated
    elif reason in (LEVEL_SHIFT, DRIFT) and reference is not None and shift:
        normal = abs(value - reference) < abs(shift) / 2  # back nearer the old level than the new one
    else:
        normal = not outlier
    normal_run = normal_run + 1 if normal else 0
    metric.open[5] = normal_run
    longest = policy.max_drift_seconds if reason == DRIFT else policy.max_open_seconds
    timed_out = reading.ts - opened >= longest
    if reason == SPIKE and normal and not repeated:
        _learn(metric, reading.ts, value, score)
    if normal_run < policy.resolve_readings and not timed_out:
        return []
    metric.open = None
    if reason == DRIFT and timed_out and not normal and reference is not None:
        metric.profile.move(value - reference)  # so long away from the profile: the new normal
    if reason != SPIKE:  # what the detector knew is from before the episode
        metric.detector.reset()
        metric.profile.restart_offset(reading.ts)
    if not published:
        return []
    return [_alert(metric, reading, RESOLVED, score.z, reason, score)]


def _alert(
    metric: MetricState, reading: SensorReading, severity: str, score: float, reason: str, how: Score
) -> Alert:
    if how.warm:
        expected = (how.low, how.high)
    else:  # not enough history for a prediction: what the last hour ranged over
        hour = metric.stats.window(reading.ts, "1h")
        expected = (hour.min, hour.max) if hour.count else (reading.value, reading.value)
    return Alert(
        device_id=reading.device_id,
        metric=reading.metric,
        severity=severity,
        score=score,
        value=reading.value,
        expected=expected,
        reason=reason,
        ts=reading.ts,
    )

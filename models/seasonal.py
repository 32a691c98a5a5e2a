"""The daily profile of one series, and how far the series is from it now.

The profile is the series' usual value at each hour of the UTC day: 24 hourly
levels, each the mean of that hour's learned readings over the days (a plain
mean of the first days, then an exponential average over about
``horizon_days``), read between hours by linear interpolation from one hour's
middle to the next.  An hour is learned once a reading of a later hour comes.

Against the profile, two numbers:

``offset``
    The deseasonalised level: the readings minus the profile, averaged over the
    last ``offset_seconds`` with exponential weights in event time.
``deviation``
    How far an hour's mean usually is from its profile level: the mean absolute
    error of the hourly means over about ``deviation_days`` days.  It is the
    offset's own scale, what the series' slow wander (weather, occupancy) and the
    profile's error add up to.

A sensor that drifts takes its offset away from 0 over hours or days while each
reading still looks like the one before, which the readings' own robust z-score
(:mod:`models.anomaly`) cannot see.  The caller learns only readings it takes as
normal, and not while an alert is open, so the profile keeps describing normal.

The state is 24 levels and 8 numbers (:meth:`DailyProfile.to_state`), plain JSON.
"""

from __future__ import annotations

import math
from typing import Any

from tables.windows import DAY, HOUR

HOURS = 24


class DailyProfile:
    """Hourly levels of a series' day, its current offset from them, and the offset's scale.

    >>> profile = DailyProfile()
    >>> for i in range(3 * 1_440):  # three days of a daily cosine with noise, one reading a minute
    ...     ts = 60.0 * i
    ...     profile.learn(ts, 20.0 + math.cos(2 * math.pi * ts / DAY) + (0.1 if i % 2 else -0.1))
    >>> profile.warm, round(profile.expected(0.0), 2), round(profile.expected(DAY / 2), 2)
    (True, 20.99, 19.01)
    >>> for i in range(60):  # an hour 0.5 warmer than usual: the offset weighs it 1 - 1/e
    ...     ts = 3 * DAY + 60.0 * i
    ...     profile.learn(ts, 20.5 + math.cos(2 * math.pi * ts / DAY) + (0.1 if i % 2 else -0.1))
    >>> round(profile.offset, 3), profile.settled
    (0.325, True)
    """

    __slots__ = (
        "count",
        "deviation",
        "deviation_days",
        "horizon_days",
        "hour",
        "hours",
        "levels",
        "min_deviation",
        "offset_seconds",
        "offset_sum",
        "offset_ts",
        "offset_weight",
        "sum",
    )

    def __init__(
        self,
        horizon_days: float = 7.0,
        deviation_days: float = 3.0,
        offset_seconds: float = HOUR,
        min_deviation: float = 1e-3,
    ) -> None:
        self.horizon_days = horizon_days
        self.deviation_days = deviation_days
        self.offset_seconds = offset_seconds
        self.min_deviation = min_deviation
        self.levels: list[float | None] = [None] * HOURS  # None: no reading of that hour yet
        self.hour: int | None = None  # the hour being summed, counted from ts 0
        self.sum = 0.0
        self.count = 0
        self.hours = 0  # hourly errors learned (capped)
        self.deviation = 0.0
        # offset = offset_sum / offset_weight: the weights sum to 1 - exp(-(time covered) / offset_seconds)
        self.offset_sum = 0.0
        self.offset_weight = 0.0
        self.offset_ts = 0.0

    def to_state(self) -> list[Any]:
        """``[levels, hour, sum, count, hours, deviation, offset_sum, offset_weight, offset_ts]``."""
        return [
            self.levels,
            self.hour,
            self.sum,
            self.count,
            self.hours,
            self.deviation,
            self.offset_sum,
            self.offset_weight,
            self.offset_ts,
        ]

    @classmethod
    def from_state(cls, state: list[Any] | None, **params: float) -> DailyProfile:
        """Rebuild from :meth:`to_state` output (``None``: new) with ``params`` as in ``__init__``."""
        profile = cls(**params)
        if state:
            (
                profile.levels,
                profile.hour,
                profile.sum,
                profile.count,
                profile.hours,
                profile.deviation,
                profile.offset_sum,
                profile.offset_weight,
                profile.offset_ts,
            ) = state
        return profile

    @property
    def warm(self) -> bool:
        """Whether every hour has a level and the deviation rests on a day of hourly errors."""
        return self.hours >= HOURS and None not in self.levels

    @property
    def scale(self) -> float:
        """The deviation, floored at ``min_deviation`` (readings rounded to 3 decimals resolve no less)."""
        return max(self.min_deviation, self.deviation)

    @property
    def offset(self) -> float | None:
        """The deseasonalised level (``None``: no reading since it (re)started)."""
        return self.offset_sum / self.offset_weight if self.offset_weight > 0 else None

    @property
    def settled(self) -> bool:
        """Whether the offset covers ``offset_seconds`` of readings."""
        return self.offset_weight >= 1.0 - math.exp(-1.0)

    def expected(self, ts: float) -> float:
        """The profile's value at ``ts`` (``nan`` while either neighbouring hour has no level)."""
        position = ts % DAY / HOUR - 0.5  # hour i's level sits at i + 0.5
        below = math.floor(position)
        before, after = self.levels[below % HOURS], self.levels[(below + 1) % HOURS]
        if before is None or after is None:
            return math.nan
        return before + (position - below) * (after - before)

    def learn(self, ts: float, value: float) -> None:
        """Take ``value`` at ``ts`` as normal: count it in its hour and in the offset."""
        hour = int(ts // HOUR)
        if hour != self.hour:
            self._close_hour()
            self.hour = hour
        self.sum += value
        self.count += 1
        expected = self.expected(ts)
        if math.isnan(expected):  # the offset starts once the profile has these hours
            self.offset_ts = ts
            return
        kept = math.exp(-max(0.0, ts - self.offset_ts) / self.offset_seconds)
        self.offset_sum = kept * self.offset_sum + (1.0 - kept) * (value - expected)
        self.offset_weight = kept * self.offset_weight + (1.0 - kept)
        self.offset_ts = ts

    def restart_offset(self, ts: float) -> None:
        """Forget the offset at ``ts`` (after an episode it did not follow)."""
        self.offset_sum = self.offset_weight = 0.0
        self.offset_ts = ts

    def move(self, by: float) -> None:
        """Move every hourly level by ``by`` (a change the series stays at)."""
        self.levels = [None if level is None else level + by for level in self.levels]

    def _close_hour(self) -> None:
        if not self.count or self.hour is None:
            return
        mean, at = self.sum / self.count, self.hour % HOURS
        self.sum, self.count = 0.0, 0
        level = self.levels[at]
        if level is None:
            self.levels[at] = mean
            return
        error = mean - level
        self.hours = min(self.hours + 1, round(max(self.horizon_days, self.deviation_days) * HOURS))
        self.deviation += (abs(error) - self.deviation) / min(self.hours, self.deviation_days * HOURS)
        days = min(self.horizon_days, 1 + math.ceil(self.hours / HOURS))  # a plain mean the first days
        self.levels[at] = level + error / days

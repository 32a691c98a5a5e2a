"""Online anomaly score of one (device, metric) series: a robust z-score of the prediction error.

Each reading is predicted from the last :data:`WINDOW` readings the detector
learned, by a Theil-Sen line (the median of the pairwise slopes, then the
median intercept), so that a slow daily cycle is followed instead of flagged.
The score is the absolute prediction error over a robust scale: 1.4826 times
the median absolute error of the last :data:`RESIDUALS` learned readings (the
MAD of errors centred on 0, which equals the standard deviation for Gaussian
errors).  Medians make one outlier among them change nothing.

The threshold is learned per series: a streaming quantile (:class:`QuantileTracker`)
of the series' own scores, floored by the policy, so that a device whose
errors are heavy-tailed gets a higher threshold than a quiet one.

Everything is plain numbers and short lists (:meth:`Detector.to_state`), because the
detector lives in a changelogged table value: no pickle, at most about 100 numbers.
River's detectors were measured against this one (``python -m models.alert_quality``);
they need pickle to be stored and score worse on these streams.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass
from itertools import chain
from typing import Any

#: Readings the prediction line is fitted to.
WINDOW = 20
#: Prediction errors the scale is the median of.
RESIDUALS = 60
#: 1 / Phi^-1(3/4): a median absolute deviation times this estimates a Gaussian's sd.
MAD_TO_SD = 1.4826
# Readings before a prediction error means something (a line through two fits them exactly).
_PREDICTS_FROM = 3


class QuantileTracker:
    """A streaming estimate of the ``tau`` quantile, one number of state.

    Each value moves the estimate up by ``step * tau`` when above it and down by
    ``step * (1 - tau)`` otherwise, which balances where a share ``1 - tau`` of the
    values lie above (a stochastic-approximation quantile, as in "frugal streaming").

    >>> tracker = QuantileTracker(tau=0.9, step=0.1, initial=0.0)
    >>> for i in range(5_000):
    ...     tracker.update(float(i % 100))
    >>> 85 < tracker.value < 95
    True
    """

    __slots__ = ("step", "tau", "value")

    def __init__(self, tau: float, step: float, initial: float) -> None:
        if not 0 < tau < 1:
            raise ValueError("tau must be in (0, 1)")
        self.tau = tau
        self.step = step
        self.value = initial

    def update(self, x: float) -> None:
        if x > self.value:
            self.value += self.step * self.tau
        else:
            self.value -= self.step * (1.0 - self.tau)


@dataclass(frozen=True, slots=True)
class Score:
    """A reading's score: ``z`` (0 until the detector has warmed up), and what was expected.

    ``low`` and ``high`` bound the values whose score stays under ``threshold``.
    """

    z: float
    expected: float
    low: float
    high: float
    threshold: float
    slope_per_hour: float

    @property
    def warm(self) -> bool:
        return not math.isnan(self.expected)


class Detector:
    """The robust z-score detector of one series, with its learned threshold.

    Parameters
    ----------
    min_threshold
        The threshold's floor, in robust standard deviations.
    quantile
        The share of the series' own scores kept under the learned threshold.
    min_scale
        The scale's floor, in the metric's unit: readings rounded to 3 decimals
        cannot resolve less.
    warmup
        Prediction errors learned before any score.

    >>> detector = Detector()
    >>> for i in range(30):  # a slow ramp with noise
    ...     detector.learn(60.0 * i, 20.0 + 0.01 * i + (0.1 if i % 2 else -0.1))
    >>> round(detector.score(1_800.0, 20.3).z, 1), round(detector.score(1_800.0, 22.0).z, 1)
    (0.0, 11.5)
    """

    __slots__ = (
        "_ordered_residuals",
        "_ordered_slopes",
        "_slope_rows",
        "min_scale",
        "min_threshold",
        "quantile",
        "residuals",
        "threshold",
        "ts",
        "values",
        "warmup",
    )

    def __init__(
        self,
        min_threshold: float = 6.0,
        quantile: float = 0.999,
        min_scale: float = 1e-3,
        warmup: int = 10,
    ) -> None:
        self.min_threshold = min_threshold
        self.quantile = quantile
        self.min_scale = min_scale
        self.warmup = warmup
        self.ts: list[float] = []
        self.values: list[float] = []
        self.residuals: list[float] = []  # absolute prediction errors of learned readings
        self.threshold = QuantileTracker(quantile, step=0.5, initial=min_threshold)
        # Derived from the lists above and kept along as they change, so that a reading costs the
        # slopes to one new reading and one insertion, not every pair and a sort; None: rebuild.
        self._slope_rows: list[list[float]] | None = []  # row i: slopes from reading i to each later one
        self._ordered_slopes: list[float] | None = []  # every row's slopes, sorted (None: sort them)
        self._ordered_residuals: list[float] | None = []

    def to_state(self) -> list[Any]:
        """``[ts, values, residuals, threshold]``: plain lists and a number, for orjson."""
        return [self.ts, self.values, self.residuals, self.threshold.value]

    @classmethod
    def from_state(cls, state: list[Any] | None, **params: float) -> Detector:
        """Rebuild from :meth:`to_state` output (``None``: new) with ``params`` as in ``__init__``."""
        detector = cls(**params)  # type: ignore[arg-type]
        if state:
            detector.ts, detector.values, detector.residuals, detector.threshold.value = state
            detector._slope_rows = detector._ordered_slopes = detector._ordered_residuals = None
        return detector

    def reset(self) -> None:
        """Forget the series' recent shape (after a level it will not return from); keep the threshold."""
        self.ts, self.values, self.residuals = [], [], []
        self._slope_rows, self._ordered_slopes, self._ordered_residuals = [], [], []

    @property
    def warm(self) -> bool:
        """Whether the scale rests on ``warmup`` prediction errors."""
        return len(self.residuals) >= self.warmup

    def predict(self, ts: float) -> tuple[float, float]:
        """The expected value at ``ts`` and the Theil-Sen slope per second (``nan`` if too few readings)."""
        times, values = self.ts, self.values
        if len(values) < 2:
            return (values[0] if values else math.nan), 0.0
        slopes = self._ordered_slopes
        if slopes is None:
            rows = self._slope_rows if self._slope_rows is not None else self._build_slope_rows()
            # In the order of the pairs (i, j > i): ties sort alike.
            slopes = sorted(chain.from_iterable(rows))
            if all(map(math.isfinite, slopes)):  # kept sorted from here on (a nan has no place in order)
                self._ordered_slopes = slopes
        slope = _median(slopes) if slopes else 0.0
        intercept = _median(sorted([v - slope * (t - ts) for t, v in zip(times, values, strict=True)]))
        return intercept, slope

    def scale(self) -> float:
        """The robust standard deviation of the prediction errors (floored)."""
        if not self.residuals:
            return self.min_scale
        ordered = self._ordered_residuals
        if ordered is None:
            ordered = self._ordered_residuals = sorted(self.residuals)
        return max(self.min_scale, MAD_TO_SD * _median(ordered))

    def score(self, ts: float, value: float) -> Score:
        """Score ``value`` at ``ts`` without learning it."""
        threshold = max(self.min_threshold, self.threshold.value)
        if not self.warm:
            return Score(0.0, math.nan, -math.inf, math.inf, threshold, 0.0)
        expected, slope = self.predict(ts)
        scale = self.scale()
        return Score(
            z=abs(value - expected) / scale,
            expected=expected,
            low=expected - threshold * scale,
            high=expected + threshold * scale,
            threshold=threshold,
            slope_per_hour=slope * 3_600.0,
        )

    def learn(self, ts: float, value: float, score: Score | None = None) -> None:
        """Take ``value`` at ``ts`` as normal; ``score``, its score if it had one, trains the threshold."""
        if len(self.values) >= _PREDICTS_FROM:
            expected = score.expected if score is not None and score.warm else self.predict(ts)[0]
            self._add_residual(abs(value - expected))
        if score is not None and score.warm:
            self.threshold.update(score.z)
        rows, ordered = self._slope_rows, self._ordered_slopes
        if rows is not None:
            for row, t, v in zip(rows, self.ts, self.values, strict=True):
                if t != ts:
                    slope = (value - v) / (ts - t)
                    row.append(slope)
                    if ordered is not None:
                        if math.isfinite(slope):
                            insort(ordered, slope)
                        else:
                            ordered = self._ordered_slopes = None
            rows.append([])
        else:
            ordered = self._ordered_slopes = None  # derived from the rows
        self.ts.append(ts)
        self.values.append(value)
        if len(self.values) > WINDOW:
            del self.ts[0]
            del self.values[0]
            if rows is not None:
                oldest = rows.pop(0)
                if ordered is not None:  # the oldest reading's slopes leave the median
                    for slope in oldest:
                        del ordered[bisect_left(ordered, slope)]

    def observe(self, z: float) -> None:
        """Train the threshold on a score that is not learned (an outlier)."""
        self.threshold.update(z)

    def _add_residual(self, residual: float) -> None:
        self.residuals.append(residual)
        ordered = self._ordered_residuals
        if ordered is not None:
            insort(ordered, residual)
        if len(self.residuals) > RESIDUALS:
            oldest = self.residuals.pop(0)
            if ordered is not None:
                at = bisect_left(ordered, oldest)
                if at < len(ordered) and ordered[at] == oldest:
                    del ordered[at]
                else:  # a nan, which no search finds
                    self._ordered_residuals = None

    def _build_slope_rows(self) -> list[list[float]]:
        times, values = self.ts, self.values
        n = len(values)
        rows = [
            [(values[j] - values[i]) / (times[j] - times[i]) for j in range(i + 1, n) if times[j] != times[i]]
            for i in range(n)
        ]
        self._slope_rows = rows
        return rows


def _median(ordered: list[float]) -> float:
    """The median of sorted, non-empty ``ordered``, as :func:`statistics.median` computes it."""
    n = len(ordered)
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2

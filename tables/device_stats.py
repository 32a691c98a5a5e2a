"""Rolling statistics of one metric of one device over aligned event-time buckets.

Each window reports the count, mean, standard deviation (population, ``ddof=0``),
minimum and maximum of the readings whose buckets it holds.  A window of ``n``
buckets at time ``ts`` holds the buckets ``(bucket(ts) - n, bucket(ts)]``, as
:class:`~tables.windows.BucketCounts` does for merchants: the ``1m`` window is the
last six 10-second buckets, so it reaches 50 to 60 seconds back; ``5m`` thirty of
them; ``1h`` sixty 1-minute buckets.

Memory does not grow with the stream: at most :data:`FINE_KEEP` 10-second and
:data:`COARSE_KEEP` 1-minute buckets of five numbers are kept, whatever the
reading rate.  Each keeps :data:`LATENESS` beyond its longest window, so that a
reading up to that late still finds its whole window; the caller decides what to
do with later ones (:mod:`models.alert_steps` leaves them out of the statistics).

Sums are of ``value - ref``, ``ref`` being the first value the series saw, so
that the variance of readings far from zero but close together (a temperature
near 20 with noise of 0.05) does not cancel away in ``sum(x*x) - sum(x)**2 / n``.
What is left of that cancellation bounds the standard deviation's error by about
``sqrt(4 * 2**-52 * mean((value - ref)**2))``: 1e-6 for readings 100 units away from
the first one, whatever their spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tables.windows import MINUTE, BucketCounts

#: How late a reading may be, behind the newest of its series, and still count exactly.
LATENESS = 5 * MINUTE
_FINE_WIDTH = 10.0
_COARSE_WIDTH = MINUTE
#: Buckets kept: the longest window, the lateness, and one for a bucket boundary between them.
FINE_KEEP = 30 + round(LATENESS / _FINE_WIDTH) + 1
COARSE_KEEP = 60 + round(LATENESS / _COARSE_WIDTH) + 1
# window name -> (fine?, buckets in the window)
WINDOWS: dict[str, tuple[bool, int]] = {"1m": (True, 6), "5m": (True, 30), "1h": (False, 60)}
_REDUCERS = ("sum", "sum", "sum", "min", "max")  # count, sum of x - ref, of its square, min, max
# Arrays, not lists: a device's state is encoded about once per reading, and arrays are a copy away.
_TYPECODES = ("q", "d", "d", "d", "d")
# BucketCounts' width, keep, fields, reducers and typecodes of each bucket size
_FINE = (_FINE_WIDTH, FINE_KEEP, 5, _REDUCERS, _TYPECODES)
_COARSE = (_COARSE_WIDTH, COARSE_KEEP, 5, _REDUCERS, _TYPECODES)
#: Bucket ids, ascending, and one column per quantity (:meth:`~tables.windows.BucketCounts.columns`).
BucketColumns = tuple[list[int], Sequence[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of the readings in one window (``count`` 0: no reading, the rest ``nan``)."""

    count: int
    mean: float
    std: float
    min: float
    max: float


class MetricStats:
    """Rolling 1-minute, 5-minute and 1-hour statistics of one (device, metric) series.

    >>> stats = MetricStats()
    >>> for ts, value in [(0.0, 20.0), (30.0, 22.0), (65.0, 24.0)]:
    ...     stats.add(ts, value)
    >>> stats.window(65.0, "1m")  # buckets 1..6 of 10 seconds: the readings at 30 and 65
    WindowStats(count=2, mean=23.0, std=1.0, min=22.0, max=24.0)
    >>> stats.add(3_000.0, 21.0)
    >>> stats.window(3_000.0, "1h").count, stats.window(3_000.0, "5m").count
    (4, 1)
    >>> MetricStats.from_state(stats.to_state()).to_state() == stats.to_state()
    True
    """

    __slots__ = ("coarse", "fine", "ref")

    def __init__(self) -> None:
        self.ref: float | None = None
        self.fine = BucketCounts(*_FINE)
        self.coarse = BucketCounts(*_COARSE)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> MetricStats:
        """Rebuild from :meth:`to_state` output (``None``: a new series)."""
        stats = cls()
        if state:
            stats.ref = state["ref"]
            stats.fine = BucketCounts.from_state(state["fine"], *_FINE)
            stats.coarse = BucketCounts.from_state(state["coarse"], *_COARSE)
        return stats

    @classmethod
    def from_columns(cls, ref: float | None, fine: BucketColumns, coarse: BucketColumns) -> MetricStats:
        """Rebuild from ``ref`` and each bucket size's :meth:`~tables.windows.BucketCounts.columns`."""
        stats = cls()
        stats.ref = ref
        stats.fine = BucketCounts.from_columns(*fine, *_FINE)
        stats.coarse = BucketCounts.from_columns(*coarse, *_COARSE)
        return stats

    def to_state(self) -> dict[str, Any]:
        """Plain numbers and lists, for orjson: ``{"ref", "fine": [[bucket, ...]], "coarse": ...}``."""
        return {"ref": self.ref, "fine": self.fine.to_state(), "coarse": self.coarse.to_state()}

    @property
    def newest_bucket_end(self) -> float | None:
        """End of the newest 1-minute bucket held (``None``: nothing held)."""
        newest = self.coarse.newest
        return None if newest is None else (newest + 1) * _COARSE_WIDTH

    def add(self, ts: float, value: float) -> None:
        """Count one reading."""
        if self.ref is None:
            self.ref = value
        shifted = value - self.ref
        row = (1, shifted, shifted * shifted, value, value)
        self.fine.add(ts, row)
        self.coarse.add(ts, row)

    def window(self, ts: float, name: str) -> WindowStats:
        """Statistics of the window ``name`` (a key of :data:`WINDOWS`) ending at the bucket of ``ts``."""
        fine, n_buckets = WINDOWS[name]
        counts = self.fine if fine else self.coarse
        return self._stats(counts.window_sums(ts, n_buckets))

    def windows(self, ts: float) -> dict[str, WindowStats]:
        """Every window of :data:`WINDOWS` at ``ts``."""
        return {name: self.window(ts, name) for name in WINDOWS}

    def _stats(self, sums: list[float]) -> WindowStats:
        count, total, squares, low, high = sums
        n = int(count)
        if n == 0 or self.ref is None:
            return WindowStats(0, math.nan, math.nan, math.nan, math.nan)
        mean = total / n
        variance = max(0.0, squares / n - mean * mean)  # rounding can take it just below 0
        return WindowStats(n, self.ref + mean, math.sqrt(variance), low, high)

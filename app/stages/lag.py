"""The recent lags of something, with their quantiles (staleness, event-to-output latency)."""

from __future__ import annotations

from collections import deque


class LagSample:
    """The last ``size`` lags (seconds) of something, with their quantiles.

    >>> lags = LagSample(size=3)
    >>> for lag in (0.1, 0.2, 0.3, 0.4):
    ...     lags.add(lag)
    >>> lags.quantile(0.5), len(lags.values)
    (0.3, 3)
    """

    def __init__(self, size: int = 1_000) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def quantile(self, q: float) -> float | None:
        return self.quantiles(q)[0]

    def quantiles(self, *qs: float) -> list[float | None]:
        """The ``qs`` quantiles, from one sort (views and benchmarks poll reports often).

        >>> lags = LagSample(size=4)
        >>> for lag in (0.4, 0.1, 0.3, 0.2):
        ...     lags.add(lag)
        >>> lags.quantiles(0.0, 0.5, 1.0)
        [0.1, 0.3, 0.4]
        """
        if not self.values:
            return [None] * len(qs)
        ordered = sorted(self.values)
        last = len(ordered) - 1
        return [ordered[min(last, int(q * len(ordered)))] for q in qs]

    def report(self) -> dict[str, float | None]:
        p50, p99, most = self.quantiles(0.5, 0.99, 1.0)
        return {"p50_ms": _ms(p50), "p99_ms": _ms(p99), "max_ms": _ms(most)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)

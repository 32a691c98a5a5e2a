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
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def report(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 1)

        return {
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.quantile(1.0)),
        }

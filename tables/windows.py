"""Event-time windowing helpers shared by every pipeline's feature logic.

Two kinds of window state are kept, both as plain JSON-friendly structures so
that a whole entity's state is one table value (one RocksDB read and one
changelog write per event):

* :class:`EventLog` keeps individual events sorted by event time, for exact
  sliding windows ``(t - horizon, t]`` over entities with few events (a card).
* :class:`BucketCounts` keeps sums per aligned time bucket, for entities with
  many events (a merchant): the window of horizon ``n * width`` at time ``t``
  holds the buckets ``(bucket(t) - n, bucket(t)]``.

Both drop what no window can reach any more, so state does not grow without
bound as event time moves on.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0


def bucket_of(ts: float, width: float) -> int:
    """Index of the aligned bucket of ``width`` seconds that holds ``ts``.

    >>> bucket_of(3_599.9, HOUR), bucket_of(3_600.0, HOUR)
    (0, 1)
    """
    return math.floor(ts / width)


class EventLog:
    """Events of one entity sorted by event time, as parallel columns.

    Parameters
    ----------
    columns
        Names of the values stored with each event besides its timestamp.
    retention
        Seconds of event time kept behind the newest event seen.

    >>> log = EventLog(("amount",), retention=10.0)
    >>> for ts, amount in [(1.0, 5.0), (3.0, 7.0), (2.0, 1.0), (20.0, 2.0)]:
    ...     _ = log.insert(ts, (amount,))
    >>> log.ts, log.column("amount")
    ([1.0, 2.0, 3.0, 20.0], [5.0, 1.0, 7.0, 2.0])
    >>> log.expire(), log.ts
    (3, [20.0])
    """

    __slots__ = ("_columns", "_names", "retention", "ts")

    def __init__(self, columns: Sequence[str], retention: float) -> None:
        self._names = tuple(columns)
        self.retention = retention
        self.ts: list[float] = []
        self._columns: list[list[Any]] = [[] for _ in self._names]

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, columns: Sequence[str], retention: float) -> EventLog:
        """Rebuild a log from :meth:`to_state` output (``None`` gives an empty log)."""
        log = cls(columns, retention)
        if state:
            log.ts = state["ts"]
            log._columns = [state[name] for name in log._names]
        return log

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"ts": self.ts}
        state.update(zip(self._names, self._columns, strict=True))
        return state

    def column(self, name: str) -> list[Any]:
        return self._columns[self._names.index(name)]

    @property
    def newest(self) -> float:
        return self.ts[-1] if self.ts else -math.inf

    def insert(self, ts: float, values: Sequence[Any]) -> int:
        """Add an event after any others with the same timestamp; return its index.

        Nothing is expired here, so that an event older than the retention still
        gets its own window: call :meth:`expire` once it has been read.
        """
        index = bisect_right(self.ts, ts)
        self.ts.insert(index, ts)
        for column, value in zip(self._columns, values, strict=True):
            column.insert(index, value)
        return index

    def window(self, end_index: int, horizon: float) -> range:
        """Indexes of events in ``(ts[end_index] - horizon, ts[end_index]]`` up to ``end_index``.

        Events that share the end timestamp but came later in the log are excluded:
        they were inserted after the end event (see :meth:`insert`).
        """
        start = bisect_right(self.ts, self.ts[end_index] - horizon, 0, end_index + 1)
        return range(start, end_index + 1)

    def expire(self) -> int:
        """Drop events more than ``retention`` behind the newest; return how many."""
        if not self.ts:
            return 0
        dropped = bisect_right(self.ts, self.ts[-1] - self.retention)
        if dropped:
            del self.ts[:dropped]
            for column in self._columns:
                del column[:dropped]
        return dropped


class BucketCounts:
    """Per-bucket sums of several quantities over aligned event-time buckets.

    Parameters
    ----------
    width
        Bucket width in seconds.
    keep
        Number of buckets kept behind the newest bucket seen (the longest window).
    fields
        Number of quantities summed per bucket.

    >>> counts = BucketCounts(width=HOUR, keep=24, fields=2)
    >>> counts.add(10.0, (1, 12.5)); counts.add(4_000.0, (1, 2.5)); counts.add(90_000.0, (1, 1.0))
    >>> counts.window_sums(90_000.0, 24)  # buckets 2..25: only the newest event
    [1, 1.0]
    >>> counts.window_sums(90_000.0, 25)  # buckets 1..25
    [2, 3.5]
    """

    __slots__ = ("buckets", "fields", "keep", "width")

    def __init__(self, width: float, keep: int, fields: int) -> None:
        self.width = width
        self.keep = keep
        self.fields = fields
        self.buckets: dict[int, list[float]] = {}

    @classmethod
    def from_state(
        cls, state: list[list[float]] | None, width: float, keep: int, fields: int
    ) -> BucketCounts:
        """Rebuild from :meth:`to_state` output: ``[[bucket, sum_1, ...], ...]``."""
        counts = cls(width, keep, fields)
        if state:
            counts.buckets = {int(row[0]): row[1:] for row in state}
        return counts

    def to_state(self) -> list[list[float]]:
        return [[bucket, *sums] for bucket, sums in self.buckets.items()]

    def add(self, ts: float, values: Sequence[float]) -> None:
        """Add ``values`` to the bucket of ``ts``, then drop buckets no window reaches."""
        bucket = bucket_of(ts, self.width)
        sums = self.buckets.get(bucket)
        if sums is None:
            self.buckets[bucket] = list(values)
            newest = max(self.buckets)
            if len(self.buckets) > self.keep:
                self.buckets = {b: s for b, s in self.buckets.items() if b > newest - self.keep}
        else:
            for i, value in enumerate(values):
                sums[i] += value

    def window_sums(self, ts: float, n_buckets: int) -> list[float]:
        """Sums over buckets ``(bucket(ts) - n_buckets, bucket(ts)]``."""
        end = bucket_of(ts, self.width)
        start = end - n_buckets
        totals = [0] * self.fields
        for bucket, sums in self.buckets.items():
            if start < bucket <= end:
                for i, value in enumerate(sums):
                    totals[i] += value
        return totals


class PartitionWatermarks:
    """The newest event time seen on each partition, and the lowest of them.

    An entity whose newest event lies a full retention behind the low watermark
    can be dropped: every partition has moved past it.

    >>> marks = PartitionWatermarks()
    >>> marks.low is None
    True
    >>> marks.observe(0, 50.0); marks.observe(1, 30.0); marks.observe(0, 40.0)
    >>> marks.low
    30.0
    """

    __slots__ = ("_newest",)

    def __init__(self) -> None:
        self._newest: dict[int, float] = {}

    def observe(self, partition: int, ts: float) -> None:
        if ts > self._newest.get(partition, -math.inf):
            self._newest[partition] = ts

    @property
    def low(self) -> float | None:
        return min(self._newest.values()) if self._newest else None

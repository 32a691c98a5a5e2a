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
bound as event time moves on; an :class:`EventLog` can also be bounded in count.
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import Any

MINUTE = 60.0
#: One quantity's sums, bucket by bucket: a list, or an array (see :class:`BucketCounts`).
Column = list[Any] | array
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
    max_events
        Most events kept (``None``: no limit); the oldest go first.

    >>> log = EventLog(("amount",), retention=10.0)
    >>> for ts, amount in [(1.0, 5.0), (3.0, 7.0), (2.0, 1.0), (20.0, 2.0)]:
    ...     _ = log.insert(ts, (amount,))
    >>> log.ts, log.column("amount")
    ([1.0, 2.0, 3.0, 20.0], [5.0, 1.0, 7.0, 2.0])
    >>> log.expire(), log.ts
    (3, [20.0])
    >>> log = EventLog(("amount",), retention=10.0, max_events=2)
    >>> for ts, amount in [(1.0, 5.0), (3.0, 7.0), (2.0, 1.0)]:
    ...     _ = log.insert(ts, (amount,))
    >>> log.ts, log.column("amount")  # the event at 1.0 made room for the one at 2.0
    ([2.0, 3.0], [1.0, 7.0])
    """

    __slots__ = ("_columns", "_names", "max_events", "retention", "ts")

    def __init__(self, columns: Sequence[str], retention: float, max_events: int | None = None) -> None:
        if max_events is not None and max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._names = tuple(columns)
        self.retention = retention
        self.max_events = max_events
        self.ts: list[float] = []
        self._columns: list[list[Any]] = [[] for _ in self._names]

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any] | None,
        columns: Sequence[str],
        retention: float,
        max_events: int | None = None,
    ) -> EventLog:
        """Rebuild a log from :meth:`to_state` output (``None`` gives an empty log).

        A state over ``max_events`` (written with a higher limit) is cut down on the next
        :meth:`insert` or :meth:`expire`.
        """
        log = cls(columns, retention, max_events)
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

    def columns(self) -> tuple[list[Any], ...]:
        """Every column, in the order of the names the log was made with (one call for all)."""
        return tuple(self._columns)

    @property
    def newest(self) -> float:
        return self.ts[-1] if self.ts else -math.inf

    def insert(self, ts: float, values: Sequence[Any]) -> int:
        """Add an event after any others with the same timestamp; return its index.

        A log at ``max_events`` first drops its oldest event to make room.  Nothing is
        expired here, so that an event older than the retention still gets its own
        window: call :meth:`expire` once it has been read.
        """
        if self.max_events is not None and len(self.ts) >= self.max_events:
            self._drop_oldest(len(self.ts) - self.max_events + 1)
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
        """Drop events more than ``retention`` behind the newest, and any over ``max_events``; count them."""
        if not self.ts:
            return 0
        dropped = bisect_right(self.ts, self.ts[-1] - self.retention)
        if self.max_events is not None:
            dropped = max(dropped, len(self.ts) - self.max_events)
        if dropped:
            self._drop_oldest(dropped)
        return dropped

    def _drop_oldest(self, n: int) -> None:
        del self.ts[:n]
        for column in self._columns:
            del column[:n]


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
    reducers
        How each quantity combines within a bucket and across a window's buckets:
        ``"sum"`` (the default for every quantity), ``"min"`` or ``"max"``.  An empty
        window's minimum is ``inf`` and its maximum ``-inf``.
    typecodes
        ``None`` (the default): each quantity's column is a list.  Otherwise an
        :class:`array.array` typecode per quantity (``"q"`` for counts, ``"d"`` for
        sums): the columns are then compact and their bytes are a copy away, for a
        value written to a changelog as often as it changes.

    Buckets are kept as parallel columns sorted by bucket, like an
    :class:`EventLog` of buckets, so a window's sums are two binary searches and
    a slice summed per quantity, whatever the number of buckets in it.  Every
    add drops the buckets ``keep`` or more behind the newest, except the one it
    added to: a very late event still counts itself.

    >>> counts = BucketCounts(width=HOUR, keep=25, fields=2)
    >>> counts.add(10.0, (1, 12.5)); counts.add(4_000.0, (1, 2.5)); counts.add(90_000.0, (1, 1.0))
    >>> counts.window_sums(90_000.0, 24)  # buckets 2..25: only the newest event
    [1, 1.0]
    >>> counts.window_sums(90_000.0, 25)  # buckets 1..25
    [2, 3.5]
    >>> counts.buckets  # bucket 0 is 25 behind the newest: dropped
    {1: [1, 2.5], 25: [1, 1.0]}
    >>> extremes = BucketCounts(width=MINUTE, keep=5, fields=3, reducers=("sum", "min", "max"))
    >>> for ts, value in [(0.0, 4.0), (10.0, -1.0), (70.0, 2.0)]:
    ...     extremes.add(ts, (1, value, value))
    >>> extremes.window_sums(70.0, 2), extremes.window_sums(70.0, 1), extremes.window_sums(500.0, 1)
    ([3, -1.0, 4.0], [1, 2.0, 2.0], [0, inf, -inf])
    """

    __slots__ = ("_combine", "_ids", "_reduce", "_sums", "fields", "keep", "reducers", "typecodes", "width")

    def __init__(
        self,
        width: float,
        keep: int,
        fields: int,
        reducers: Sequence[str] | None = None,
        typecodes: Sequence[str] | None = None,
    ) -> None:
        self.width = width
        self.keep = keep
        self.fields = fields
        self.reducers = tuple(reducers) if reducers is not None else ("sum",) * fields
        if len(self.reducers) != fields or not set(self.reducers) <= _REDUCERS.keys():
            raise ValueError(f"reducers: one of {sorted(_REDUCERS)} per field, got {self.reducers}")
        # None: every quantity is a sum, and add keeps its in-place += (it runs for every event).
        self._combine = (
            None if set(self.reducers) == {"sum"} else [_REDUCERS[name][0] for name in self.reducers]
        )
        self._reduce = [_REDUCERS[name][1] for name in self.reducers]
        self.typecodes = tuple(typecodes) if typecodes is not None else None
        if self.typecodes is not None and len(self.typecodes) != fields:
            raise ValueError(f"typecodes: one per field, got {self.typecodes}")
        self._ids: list[int] = []  # ascending
        self._sums: list[Column] = self._columns([[] for _ in range(fields)])  # one column per quantity

    @classmethod
    def from_state(
        cls,
        state: list[list[float]] | None,
        width: float,
        keep: int,
        fields: int,
        reducers: Sequence[str] | None = None,
        typecodes: Sequence[str] | None = None,
    ) -> BucketCounts:
        """Rebuild from :meth:`to_state` output: ``[[bucket, sum_1, ...], ...]`` (any order)."""
        counts = cls(width, keep, fields, reducers, typecodes)
        if state:
            # Sorted already when written by this version; earlier ones kept insertion order.
            rows = sorted(state, key=operator.itemgetter(0))
            counts._ids = [int(row[0]) for row in rows]
            counts._sums = counts._columns([[row[i] for row in rows] for i in range(1, fields + 1)])
        return counts

    def to_state(self) -> list[list[float]]:
        return [[bucket, *sums] for bucket, sums in self._rows()]

    @classmethod
    def from_columns(
        cls,
        ids: list[int],
        sums: Sequence[Sequence[float]],
        width: float,
        keep: int,
        fields: int,
        reducers: Sequence[str] | None = None,
        typecodes: Sequence[str] | None = None,
    ) -> BucketCounts:
        """Rebuild from :meth:`columns` output (``ids`` taken as is, columns as is when of the right type)."""
        if len(sums) != fields or any(len(column) != len(ids) for column in sums):
            raise ValueError(f"expected {fields} columns of {len(ids)} sums")
        counts = cls(width, keep, fields, reducers, typecodes)
        counts._ids, counts._sums = ids, counts._columns(sums)
        return counts

    def with_columns(self, ids: list[int], sums: list[Column]) -> BucketCounts:
        """Counts configured like this one holding ``ids`` and ``sums`` as they are, unchecked: for a
        decoder that builds many (``from_columns`` checks, and validates the configuration anew)."""
        counts = object.__new__(type(self))
        for name in ("width", "keep", "fields", "reducers", "typecodes", "_combine", "_reduce"):
            setattr(counts, name, getattr(self, name))
        counts._ids, counts._sums = ids, sums
        return counts

    def columns(self) -> tuple[list[int], list[Column]]:
        """The buckets kept, ascending, and one column of sums per quantity (not copies: read only)."""
        return self._ids, self._sums

    def _columns(self, columns: Sequence[Sequence[float]]) -> list[Column]:
        """``columns`` as this instance keeps them (lists, or arrays of :attr:`typecodes`)."""
        if self.typecodes is None:
            return [column if isinstance(column, list) else list(column) for column in columns]
        return [
            column if isinstance(column, array) and column.typecode == code else array(code, column)
            for code, column in zip(self.typecodes, columns, strict=True)
        ]

    @property
    def buckets(self) -> dict[int, list[float]]:
        """The sums of each bucket kept, oldest first."""
        return {bucket: list(sums) for bucket, sums in self._rows()}

    @property
    def bucket_ids(self) -> Sequence[int]:
        """The buckets kept, oldest first (read only: the counts' own list)."""
        return self._ids

    @property
    def newest(self) -> int | None:
        """The newest bucket kept (``None`` when there is none)."""
        return self._ids[-1] if self._ids else None

    def add(self, ts: float, values: Sequence[float]) -> None:
        """Add ``values`` to the bucket of ``ts``, then drop buckets no window reaches."""
        bucket = math.floor(ts / self.width)  # bucket_of, inlined: this runs for every event
        ids = self._ids
        if ids and ids[-1] == bucket:  # the usual case: the newest bucket
            self._combine_into(len(ids) - 1, values)
            return
        index = bisect_left(ids, bucket)
        if index < len(ids) and ids[index] == bucket:
            self._combine_into(index, values)
            return
        ids.insert(index, bucket)
        for column, value in zip(self._sums, values, strict=True):
            column.insert(index, value)
        cutoff = ids[-1] - self.keep
        if ids[0] > cutoff:
            return
        stale = bisect_right(ids, cutoff)
        if index < stale:  # a very late event: keep its bucket until the next add
            self._drop(index + 1, stale)
            self._drop(0, index)
        else:
            self._drop(0, stale)

    def _combine_into(self, index: int, values: Sequence[float]) -> None:
        if self._combine is None:
            for column, value in zip(self._sums, values, strict=True):
                column[index] += value
        else:
            for column, combine, value in zip(self._sums, self._combine, values, strict=True):
                column[index] = combine(column[index], value)

    def window_sums(self, ts: float, n_buckets: int) -> list[float]:
        """Sums (or extremes, per :attr:`reducers`) over buckets ``(bucket(ts) - n_buckets, bucket(ts)]``."""
        end = math.floor(ts / self.width)
        ids = self._ids
        stop = bisect_right(ids, end)
        start = bisect_right(ids, end - n_buckets, 0, stop)
        return [reduce(column[start:stop]) for column, reduce in zip(self._sums, self._reduce, strict=True)]

    def nested_window_sums(self, ts: float, lengths: Sequence[int]) -> list[list[float]]:
        """:meth:`window_sums` for windows of each of ``lengths`` buckets, all ending at the bucket of ``ts``.

        >>> counts = BucketCounts(width=DAY, keep=30, fields=2)
        >>> counts.add(0.0, (1, 5.0)); counts.add(9 * DAY, (1, 2.0))
        >>> counts.nested_window_sums(9 * DAY, (7, 30))
        [[1, 2.0], [2, 7.0]]
        """
        end = math.floor(ts / self.width)
        ids = self._ids
        stop = bisect_right(ids, end)
        sums = []
        for n in lengths:
            start = bisect_right(ids, end - n, 0, stop)
            sums.append(
                [reduce(column[start:stop]) for column, reduce in zip(self._sums, self._reduce, strict=True)]
            )
        return sums

    def _rows(self) -> zip[tuple[int, tuple[float, ...]]]:
        return zip(self._ids, zip(*self._sums, strict=True), strict=True)

    def _drop(self, start: int, stop: int) -> None:
        if start < stop:
            del self._ids[start:stop]
            for column in self._sums:
                del column[start:stop]


def _window_min(values: list[float]) -> float:
    return min(values, default=math.inf)


def _window_max(values: list[float]) -> float:
    return max(values, default=-math.inf)


# reducer name -> (combine two values in a bucket, reduce a window's buckets)
_REDUCERS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[list[float]], float]]] = {
    "sum": (operator.add, sum),
    "min": (min, _window_min),
    "max": (max, _window_max),
}


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

"""Windowed item popularity: what is trending over the last hour and the last day.

Popularity is global while users are partitioned, so the user stage does not
count it: each flush it sends the item stage an :class:`ItemDeltas`, the weighted
interactions of each item summed per minute; the item stage applies them
(:func:`apply_item_deltas`) to each item's :class:`ItemActivity` and publishes
it, and every worker follows the published activities into an
:class:`ItemPopularity` view (as merchants are, see :mod:`tables.merchant_view`).

An interaction counts :data:`ACTION_WEIGHTS` of its action (a purchase says more
than a view).  Counts are kept per aligned bucket (:class:`~tables.windows.BucketCounts`):
minutes for the hour window, hours for the day window.  At time ``t`` the hour
window holds the 60 minute buckets ``(minute(t) - 60, minute(t)]`` and the day
window the 24 hour buckets ``(hour(t) - 24, hour(t)]``.

At most ``max_items`` items are tracked: beyond that the least popular over the
day (then the stalest) are forgotten, so that top-k queries scan a bounded set.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import orjson

from app.contracts import Click
from tables.windows import HOUR, MINUTE, BucketCounts

ACTION_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
MAX_ITEMS = 5_000

Horizon = Literal["hour", "day"]
# horizon -> (bucket width, buckets in the window, buckets kept).  Twice the window is kept,
# so that an event up to a window late still finds its whole window.
WINDOWS: dict[str, tuple[float, int, int]] = {"hour": (MINUTE, 60, 120), "day": (HOUR, 24, 48)}
# Rankings kept per horizon (the newest buckets asked for): late clicks' windows keep theirs.
_CACHED_WINDOWS = 8
# horizon -> buckets behind the newest whose active items are known (twice the buckets kept).
_INDEXED_SPANS: dict[str, int] = {horizon: 2 * keep for horizon, (_, _, keep) in WINDOWS.items()}
# Values kept by ItemPopularity.derived between two changes.
_DERIVED_KEYS = 16
T = TypeVar("T")


class ItemActivity:
    """An item's weighted interactions per minute and per hour.

    >>> item = ItemActivity()
    >>> item.add(0.0, 1.0); item.add(4_000.0, 5.0); item.add(7_000.0, 2.0)
    >>> item.score(7_000.0, "hour"), item.score(7_000.0, "day")
    (7.0, 8.0)
    """

    __slots__ = ("_counts",)

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self._counts = {
            horizon: BucketCounts.from_state(state.get(horizon), width, keep, fields=1)
            for horizon, (width, _, keep) in WINDOWS.items()
        }

    def to_state(self) -> dict[str, Any]:
        return {horizon: counts.to_state() for horizon, counts in self._counts.items()}

    def add(self, ts: float, weight: float) -> None:
        for counts in self._counts.values():
            counts.add(ts, (weight,))

    def add_per_minute(self, per_minute: dict[int, float]) -> None:
        """Add weights summed per minute (an :class:`ItemDeltas` entry)."""
        for minute, weight in per_minute.items():
            self.add(minute * MINUTE, weight)

    def score(self, now: float, horizon: Horizon) -> float:
        """The weighted interactions in the ``horizon`` window ending at ``now``."""
        return self._counts[horizon].window_sums(now, WINDOWS[horizon][1])[0]

    def buckets(self, horizon: Horizon) -> Sequence[int]:
        """The ``horizon`` buckets holding a count, oldest first (read only)."""
        return self._counts[horizon].bucket_ids

    @property
    def newest(self) -> float:
        """Start of the newest minute with an interaction (``-inf``: none)."""
        newest = self._counts["hour"].newest
        return -math.inf if newest is None else newest * MINUTE

    def is_idle(self, watermark: float) -> bool:
        """Whether no window at or after ``watermark`` reaches any of its buckets."""
        newest = self._counts["day"].newest
        return newest is None or (newest + 1) * HOUR <= watermark - WINDOWS["day"][1] * HOUR


class ItemDeltas:
    """What the user stage saw of each item during one flush: weight per item and minute.

    Summing per minute loses nothing: the windows' buckets are whole minutes.

    >>> deltas = ItemDeltas()
    >>> deltas.add(Click("u1", "i1", "view", 65.0)); deltas.add(Click("u2", "i1", "purchase", 100.0))
    >>> deltas.encode()
    b'[["i1",[[1,6.0]]]]'
    >>> ItemDeltas.decode(deltas.encode()).items
    {'i1': {1: 6.0}}
    """

    __slots__ = ("items",)

    def __init__(self, items: dict[str, dict[int, float]] | None = None) -> None:
        self.items = items if items is not None else {}

    def add(self, click: Click) -> None:
        per_minute = self.items.setdefault(click.item_id, {})
        minute = math.floor(click.ts / MINUTE)
        per_minute[minute] = per_minute.get(minute, 0.0) + ACTION_WEIGHTS[click.action]

    def __bool__(self) -> bool:
        return bool(self.items)

    def encode(self) -> bytes:
        return orjson.dumps([[item, list(per_minute.items())] for item, per_minute in self.items.items()])

    @classmethod
    def decode(cls, data: bytes) -> ItemDeltas:
        return cls(
            {
                item: {int(minute): float(weight) for minute, weight in per_minute}
                for item, per_minute in orjson.loads(data)
            }
        )


class ItemPopularity:
    """Every tracked item's activity, with top-k trending queries.

    >>> popularity = ItemPopularity()
    >>> deltas = ItemDeltas()
    >>> for item, action in [("a", "view"), ("b", "purchase"), ("a", "click")]:
    ...     deltas.add(Click("u1", item, action, 10.0))
    >>> popularity.apply(deltas)
    >>> popularity.trending(60.0, k=2, horizon="hour")
    [('b', 5.0), ('a', 3.0)]
    """

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self.items: dict[str, ItemActivity] = {}
        self.newest = -math.inf  # the newest interaction seen: staleness is measured from it
        self.evicted = 0
        # horizon -> bucket -> every item scored above 0 then, best first; items changed since
        # are re-scored when the window is next asked for.
        self._tops: dict[str, dict[int, _Ranked]] = {horizon: {} for horizon in WINDOWS}
        self._active = {horizon: _ActiveItems(_INDEXED_SPANS[horizon]) for horizon in WINDOWS}
        # Values derived from the items (see derived), dropped at any change.
        self._derived: dict[Hashable, Any] = {}

    def apply(self, deltas: ItemDeltas) -> None:
        """Count a flush's interactions (:func:`apply_item_deltas`), then keep at most ``max_items``."""
        changed = apply_item_deltas(self.items, deltas)
        minutes, hours = self._active["hour"], self._active["day"]
        for item in changed:
            activity = self.items[item]
            self.newest = max(self.newest, activity.newest)
            for minute in deltas.items[item]:
                minutes.add(item, minute)
                hours.add(item, math.floor(minute * MINUTE / HOUR))  # as the activity buckets it
            self._changed(item)
        self.evict()

    def put(self, item_id: str, activity: ItemActivity | None) -> None:
        """Take an item's published activity (``None``: the item is gone), as a view does."""
        if activity is None:
            self.items.pop(item_id, None)
        else:
            known = self.items.get(item_id)
            self.items[item_id] = activity
            self.newest = max(self.newest, activity.newest)
            for horizon, active in self._active.items():
                buckets = activity.buckets(horizon)
                if known is not None and known is not activity:
                    # The known activity's buckets are indexed already (those not below the
                    # index's floor): a published activity usually adds one or two to them.
                    buckets = set(buckets).difference(known.buckets(horizon))
                for bucket in buckets:
                    active.add(item_id, bucket)
        self._changed(item_id)

    def evict(self) -> list[str]:
        """Forget the least popular items over the day (the stalest first) beyond ``max_items``."""
        excess = len(self.items) - self.max_items
        if excess <= 0:
            return []
        now = self.newest
        ranked = sorted(self.items.items(), key=lambda kv: (kv[1].score(now, "day"), kv[1].newest, kv[0]))
        gone = [item for item, _ in ranked[:excess]]
        for item in gone:
            del self.items[item]
            self._changed(item)
        self.evicted += excess
        return gone

    def trending_time(self, now: float) -> float:
        """When trending is ranked for an interaction at ``now``: the newest interaction this
        view has counted, or ``now`` while it has counted none.

        One clock for every partition's interactions: a worker working through a backlog
        reads its partitions in turns, hours of event time apart, and ranking each window
        as of its own interaction ranked every item afresh for each (the kept rankings lie
        only minutes apart); it fell further behind the more it was behind.

        >>> popularity = ItemPopularity()
        >>> popularity.trending_time(50.0)
        50.0
        >>> popularity.apply(ItemDeltas({"i1": {2: 1.0}})); popularity.trending_time(50.0)
        120.0
        """
        return self.newest if self.newest > -math.inf else now

    def score(self, item_id: str, now: float, horizon: Horizon) -> float:
        activity = self.items.get(item_id)
        return 0.0 if activity is None else activity.score(now, horizon)

    def trending(self, now: float, k: int, horizon: Horizon) -> list[tuple[str, float]]:
        """The ``k`` items with the highest positive score over ``horizon`` at ``now``, best first.

        Ties go to the smaller item id.  A window's items change only when ``now`` enters
        another bucket (minute for the hour, hour for the day), so each bucket's ranking is
        kept and re-scored only for the items changed since.  A new bucket's ranking is the
        nearest kept one of its horizon with only the items active in the buckets that
        enter or leave the window re-scored; every other item's window holds the same
        buckets, so its score is the same.
        """
        bucket = math.floor(now / WINDOWS[horizon][0])
        tops = self._tops[horizon]
        top = tops.get(bucket)
        if top is None:
            top = self._ranking(horizon, bucket)
            if len(tops) >= _CACHED_WINDOWS:
                del tops[min(tops)]
            tops[bucket] = top
        else:
            self._refresh(top, horizon, bucket)
        return top.items[:k]

    def trending_items(self, now: float, k: int) -> tuple[str, ...]:
        """The ``k`` trending over the hour, then those of the ``k`` over the day not among them.

        The same tuple is returned until an item changes (it is kept by :meth:`derived`), so
        that callers may key their own memos on it.

        >>> popularity = ItemPopularity()
        >>> popularity.apply(ItemDeltas({"a": {0: 1.0}, "b": {0: 3.0}, "c": {-90: 9.0}}))
        >>> popularity.trending_items(60.0, k=2)
        ('b', 'a', 'c')
        >>> popularity.trending_items(60.0, k=2) is popularity.trending_items(60.0, k=2)
        True
        """
        return self.derived(("trending_items", now, k), lambda: self._trending_items(now, k))

    def _trending_items(self, now: float, k: int) -> tuple[str, ...]:
        found = [item for item, _ in self.trending(now, k, "hour")]
        found += [item for item, _ in self.trending(now, k, "day")]
        return tuple(dict.fromkeys(found))

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, kept under ``key`` until an item changes: for what every click between
        two flushes of the popularity view would compute alike (at most 16 keys are kept).

        >>> popularity = ItemPopularity()
        >>> popularity.derived("size", lambda: len(popularity))
        0
        >>> popularity.apply(ItemDeltas({"a": {0: 1.0}})); popularity.derived("size", lambda: len(popularity))
        1
        """
        derived = self._derived
        try:
            return derived[key]  # type: ignore[no-any-return]
        except KeyError:
            if len(derived) >= _DERIVED_KEYS:
                derived.clear()
            value = derived[key] = compute()
            return value

    def _changed(self, item_id: str) -> None:
        self._derived.clear()
        for tops in self._tops.values():
            for top in tops.values():
                top.pending.add(item_id)

    def _refresh(self, top: _Ranked, horizon: Horizon, bucket: int) -> None:
        """Re-score the items changed since ``top`` was last asked for."""
        if top.pending:
            self._rescore(top, top.pending, horizon, bucket)
            top.pending = set()

    def _rescore(self, top: _Ranked, item_ids: Iterable[str], horizon: Horizon, bucket: int) -> None:
        at = bucket * WINDOWS[horizon][0]
        items = self.items
        for item_id in item_ids:
            activity = items.get(item_id)
            top.set(item_id, 0.0 if activity is None else activity.score(at, horizon))

    def _ranking(self, horizon: Horizon, bucket: int) -> _Ranked:
        """The window's ranking: derived from the nearest kept one of the horizon, else ranked afresh."""
        n = WINDOWS[horizon][1]
        tops = self._tops[horizon]
        nearest = min(
            (cached for cached in tops if abs(cached - bucket) < n),
            key=lambda cached: abs(cached - bucket),
            default=None,
        )
        if nearest is not None:
            low, high = min(nearest, bucket), max(nearest, bucket)
            # The buckets in one window and not the other: (low - n, high - n] and (low, high].
            leaving, entering = range(low - n + 1, high - n + 1), range(low + 1, high + 1)
            changed = self._active[horizon].items_in(leaving, entering)
            if changed is not None:
                source = tops[nearest]
                self._refresh(source, horizon, nearest)
                top = source.copy()
                self._rescore(top, changed, horizon, bucket)
                return top
        at = bucket * WINDOWS[horizon][0]
        scored = ((item, activity.score(at, horizon)) for item, activity in self.items.items())
        return _Ranked(sorted(((item, s) for item, s in scored if s > 0.0), key=_best_first))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


class _Ranked:
    """One window's items scored above 0, best first, their scores by item, and the items changed since."""

    __slots__ = ("items", "pending", "scores")

    def __init__(self, items: list[tuple[str, float]]) -> None:
        self.items = items
        self.scores = dict(items)
        self.pending: set[str] = set()

    def copy(self) -> _Ranked:
        return _Ranked(self.items.copy())

    def set(self, item_id: str, score: float) -> None:
        """Put ``item_id`` at its place for ``score`` (not listed unless above 0)."""
        items, scores = self.items, self.scores
        listed = scores.get(item_id)
        if listed == score:
            return
        if listed is not None:
            del items[bisect_left(items, (-listed, item_id), key=_best_first)]
            del scores[item_id]
        if score > 0.0:
            insort(items, (item_id, score), key=_best_first)
            scores[item_id] = score


class _ActiveItems:
    """Per bucket, the items that may have a count in it (a superset), for the newest buckets.

    At most ``2 * span`` buckets are indexed; then those more than ``span`` behind the
    newest are forgotten, and :meth:`items_in` answers ``None`` (unknown) for them rather
    than too few items.
    """

    __slots__ = ("buckets", "floor", "span")

    def __init__(self, span: int) -> None:
        self.span = span
        self.buckets: dict[int, set[str]] = {}
        self.floor = -math.inf  # complete for the buckets from here on

    def add(self, item_id: str, bucket: int) -> None:
        if bucket < self.floor:
            return
        items = self.buckets.get(bucket)
        if items is None:
            items = self.buckets[bucket] = set()
            if len(self.buckets) > 2 * self.span:
                self.floor = max(self.buckets) - self.span
                self.buckets = {b: found for b, found in self.buckets.items() if b >= self.floor}
        items.add(item_id)

    def items_in(self, *spans: range) -> set[str] | None:
        """The items that may have a count in any of the buckets of ``spans`` (``None``: not known)."""
        found: set[str] = set()
        for span in spans:
            if span and span.start < self.floor:
                return None
            for bucket in span:
                found.update(self.buckets.get(bucket, ()))
        return found


def apply_item_deltas(items: dict[str, ItemActivity], deltas: ItemDeltas) -> Iterable[str]:
    """Add each item's per-minute weights to its activity (a new item gets one); return the items changed.

    >>> items = {}
    >>> _ = apply_item_deltas(items, ItemDeltas({"i1": {0: 2.0, 1: 1.0}}))
    >>> items["i1"].score(60.0, "hour")
    3.0
    """
    for item_id, per_minute in deltas.items.items():
        activity = items.get(item_id)
        if activity is None:
            activity = items[item_id] = ItemActivity()
        activity.add_per_minute(per_minute)
    return deltas.items.keys()


def _best_first(scored: tuple[str, float]) -> tuple[float, str]:
    return (-scored[1], scored[0])

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
from bisect import insort
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import orjson

from app.contracts import Click
from tables.windows import HOUR, MINUTE, BucketCounts

ACTION_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
MAX_ITEMS = 5_000

Horizon = Literal["hour", "day"]
# horizon -> (bucket width, buckets in the window, buckets kept).  Twice the window is kept,
# so that an event up to a window late still finds its whole window.
WINDOWS: dict[str, tuple[float, int, int]] = {"hour": (MINUTE, 60, 120), "day": (HOUR, 24, 48)}
# Trending lists keep at least this many items: k is at most this without a rescan.
_CACHED_TOP = 200
# (horizon, bucket) lists kept: queries a few buckets apart (late clicks) each keep theirs.
_CACHED_WINDOWS = 8


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

    def score(self, now: float, horizon: Horizon) -> float:
        """The weighted interactions in the ``horizon`` window ending at ``now``."""
        return self._counts[horizon].window_sums(now, WINDOWS[horizon][1])[0]

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
        # (horizon, bucket) -> the best items then, best first: at least _CACHED_TOP of them, or
        # every item scored above 0.  Kept up to date item by item as activities change.
        self._tops: dict[tuple[Horizon, int], _Ranked] = {}

    def apply(self, deltas: ItemDeltas) -> None:
        """Count a flush's interactions (:func:`apply_item_deltas`), then keep at most ``max_items``."""
        changed = apply_item_deltas(self.items, deltas)
        for item in changed:
            activity = self.items[item]
            self.newest = max(self.newest, activity.newest)
            self._rank(item, activity)
        self.evict()

    def put(self, item_id: str, activity: ItemActivity | None) -> None:
        """Take an item's published activity (``None``: the item is gone), as a view does."""
        if activity is None:
            self.items.pop(item_id, None)
        else:
            self.items[item_id] = activity
            self.newest = max(self.newest, activity.newest)
        self._rank(item_id, activity)

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
            self._rank(item, None)
        self.evicted += excess
        return gone

    def score(self, item_id: str, now: float, horizon: Horizon) -> float:
        activity = self.items.get(item_id)
        return 0.0 if activity is None else activity.score(now, horizon)

    def trending(self, now: float, k: int, horizon: Horizon) -> list[tuple[str, float]]:
        """The ``k`` items with the highest positive score over ``horizon`` at ``now``, best first.

        Ties go to the smaller item id.  A window's items change only when ``now`` enters
        another bucket (minute for the hour, hour for the day), so the best items are ranked
        once per bucket and then kept up to date as items change, not ranked per query.
        """
        width = WINDOWS[horizon][0]
        bucket = math.floor(now / width)
        key = (horizon, bucket)
        top = self._tops.get(key)
        # A list shorter than _CACHED_TOP is complete: fewer items scored above 0.
        if top is None or (k > len(top.items) >= _CACHED_TOP and k > _CACHED_TOP):
            if top is None and len(self._tops) >= _CACHED_WINDOWS:
                del self._tops[min(self._tops, key=lambda cached: cached[1] * WINDOWS[cached[0]][0])]
            top = self._tops[key] = _Ranked(self._top(bucket * width, horizon, max(k, _CACHED_TOP)))
        return top.items[:k]

    def _rank(self, item_id: str, activity: ItemActivity | None) -> None:
        """Keep every cached list right after ``item_id``'s activity changed (``None``: gone)."""
        stale = []
        for key, top in self._tops.items():
            horizon, bucket = key
            score = 0.0 if activity is None else activity.score(bucket * WINDOWS[horizon][0], horizon)
            listed = top.scores.get(item_id)
            if listed is not None:
                if score < listed:
                    stale.append(key)  # an item may move up from outside the list: rank again
                    continue
                top.items.remove((item_id, listed))
            elif score <= 0.0 or (
                len(top.items) >= _CACHED_TOP and _best_first((item_id, score)) > _best_first(top.items[-1])
            ):
                continue
            insort(top.items, (item_id, score), key=_best_first)
            top.scores[item_id] = score
            if listed is None and len(top.items) > _CACHED_TOP:
                dropped, _ = top.items.pop()
                del top.scores[dropped]
        for key in stale:
            del self._tops[key]

    def _top(self, now: float, horizon: Horizon, k: int) -> list[tuple[str, float]]:
        scored = ((item, activity.score(now, horizon)) for item, activity in self.items.items())
        return sorted(((item, s) for item, s in scored if s > 0.0), key=_best_first)[:k]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


class _Ranked:
    """One window's best items, best first, and their scores by item."""

    __slots__ = ("items", "scores")

    def __init__(self, items: list[tuple[str, float]]) -> None:
        self.items = items
        self.scores = dict(items)


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
        for minute, weight in per_minute.items():
            activity.add(minute * MINUTE, weight)
    return deltas.items.keys()


def _best_first(scored: tuple[str, float]) -> tuple[float, str]:
    return (-scored[1], scored[0])

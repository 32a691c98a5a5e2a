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
# Trending lists are kept this long per (view version, minute): k is at most this without a rescan.
_CACHED_TOP = 200


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
        self._version = 0
        self._cache: dict[tuple[str, int], tuple[int, list[tuple[str, float]]]] = {}
        self._cache_version = -1

    def apply(self, deltas: ItemDeltas) -> None:
        """Count a flush's interactions (:func:`apply_item_deltas`), then keep at most ``max_items``."""
        changed = apply_item_deltas(self.items, deltas)
        self.newest = max(self.newest, *(self.items[item].newest for item in changed), -math.inf)
        self._version += 1
        self.evict()

    def put(self, item_id: str, activity: ItemActivity | None) -> None:
        """Take an item's published activity (``None``: the item is gone), as a view does."""
        if activity is None:
            self.items.pop(item_id, None)
        else:
            self.items[item_id] = activity
            self.newest = max(self.newest, activity.newest)
        self._version += 1

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
        self.evicted += excess
        self._version += 1
        return gone

    def score(self, item_id: str, now: float, horizon: Horizon) -> float:
        activity = self.items.get(item_id)
        return 0.0 if activity is None else activity.score(now, horizon)

    def trending(self, now: float, k: int, horizon: Horizon) -> list[tuple[str, float]]:
        """The ``k`` items with the highest positive score over ``horizon`` at ``now``, best first.

        Ties go to the smaller item id.  Lists are cached until the view changes or ``now``
        enters another minute, so a burst of queries scans the items once.
        """
        if self._cache_version != self._version:
            self._cache.clear()
            self._cache_version = self._version
        key = (horizon, math.floor(now / MINUTE))
        cached = self._cache.get(key)
        # A cached list shorter than asked for is complete: fewer items scored above 0.
        if cached is None or k > cached[0] == len(cached[1]):
            size = max(k, _CACHED_TOP)
            cached = self._cache[key] = (size, self._top(now, horizon, size))
        return cached[1][:k]

    def _top(self, now: float, horizon: Horizon, k: int) -> list[tuple[str, float]]:
        scored = ((item, activity.score(now, horizon)) for item, activity in self.items.items())
        return sorted(((item, s) for item, s in scored if s > 0.0), key=_best_first)[:k]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


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

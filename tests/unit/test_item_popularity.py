"""Item popularity against a brute-force recomputation of the weighted windows."""

from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.contracts import CLICK_ACTIONS, Click
from tables.item_popularity import (
    ACTION_WEIGHTS,
    ItemActivity,
    ItemDeltas,
    ItemPopularity,
)

MINUTE = 60
HOUR = 3_600
# horizon -> (bucket width, buckets in the window)
WINDOWS = {"hour": (MINUTE, 60), "day": (HOUR, 24)}

click_lists = st.lists(
    st.builds(
        Click,
        user_id=st.sampled_from(["u1", "u2"]),
        item_id=st.sampled_from([f"i{n}" for n in range(8)]),
        action=st.sampled_from(CLICK_ACTIONS),
        # Minutes of a day and a half, with seconds, so that buckets and windows are exercised.
        ts=st.integers(0, 36 * 60).map(lambda m: m * 60.0) | st.floats(0.0, 36 * HOUR),
    ),
    max_size=80,
)


def brute_force_score(clicks: list[Click], item: str, now: float, horizon: str) -> float:
    width, n = WINDOWS[horizon]
    end = math.floor(now / width)
    return sum(
        ACTION_WEIGHTS[c.action]
        for c in clicks
        if c.item_id == item and end - n < math.floor(c.ts / width) <= end
    )


def brute_force_top(clicks: list[Click], now: float, k: int, horizon: str) -> list[tuple[str, float]]:
    items = {c.item_id for c in clicks}
    scored = [(item, brute_force_score(clicks, item, now, horizon)) for item in items]
    return sorted([s for s in scored if s[1] > 0], key=lambda s: (-s[1], s[0]))[:k]


def in_order_flushes(clicks: list[Click], size: int) -> list[ItemDeltas]:
    ordered = sorted(clicks, key=lambda c: c.ts)
    flushes = []
    for start in range(0, len(ordered), size):
        deltas = ItemDeltas()
        for click in ordered[start : start + size]:
            deltas.add(click)
        flushes.append(deltas)
    return flushes


@settings(max_examples=150, deadline=None)
@given(click_lists, st.integers(1, 10), st.floats(0.0, 40 * HOUR), st.integers(1, 8))
def test_scores_and_top_k_equal_a_recomputation_whatever_the_flushes(clicks, flush_size, now, k):
    popularity = ItemPopularity()
    for deltas in in_order_flushes(clicks, flush_size):
        popularity.apply(ItemDeltas.decode(deltas.encode()))  # as sent between stages
    # Buckets more than twice a window behind the newest are dropped: query within reach.
    newest = max((c.ts for c in clicks), default=0.0)
    now = max(now, newest)
    for horizon in ("hour", "day"):
        for item in popularity:
            assert popularity.score(item, now, horizon) == brute_force_score(clicks, item, now, horizon)
        assert popularity.trending(now, k, horizon) == brute_force_top(clicks, now, k, horizon)


@settings(max_examples=100, deadline=None)
@given(click_lists)
def test_an_item_activity_survives_its_state_round_trip(clicks):
    activity = ItemActivity()
    for click in clicks:
        activity.add(click.ts, ACTION_WEIGHTS[click.action])
    copy = ItemActivity(orjson.loads(orjson.dumps(activity.to_state())))
    assert copy.to_state() == activity.to_state()
    for now in (0.0, 12 * HOUR, 36 * HOUR):
        assert copy.score(now, "hour") == activity.score(now, "hour")
        assert copy.score(now, "day") == activity.score(now, "day")


@settings(max_examples=100, deadline=None)
@given(click_lists, st.integers(1, 5))
def test_at_most_max_items_are_tracked_and_the_evicted_were_the_least_popular(clicks, max_items):
    popularity = ItemPopularity(max_items=max_items)
    remembered: dict[str, list[Click]] = {}  # each tracked item's clicks since it was last evicted
    ordered = sorted(clicks, key=lambda c: c.ts)
    for start in range(0, len(ordered), 3):
        flush = ordered[start : start + 3]
        deltas = ItemDeltas()
        for click in flush:
            deltas.add(click)
            remembered.setdefault(click.item_id, []).append(click)
        popularity.apply(deltas)
        assert len(popularity) == min(max_items, len(remembered))
        now = popularity.newest
        score = {item: brute_force_score(kept, item, now, "day") for item, kept in remembered.items()}
        gone = set(remembered) - set(popularity)
        assert all(score[item] <= score[kept] for item in gone for kept in popularity)
        for item in gone:
            del remembered[item]
        for item in popularity:
            assert popularity.score(item, now, "day") == score[item]


def test_the_hour_window_is_the_last_60_minute_buckets():
    popularity = ItemPopularity()
    popularity.apply(ItemDeltas({"old": {0: 1.0}, "new": {1: 1.0}}))
    assert [item for item, _ in popularity.trending(60 * MINUTE, 5, "hour")] == ["new"]
    assert [item for item, _ in popularity.trending(60 * MINUTE - 1, 5, "hour")] == ["new", "old"]


views_changes = st.lists(
    st.one_of(
        # An item's published activity: interactions at minutes of two hours (None: a tombstone).
        st.tuples(
            st.just("put"),
            st.sampled_from([f"i{n}" for n in range(6)]),
            st.none()
            | st.lists(st.tuples(st.integers(0, 120), st.sampled_from([1.0, 2.0, 5.0])), max_size=6),
        ),
        st.tuples(st.just("query"), st.integers(0, 130), st.integers(1, 6), st.sampled_from(["hour", "day"])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(views_changes)
def test_trending_equals_a_fresh_ranking_after_every_change_of_a_view(monkeypatch, changes):
    # Few windows kept and few buckets indexed, so that rankings are derived from other
    # buckets' and ranked afresh.
    monkeypatch.setattr("tables.item_popularity._CACHED_WINDOWS", 2)
    monkeypatch.setattr("tables.item_popularity._INDEXED_SPANS", {"hour": 3, "day": 2})
    view = ItemPopularity()
    published: dict[str, list[tuple[int, float]]] = {}
    for change in changes:
        if change[0] == "put":
            _, item, interactions = change
            activity = None
            if interactions is not None:
                activity = ItemActivity()
                for minute, weight in interactions:
                    activity.add(minute * MINUTE, weight)
                published[item] = interactions
            else:
                published.pop(item, None)
            view.put(item, activity)  # may raise scores, lower them, or drop the item
        else:
            _, minute, k, horizon = change
            now = minute * MINUTE + 30.0
            fresh = []
            for item, interactions in published.items():
                activity = ItemActivity()
                for at, weight in interactions:
                    activity.add(at * MINUTE, weight)
                if (score := activity.score(now, horizon)) > 0:
                    fresh.append((item, score))
            assert view.trending(now, k, horizon) == sorted(fresh, key=lambda s: (-s[1], s[0]))[:k]
            # The memo of both horizons' items is dropped at every change.
            both = [item for horizon in ("hour", "day") for item, _ in view.trending(now, k, horizon)]
            assert view.trending_items(now, k) == tuple(dict.fromkeys(both))


flushes_and_queries = st.lists(
    st.one_of(
        st.tuples(st.just("flush"), click_lists),
        # Queries in any order of time: forwards, back a little (late clicks) and far.
        st.tuples(st.just("query"), st.floats(0.0, 40 * HOUR), st.integers(1, 8)),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flushes_and_queries, st.sampled_from([(2, {"hour": 3, "day": 2}), (8, {"hour": 240, "day": 96})]))
def test_trending_equals_a_fresh_ranking_between_flushes_at_any_time(monkeypatch, steps, cache):
    windows, spans = cache
    monkeypatch.setattr("tables.item_popularity._CACHED_WINDOWS", windows)
    monkeypatch.setattr("tables.item_popularity._INDEXED_SPANS", spans)
    popularity = ItemPopularity()
    seen: list[Click] = []
    for step in steps:
        if step[0] == "flush":
            deltas = ItemDeltas()
            for click in step[1]:
                deltas.add(click)
            popularity.apply(deltas)
            seen += step[1]
            continue
        _, now, k = step
        newest = max((c.ts for c in seen), default=0.0)
        for at in (now, max(now, newest), max(now, newest) + MINUTE):  # the next minute: a shifted window
            for horizon in ("hour", "day"):
                ranked = popularity.trending(at, k, horizon)
                assert ranked == fresh_top(popularity, at, k, horizon)
                if at >= newest:  # no bucket of the window dropped yet: the clicks' own counts
                    assert ranked == brute_force_top(seen, at, k, horizon)


def fresh_top(popularity: ItemPopularity, now: float, k: int, horizon: str) -> list[tuple[str, float]]:
    scored = [(item, popularity.score(item, now, horizon)) for item in popularity]
    return sorted([s for s in scored if s[1] > 0], key=lambda s: (-s[1], s[0]))[:k]


def test_trending_follows_new_deltas_within_the_same_minute():
    popularity = ItemPopularity()
    popularity.apply(ItemDeltas({"a": {0: 1.0}}))
    assert popularity.trending(30.0, 1, "hour") == [("a", 1.0)]
    popularity.apply(ItemDeltas({"b": {0: 2.0}}))
    assert popularity.trending(30.0, 1, "hour") == [("b", 2.0)]


def test_more_items_than_the_cached_list_can_be_asked_for():
    popularity = ItemPopularity()
    popularity.apply(ItemDeltas({f"i{n:03d}": {0: float(n + 1)} for n in range(300)}))
    assert len(popularity.trending(0.0, 10, "day")) == 10
    top = popularity.trending(0.0, 250, "day")
    assert len(top) == 250 and top[0] == ("i299", 300.0) and top[-1] == ("i050", 51.0)


def test_a_view_takes_published_activities_and_tombstones():
    view = ItemPopularity()
    activity = ItemActivity()
    activity.add(0.0, 3.0)
    view.put("a", activity)
    assert view.trending(0.0, 3, "day") == [("a", 3.0)]
    view.put("a", None)
    assert view.trending(0.0, 3, "day") == []


def test_deltas_sum_weights_per_item_and_minute():
    deltas = ItemDeltas()
    for ts, action in [(0.0, "view"), (59.9, "click"), (60.0, "purchase")]:
        deltas.add(Click("u1", "i1", action, ts))
    assert deltas.items == {"i1": {0: 3.0, 1: 5.0}}
    assert ItemDeltas.decode(deltas.encode()).items == deltas.items


def test_an_item_is_idle_once_its_day_window_cannot_reach_it():
    activity = ItemActivity()
    activity.add(30.0, 1.0)  # hour bucket 0
    assert not activity.is_idle(25 * HOUR - 1)
    assert activity.is_idle(25 * HOUR)


def test_a_view_ranks_an_activity_put_again_after_it_grew_in_place():
    # The same object put again: its new buckets are indexed although it is the one known.
    popularity = ItemPopularity()
    activity = ItemActivity()
    activity.add(0.0, 1.0)
    popularity.put("a", activity)
    assert popularity.trending(30.0, k=1, horizon="hour") == [("a", 1.0)]
    activity.add(7_200.0, 5.0)
    popularity.put("a", activity)
    assert popularity.trending(7_230.0, k=1, horizon="hour") == [("a", 5.0)]

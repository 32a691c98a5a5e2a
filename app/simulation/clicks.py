"""Deterministic click stream of an online shop, with latent tastes and drifting popularity.

The stream is what a shop's front end logs: product views, clicks, add-to-cart
and purchases on the ``clicks`` topic, one event per action, keyed by user. The
latent affinity of the user for the item travels only in
:attr:`SimulatedEvent.truth`, never in a payload, so that a recommender can be
scored against it; :func:`true_affinities` gives the whole user x item matrix.

Items
    Each item belongs to one of up to 12 categories of unequal size and has a
    latent vector of dimension ``n_dims``: its category's centroid (a random
    unit vector) plus a personal deviation. Popularity starts Zipf-like; its
    logarithm then follows a daily random walk (``popularity_drift_per_day``
    standard deviation per calendar day) and about 3 % of the items trend
    strongly for 2-6 days (two thirds up, a third down, 2-5x the walk's daily
    step per day) and keep the level they reached. With
    ``popularity_drift_per_day=0`` popularity is stationary.

Users
    A user's taste vector is 2.5x a mix of the centroids of a few favourite
    categories (Dirichlet weights) plus a personal deviation. The affinity of a
    user for an item is the dot product of their vectors: mostly between -1.5
    and 2, up to about 2.5 for a typical item of a user's single favourite
    category. Users differ in activity (gamma, ``sessions_per_user_per_day``
    sessions on average), a weekend factor and a -2..+2 hour shift of the
    shared daily rhythm (quiet at night, a midday bump, the peak in the
    evening).

Sessions and the funnel
    A session is a burst of 1-30 views (geometric, about 5 on average) 5 seconds
    to a few minutes apart. A view goes to an item drawn by the softmax of
    1.5 x affinity + log-popularity of the day, except that 30 % of the later
    views of a session go to one of the 10 items closest (cosine) to the item
    viewed just before (browsing "similar items"). A view leads to a click with
    probability sigmoid(-3 + 1.2 x affinity), a click to an add-to-cart with
    sigmoid(-2.5 + affinity) and an add-to-cart to a purchase with
    sigmoid(-1.8 + 0.6 x affinity), each step seconds to minutes after the
    previous one: about 15 % of the views are clicked, 4 % reach the cart and
    1.5 % are bought.

Every action of a session carries the session's id. Actions outside
[start, end) are dropped, so a funnel may be cut at the end of the span.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.simulation.transactions import SimulatedEvent

CLICKS_TOPIC = "clicks"
ACTIONS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

_DAY = 86_400.0
_HOUR = 3_600.0

# Relative browsing activity per UTC hour.
_HOURS = np.array([
    0.25, 0.12, 0.06, 0.04, 0.04, 0.08, 0.20, 0.45, 0.65, 0.70, 0.75, 0.85,
    1.00, 0.95, 0.80, 0.80, 0.90, 1.05, 1.30, 1.60, 1.85, 1.80, 1.30, 0.60,
])  # fmt: skip
_HOURS_CUM = np.cumsum(_HOURS) / _HOURS.sum()

_MAX_CATEGORIES = 12
_ITEM_DEVIATION = 0.6  # of an item's latent vector from its category centroid
_USER_DEVIATION = 0.5  # of a taste vector from the mix of favourite centroids
_TASTE_SCALE = 2.5
_FAVOURITE_CONCENTRATION = 0.2  # Dirichlet parameter of the category mix
_ZIPF_EXPONENT = 0.9
_TRENDING_SHARE = 0.03
_AFFINITY_WEIGHT = 1.5  # against log-popularity in the view softmax
_RELATED_SHARE = 0.3
_NEIGHBOURS = 10
_MEAN_VIEWS = 5.0
_MAX_VIEWS = 30
_VIEW_GAP = (5.0, 35.0)  # seconds: minimum, mean of the exponential excess
# (bias, affinity slope) of the logit and (minimum, mean excess) of the delay after the previous step
_FUNNEL = (((-3.0, 1.2), (2.0, 6.0)), ((-2.5, 1.0), (5.0, 40.0)), ((-1.8, 0.6), (30.0, 180.0)))
_BLOCK_CELLS = 2_000_000  # user x item (or item x item) scores computed at once


@dataclass(frozen=True, slots=True)
class ClickStreamConfig:
    """Size, span, activity and popularity drift of a simulated click stream."""

    seed: int = 0
    n_users: int = 1_000
    n_items: int = 500
    n_dims: int = 8
    start: float = 1_767_225_600.0
    days: float = 14.0
    sessions_per_user_per_day: float = 1.5
    popularity_drift_per_day: float = 0.15

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.n_users < 1 or self.n_items < 1 or self.n_dims < 1:
            raise ValueError("n_users, n_items and n_dims must be >= 1")
        if self.days <= 0:
            raise ValueError("days must be > 0")
        if self.sessions_per_user_per_day < 0:
            raise ValueError("sessions_per_user_per_day must be >= 0")
        if self.popularity_drift_per_day < 0:
            raise ValueError("popularity_drift_per_day must be >= 0")

    @property
    def end(self) -> float:
        """First instant after the span of events."""
        return self.start + self.days * _DAY


@dataclass(frozen=True)
class _World:
    taste: np.ndarray  # user x dimension
    latent: np.ndarray  # item x dimension
    log_popularity: np.ndarray  # calendar day x item
    neighbours: np.ndarray  # item x k most similar other items
    rate: np.ndarray  # sessions per weekday, per user
    weekend_factor: np.ndarray
    hour_shift: np.ndarray


@dataclass(frozen=True)
class _Views:
    session: np.ndarray
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    affinity: np.ndarray


def generate_click_stream(config: ClickStreamConfig) -> Iterator[SimulatedEvent]:
    """Views, clicks, add-to-carts and purchases in non-decreasing event_time order.

    >>> config = ClickStreamConfig(seed=1, n_users=60, n_items=40, days=3)
    >>> first = next(generate_click_stream(config))
    >>> first.topic, first.value["action"], list(first.truth)
    ('clicks', 'view', ['affinity'])
    >>> actions = [event.value["action"] for event in generate_click_stream(config)]
    >>> actions.count("view") > actions.count("click") > actions.count("add_to_cart") > 0
    True
    """
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    world_rng, session_rng, funnel_rng = (np.random.default_rng(s) for s in seeds)
    world = _build_world(config, world_rng)
    views = _views(world, config, session_rng)
    yield from _emit(views, _funnel(views, funnel_rng), config)


def true_affinities(config: ClickStreamConfig) -> np.ndarray:
    """The latent user x item affinity matrix behind ``generate_click_stream(config)``.

    Row ``i`` is ``user-{i:04d}``, column ``j`` is ``item-{j:04d}``.

    >>> config = ClickStreamConfig(seed=1, n_users=60, n_items=40, days=3)
    >>> event = next(generate_click_stream(config))
    >>> user, item = (int(event.value[f][5:]) for f in ("user_id", "item_id"))
    >>> round(float(true_affinities(config)[user, item]), 4) == event.truth["affinity"]
    True
    """
    world_rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[0])
    world = _build_world(config, world_rng)
    return world.taste @ world.latent.T


# World


def _calendar(config: ClickStreamConfig) -> tuple[np.ndarray, np.ndarray]:
    """UTC day numbers overlapping the span and whether each is a weekend day."""
    days = np.arange(math.floor(config.start / _DAY), math.ceil(config.end / _DAY))
    return days, (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _build_world(config: ClickStreamConfig, rng: np.random.Generator) -> _World:
    """Latent vectors of users and items, popularity per day and user habits."""
    n_categories = min(_MAX_CATEGORIES, config.n_items)
    scale = 1.0 / math.sqrt(config.n_dims)
    centroids = rng.normal(0.0, 1.0, (n_categories, config.n_dims))
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sizes = 1.0 / np.sqrt(1.0 + np.arange(n_categories))
    category = rng.choice(n_categories, config.n_items, p=sizes / sizes.sum())
    deviation = rng.normal(0.0, _ITEM_DEVIATION * scale, (config.n_items, config.n_dims))
    latent = centroids[category] + deviation
    mix = rng.dirichlet(np.full(n_categories, _FAVOURITE_CONCENTRATION), config.n_users)
    personal = rng.normal(0.0, _USER_DEVIATION * scale, (config.n_users, config.n_dims))
    taste = _TASTE_SCALE * mix @ centroids + personal
    days, _ = _calendar(config)
    return _World(
        taste=taste,
        latent=latent,
        log_popularity=_log_popularity(config, days.size, rng),
        neighbours=_neighbours(latent),
        rate=config.sessions_per_user_per_day * rng.gamma(1.5, 1.0 / 1.5, config.n_users),
        weekend_factor=rng.uniform(0.7, 1.5, config.n_users),
        hour_shift=rng.integers(-2, 3, config.n_users),
    )


def _log_popularity(config: ClickStreamConfig, n_days: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like log-popularity per calendar day: a random walk plus a few strong trends."""
    n = config.n_items
    drift = config.popularity_drift_per_day
    base = -_ZIPF_EXPONENT * np.log1p(rng.permutation(n))
    steps = rng.normal(0.0, drift, (n_days, n))
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0)
    trending = rng.choice(n, max(1, round(_TRENDING_SHARE * n)), replace=False)
    direction = np.where(rng.random(trending.size) < 2 / 3, 1.0, -1.0)
    slope = direction * rng.uniform(2.0, 5.0, trending.size) * drift
    begin = rng.uniform(-2.0, n_days, trending.size)
    length = rng.uniform(2.0, 6.0, trending.size)
    elapsed = np.clip(np.arange(n_days)[:, None] - begin, 0.0, length)
    walk[:, trending] += slope * elapsed
    return base + walk


def _neighbours(latent: np.ndarray) -> np.ndarray:
    """For each item, the (up to) 10 other items with the most similar latent vector."""
    n = latent.shape[0]
    k = min(_NEIGHBOURS, n - 1)
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64)
    unit = latent / np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-12)
    neighbours = np.empty((n, k), dtype=np.int64)
    block = max(1, _BLOCK_CELLS // n)
    for first in range(0, n, block):
        rows = np.arange(first, min(n, first + block))
        similarity = unit[rows] @ unit.T
        similarity[np.arange(rows.size), rows] = -np.inf
        neighbours[rows] = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return neighbours


# Sessions and views


def _sessions(
    world: _World, config: ClickStreamConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User, calendar-day index and start time of every session, ordered by day."""
    days, weekend = _calendar(config)
    rates = np.where(weekend[:, None], world.rate * world.weekend_factor, world.rate)  # day x user
    counts = rng.poisson(rates)
    day = np.repeat(np.arange(days.size), counts.sum(axis=1))
    user = np.repeat(np.tile(np.arange(config.n_users), days.size), counts.ravel())
    picks = np.minimum(np.searchsorted(_HOURS_CUM, rng.random(user.size)), 23)
    hour = (picks + world.hour_shift[user] + rng.random(user.size)) % 24.0
    return user, day, days[day] * _DAY + hour * _HOUR


def _views(world: _World, config: ClickStreamConfig, rng: np.random.Generator) -> _Views:
    """Every view of every session, sessions in order and views in order within them."""
    user, day, start = _sessions(world, config, rng)
    n_views = np.minimum(rng.geometric(1.0 / _MEAN_VIEWS, user.size), _MAX_VIEWS)
    session = np.repeat(np.arange(user.size), n_views)
    first = np.zeros(session.size, dtype=bool)
    offsets = np.cumsum(n_views) - n_views
    first[offsets] = True
    gaps = np.where(first, 0.0, _VIEW_GAP[0] + rng.exponential(_VIEW_GAP[1], session.size))
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[offsets], n_views)
    viewer = user[session]
    item = _preferred_items(world, viewer, day[session], rng)
    item = _follow_related(world, item, ~first & (rng.random(session.size) < _RELATED_SHARE), rng)
    affinity = np.einsum("ij,ij->i", world.taste[viewer], world.latent[item])
    return _Views(session, viewer, item, start[session] + elapsed, affinity)


def _preferred_items(
    world: _World, user: np.ndarray, day: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Items drawn for each view by the softmax of affinity and the day's log-popularity."""
    n_items = world.latent.shape[0]
    draws = rng.random(user.size)
    items = np.empty(user.size, dtype=np.int64)
    block = max(1, _BLOCK_CELLS // n_items)
    for d in np.unique(day).tolist():
        at = np.flatnonzero(day == d)
        users, row = np.unique(user[at], return_inverse=True)
        for first in range(0, users.size, block):
            scores = _AFFINITY_WEIGHT * world.taste[users[first : first + block]] @ world.latent.T
            scores += world.log_popularity[d]
            cum = np.cumsum(np.exp(scores - scores.max(axis=1, keepdims=True)), axis=1)
            cum /= cum[:, -1:]
            mine = (row >= first) & (row < first + block)
            local = row[mine] - first
            # Row r of ``flat`` spans (r, r + 1]: one search serves every row at once.
            flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
            picks = np.searchsorted(flat, local + draws[at[mine]], side="right") - local * n_items
            items[at[mine]] = np.minimum(picks, n_items - 1)
    return items


def _follow_related(
    world: _World, item: np.ndarray, related: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Replace the ``related`` views by a neighbour of the item viewed just before."""
    pick = rng.integers(0, max(1, world.neighbours.shape[1]), item.size)
    if world.neighbours.shape[1] == 0:
        return item
    positions = np.arange(item.size)
    # Depth of a related view in its chain of related views: chains resolve level by level.
    depth = positions - np.maximum.accumulate(np.where(related, -1, positions))
    for level in range(1, int(depth.max(initial=0)) + 1):
        at = np.flatnonzero(depth == level)
        item[at] = world.neighbours[item[at - 1], pick[at]]
    return item


def _funnel(views: _Views, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(view index, time)`` of the clicks, add-to-carts and purchases, step by step."""
    current = np.arange(views.ts.size)
    ts = views.ts
    steps = []
    for (bias, slope), (minimum, mean) in _FUNNEL:
        logit = bias + slope * views.affinity[current]
        go = rng.random(current.size) < 1.0 / (1.0 + np.exp(-logit))
        current = current[go]
        ts = ts[go] + minimum + rng.exponential(mean, current.size)
        steps.append((current, ts))
    return steps


# Emission


def _emit(
    views: _Views, steps: list[tuple[np.ndarray, np.ndarray]], config: ClickStreamConfig
) -> Iterator[SimulatedEvent]:
    """All actions in the span, in time order (a view before its click at equal times)."""
    parts = [(np.arange(views.ts.size), views.ts), *steps]
    view = np.concatenate([index for index, _ in parts])
    action = np.repeat(np.arange(len(parts)), [index.size for index, _ in parts])
    ts = np.round(np.concatenate([moment for _, moment in parts]), 3)
    keep = (ts >= config.start) & (ts < config.end)
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    view = view[order]
    sessions = views.session[view].tolist()
    users = views.user[view].tolist()
    items = views.item[view].tolist()
    affinities = np.round(views.affinity[view], 4).tolist()
    actions = action[order].tolist()
    ts = ts[order].tolist()

    user_ids = [f"user-{i:04d}" for i in range(config.n_users)]
    item_ids = [f"item-{i:04d}" for i in range(config.n_items)]
    for seq, moment in enumerate(ts):
        value = {
            "event_id": f"ev-{seq:09d}",
            "user_id": user_ids[users[seq]],
            "item_id": item_ids[items[seq]],
            "action": ACTIONS[actions[seq]],
            "ts": moment,
            "session_id": f"s-{sessions[seq]:08d}",
        }
        yield SimulatedEvent(CLICKS_TOPIC, value["user_id"], value, moment, {"affinity": affinities[seq]})

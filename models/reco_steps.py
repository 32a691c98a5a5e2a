"""The recommendations pipeline's steps as pure functions over typed messages.

The agents, the quality evaluation (:mod:`models.reco_quality`) and any
comparison call these, so the pipeline's logic exists once:

* :func:`record_interaction` - a click into its user's state: the user's half of
  the model's SGD steps, the :class:`~models.recommender.TrainingExample` s for the
  learner, and the item's weight into the flush's
  :class:`~tables.item_popularity.ItemDeltas` for the item stage.
* :func:`recommend` - the user's top ``k``: candidates from what is trending over the
  last hour and day, items near the user's recent ones in the model's item factor
  space, and the recent items themselves, ranked by the model.  A user without
  interactions gets :func:`recommend_trending`.  Items the user bought are never
  recommended.
* :func:`recommend_trending`, :func:`recommend_from_history` - the baselines.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.contracts import Click, Recommendations, ScoredItem
from models.recommender import NEGATIVE_TARGET, TARGETS, ItemFactors, Recommender, TrainingExample
from tables.item_popularity import ItemDeltas, ItemPopularity
from tables.user_history import UserHistory
from tables.windows import HOUR


@dataclass(frozen=True, slots=True)
class RecoSettings:
    """How many candidates of each source, and negatives per interaction.

    ``negatives`` items the user did not touch are drawn uniformly among the items the
    model knows for every interaction and learned with target 0: without them implicit
    feedback is all positive and every item drifts up alike.  Measured by
    ``python -m models.reco_quality`` (1,000 users, 500 items, 14 days, seed 0; hit@10 /
    NDCG@10 over the tail's views): 0 negatives 0.043 / 0.018, 1 negative 0.203 / 0.109,
    2 negatives 0.243 / 0.136, 4 negatives 0.258 / 0.153 (trending alone 0.213 / 0.138).
    2 is kept as the default: each negative is one more training example for the single
    learner to apply.

    ``similar_candidates`` are shared among the ``history_seeds`` most recent items the
    model knows: each brings its ``ceil(similar_candidates / seeds)`` nearest.
    """

    negatives: int = 2
    trending_candidates: int = 50
    similar_candidates: int = 50
    history_seeds: int = 5
    history_half_life: float = HOUR


DEFAULT_SETTINGS = RecoSettings()


def record_interaction(
    user: UserHistory,
    click: Click,
    model: Recommender,
    deltas: ItemDeltas | None = None,
    settings: RecoSettings = DEFAULT_SETTINGS,
) -> list[TrainingExample]:
    """Learn ``click`` into the user's state and factors; return the learner's examples.

    The positive example comes first, then the sampled negatives.  Negatives are drawn
    from the model's items by a generator seeded with the click, so that a replay draws
    the same ones.
    """
    factors = user.factors if user.factors is not None else model.new_user(click.user_id)
    steps = [(click.item_id, TARGETS[click.action])]
    steps += [(item_id, NEGATIVE_TARGET) for item_id in _negatives(user, click, model, settings.negatives)]
    examples, factors = model.learn_user_steps(factors, steps)
    user.factors = factors
    user.add(click)
    if deltas is not None:
        deltas.add(click)
    return examples


def _negatives(user: UserHistory, click: Click, model: Recommender, n: int) -> list[str]:
    ids = model.item_factors().ids
    if n < 1 or not ids:
        return []
    # A linear congruential generator seeded with the click (Knuth's MMIX constants): seeding
    # random.Random costs more than the rest of the draw, and sampling needs no better.
    state = zlib.crc32(f"{click.user_id}\x00{click.item_id}\x00{click.ts!r}".encode())
    count = len(ids)
    recent = user.recent.column("item")
    purchased = user.purchased
    picked: list[str] = []
    for _ in range(4 * n):  # a few tries: the user may have touched most of a small catalogue
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFF_FFFF_FFFF_FFFF
        item_id = ids[((state >> 32) * count) >> 32]  # the high bits, scaled to the catalogue
        if (
            item_id != click.item_id
            and item_id not in purchased
            and item_id not in picked
            and item_id not in recent
        ):
            picked.append(item_id)
            if len(picked) == n:
                break
    return picked


def recommend(
    user: UserHistory,
    popularity: ItemPopularity,
    model: Recommender,
    k: int,
    now: float,
    settings: RecoSettings = DEFAULT_SETTINGS,
) -> list[ScoredItem]:
    """The user's top ``k`` of :func:`candidate_items` at ``now``, best first (ties: smaller item id).

    Scores are the model's predicted affinity; a user without interactions or factors
    gets :func:`recommend_trending` instead.
    """
    if k < 1:
        return []
    if user.factors is None or not len(user.recent.ts):
        return recommend_trending(user, popularity, k, now, settings)
    factors = model.item_factors()
    rows, unknown = _candidate_rows(user, popularity, factors, now, settings)
    # Items the model has not learned score alike (factors and bias zero): the first ids suffice.
    unknown_score = (factors.global_mean + user.factors.bias) + 0.0  # as row_scores adds a zero row
    also = [(item, unknown_score) for item in heapq.nsmallest(k, unknown)]
    return top_scored(factors.ids, factors.row_scores(user.factors, rows), k, rows=rows, also=also)


def candidate_items(
    user: UserHistory,
    popularity: ItemPopularity,
    model: Recommender,
    now: float,
    settings: RecoSettings = DEFAULT_SETTINGS,
) -> set[str]:
    """Trending (hour and day), near the recent items, and the recent items; none bought.

    Near: the items most similar to each of the ``history_seeds`` most recent items
    the model knows (:meth:`~models.recommender.ItemFactors.similar_rows`).

    >>> from models.recommender import Recommender
    >>> user = UserHistory(); user.add(Click("u1", "bought", "purchase", 0.0))
    >>> user.add(Click("u1", "seen", "view", 1.0))
    >>> candidate_items(user, ItemPopularity(), Recommender(), now=1.0)
    {'seen'}
    """
    factors = model.item_factors()
    rows, unknown = _candidate_rows(user, popularity, factors, now, settings)
    return {factors.ids[row] for row in rows.tolist()} | set(unknown)


def _candidate_rows(
    user: UserHistory,
    popularity: ItemPopularity,
    factors: ItemFactors,
    now: float,
    settings: RecoSettings,
) -> tuple[np.ndarray, list[str]]:
    """:func:`candidate_items` as the rows of the items the model knows, and the ids of those it does not."""
    trending_rows, trending_unknown = factors.rows(
        popularity.trending_items(popularity.trending_time(now), settings.trending_candidates)
    )
    recent_rows, recent_unknown = factors.rows(user.recent_items())
    seeds = recent_rows[: settings.history_seeds].tolist()
    chosen = np.zeros(len(factors), dtype=bool)
    chosen[trending_rows] = True
    chosen[recent_rows] = True
    chosen[factors.similar_rows(seeds, settings.similar_candidates)] = True
    purchased = user.purchased
    if purchased:
        chosen[factors.rows(list(purchased))[0]] = False
    unknown = [item for item in dict.fromkeys(trending_unknown + recent_unknown) if item not in purchased]
    return np.flatnonzero(chosen), unknown


def recommend_trending(
    user: UserHistory,
    popularity: ItemPopularity,
    k: int,
    now: float,
    settings: RecoSettings = DEFAULT_SETTINGS,
) -> list[ScoredItem]:
    """The popularity baseline (and cold start): the last hour's weight plus the last day's hourly mean,
    as of the view's clock (:meth:`~tables.item_popularity.ItemPopularity.trending_time`).

    >>> from tables.item_popularity import ItemDeltas
    >>> popularity = ItemPopularity()
    >>> popularity.apply(ItemDeltas({"old": {60: 48.0}, "new": {1_440: 2.0}}))
    >>> recommend_trending(UserHistory(), popularity, k=2, now=86_400.0)
    [ScoredItem(item_id='new', score=2.0833333333333335), ScoredItem(item_id='old', score=2.0)]
    """
    at = popularity.trending_time(now)
    n = max(k, settings.trending_candidates)
    # The same for every user until the view changes: ranked once, each user's purchases skipped.
    ranked = popularity.derived(("recommend_trending", at, n), lambda: _trending_ranked(popularity, at, n))
    purchased = user.purchased
    return [scored for scored in ranked if scored.item_id not in purchased][:k]


def _trending_ranked(popularity: ItemPopularity, at: float, n: int) -> tuple[ScoredItem, ...]:
    scored = [
        (item, popularity.score(item, at, "hour") + popularity.score(item, at, "day") / 24.0)
        for item in popularity.trending_items(at, n)
    ]
    return tuple(_top(scored, len(scored)))


def recommend_from_history(
    user: UserHistory, k: int, now: float, settings: RecoSettings = DEFAULT_SETTINGS
) -> list[ScoredItem]:
    """The history baseline: the user's recent items by weight, halved every ``history_half_life`` of age.

    An item's score sums :data:`~models.recommender.TARGETS` of the user's recent
    interactions with it, each times ``0.5 ** (age / half_life)``.

    >>> user = UserHistory()
    >>> for ts, item, action in [(0.0, "a", "purchase"), (0.0, "b", "view"), (3_600.0, "c", "click")]:
    ...     user.add(Click("u1", item, action, ts))
    >>> recommend_from_history(user, k=5, now=3_600.0)
    [ScoredItem(item_id='c', score=2.0), ScoredItem(item_id='b', score=0.5)]
    """
    scores: dict[str, float] = {}
    half_life = settings.history_half_life
    for ts, item, action in user.interactions():
        if not user.has_purchased(item):
            decay = math.pow(0.5, max(0.0, now - ts) / half_life)
            scores[item] = scores.get(item, 0.0) + TARGETS[action] * decay
    return _top(scores.items(), k)


def recommendations_for(
    user_id: str, items: list[ScoredItem], model_version: int, ts: float
) -> Recommendations:
    """The ``recommendations`` message of a ranking."""
    return Recommendations(user_id=user_id, items=tuple(items), model_version=model_version, ts=ts)


def top_scored(
    item_ids: Sequence[str],
    scores: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    also: Iterable[tuple[str, float]] = (),
) -> list[ScoredItem]:
    """The ``k`` best, best first (ties: smaller item id), of the items scored ``scores`` -
    ``item_ids`` or, given ``rows``, ``item_ids[rows]`` - and of ``also``'s ``(item, score)``.

    >>> top_scored(["c", "b", "a"], np.array([1.0, 2.0, 2.0]), k=2)
    [ScoredItem(item_id='a', score=2.0), ScoredItem(item_id='b', score=2.0)]
    >>> top_scored(["c", "b", "a"], np.array([0.5]), k=2, rows=np.array([2]), also=[("d", 0.7)])
    [ScoredItem(item_id='d', score=0.7), ScoredItem(item_id='a', score=0.5)]
    """
    best = _contenders(scores, k)
    picked = best if rows is None else rows[best]
    scored = [*zip([item_ids[row] for row in picked.tolist()], scores[best].tolist(), strict=True), *also]
    return _top(scored, k)


def _contenders(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the scores at least the ``k``-th best (all of them when tied): only those are sorted."""
    n = len(scores)
    if n > k > 0:
        kth_best = np.partition(scores, n - k)[n - k]
        return np.flatnonzero(scores >= kth_best)
    return np.arange(n)


def _top(scored: Iterable[tuple[str, float]], k: int) -> list[ScoredItem]:
    # (-score, item) tuples compare in C, best first; negating a float twice gives it back exactly.
    best = heapq.nsmallest(k, [(-score, item) for item, score in scored])
    return [ScoredItem(item, float(-negated)) for negated, item in best]

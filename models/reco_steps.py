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
from tables.user_history import UserFactors, UserHistory
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
    gets :func:`recommend_trending` instead.  :func:`rank` of one :func:`ranking_request`.
    """
    return rank([ranking_request(user, popularity, model, k, now, settings)], settings)[0]


_NONE_PURCHASED: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RankingRequest:
    """What ranking one user needs, taken at one moment: the user's later clicks do not change it.

    ``ranked`` is the answer already when no model ranks it (the user's first click:
    :func:`recommend_trending`).
    """

    k: int
    ranked: list[ScoredItem] | None = None
    factors: ItemFactors | None = None
    user: UserFactors | None = None
    trending: tuple[str, ...] = ()
    recent: tuple[str, ...] = ()
    purchased: frozenset[str] = _NONE_PURCHASED


def ranking_request(
    user: UserHistory,
    popularity: ItemPopularity,
    model: Recommender,
    k: int,
    now: float,
    settings: RecoSettings = DEFAULT_SETTINGS,
) -> RankingRequest:
    """What :func:`rank` needs for ``user``'s top ``k`` at ``now`` with ``model`` (:func:`recommend`)."""
    if k < 1:
        return RankingRequest(k, ranked=[])
    if user.factors is None or not len(user.recent.ts):
        return RankingRequest(k, ranked=recommend_trending(user, popularity, k, now, settings))
    return _model_request(user, popularity, model, k, now, settings)


def _model_request(
    user: UserHistory,
    popularity: ItemPopularity,
    model: Recommender,
    k: int,
    now: float,
    settings: RecoSettings,
) -> RankingRequest:
    return RankingRequest(
        k,
        factors=model.item_factors(),
        user=user.factors,  # replaced, never changed in place, by the user's next step
        trending=popularity.trending_items(popularity.trending_time(now), settings.trending_candidates),
        recent=tuple(user.recent_items()),
        purchased=frozenset(user.purchased) if user.purchased else _NONE_PURCHASED,
    )


def rank(
    requests: Sequence[RankingRequest], settings: RecoSettings = DEFAULT_SETTINGS
) -> list[list[ScoredItem]]:
    """Each request's top ``k`` (:func:`recommend`), ranked together: a few array operations per
    model for all the requests instead of a few dozen per request."""
    ranked: list[list[ScoredItem] | None] = [request.ranked for request in requests]
    by_model: dict[int, list[int]] = {}
    for position, request in enumerate(requests):
        if request.ranked is None:
            by_model.setdefault(id(request.factors), []).append(position)
    for positions in by_model.values():
        group = [requests[position] for position in positions]
        for position, items in zip(positions, _rank_with_one_model(group, settings), strict=True):
            ranked[position] = items
    return ranked  # type: ignore[return-value]  # every request ranked above


def _rank_with_one_model(requests: list[RankingRequest], settings: RecoSettings) -> list[list[ScoredItem]]:
    factors = requests[0].factors
    assert factors is not None
    width = len(factors) + 1  # the last column: an unknown item's row, never a candidate
    # requests x items booleans: 25 MB for a backlog's flush of 5,000 clicks over 5,000 items.
    chosen = np.zeros((len(requests), width), dtype=bool)
    by_trending, candidates, bought, unknowns = _candidates(requests, factors, settings)
    for trending_rows, _, positions in by_trending.values():  # most requests of a flush share one
        chosen[np.ix_(positions, trending_rows)] = True
    chosen[candidates] = True
    chosen[bought] = False
    owner, rows = np.nonzero(chosen)  # by request, then by row
    latents = np.array([request.user.latent for request in requests])  # type: ignore[union-attr]
    offsets = factors.global_mean + np.array([request.user.bias for request in requests])  # type: ignore[union-attr]
    scores = factors.pair_scores(latents, offsets, owner, rows)
    best = _contenders_by_owner(scores, owner, [request.k for request in requests], len(requests))
    contenders: list[list[tuple[str, float]]] = [[] for _ in requests]
    ids = factors.ids
    for who, row, score in zip(owner[best].tolist(), rows[best].tolist(), scores[best].tolist(), strict=True):
        contenders[who].append((ids[row], score))
    ranked = []
    for request, offset, mine, unknown in zip(requests, offsets.tolist(), contenders, unknowns, strict=True):
        # Items the model has not learned score alike (factors and bias zero): the first ids suffice.
        also = [(item, offset + 0.0) for item in heapq.nsmallest(request.k, unknown)]
        ranked.append(_top(mine + also, request.k))
    return ranked


# A trending tuple's rows and unknown ids (looked up once per flush), and the requests that have it.
_Trending = tuple[tuple[int, ...], tuple[str, ...], list[int]]


def _candidates(
    requests: list[RankingRequest], factors: ItemFactors, settings: RecoSettings
) -> tuple[
    dict[tuple[str, ...], _Trending],
    tuple[np.ndarray, np.ndarray],
    tuple[np.ndarray, np.ndarray],
    list[list[str]],
]:
    """The requests' candidates (:func:`candidate_items`) as array indices: each trending
    tuple's rows and requests, each request's other candidate rows and bought rows as (request,
    row) pairs; and each request's unknown candidates' ids."""
    by_trending: dict[tuple[str, ...], _Trending] = {}
    candidate_rows: list[int] = []
    candidate_counts: list[int] = []
    bought_rows: list[int] = []
    bought_counts: list[int] = []
    unknowns: list[list[str]] = []
    index = factors.index
    for position, request in enumerate(requests):
        trending = by_trending.get(request.trending)
        if trending is None:
            trending = by_trending[request.trending] = (*factors.rows(request.trending), [])
        trending[2].append(position)
        recent_rows = [row for row in map(index.get, request.recent) if row is not None]
        similar = factors.similar_rows(recent_rows[: settings.history_seeds], settings.similar_candidates)
        candidate_rows += recent_rows
        candidate_rows += similar
        candidate_counts.append(len(recent_rows) + len(similar))
        purchased = request.purchased
        if purchased:
            bought = [row for row in map(index.get, purchased) if row is not None]
            bought_rows += bought
            bought_counts.append(len(bought))
        else:
            bought_counts.append(0)
        trending_unknown = trending[1]
        if trending_unknown or len(recent_rows) < len(request.recent):
            recent_unknown = [item for item in request.recent if item not in index]
            unknown = dict.fromkeys([*trending_unknown, *recent_unknown])
            unknowns.append([item for item in unknown if item not in purchased])
        else:
            unknowns.append([])
    owners = np.arange(len(requests))
    return (
        by_trending,
        (np.repeat(owners, candidate_counts), np.array(candidate_rows, dtype=np.intp)),
        (np.repeat(owners, bought_counts), np.array(bought_rows, dtype=np.intp)),
        unknowns,
    )


def _contenders_by_owner(scores: np.ndarray, owner: np.ndarray, ks: list[int], owners: int) -> np.ndarray:
    """Indices of the scores at least their owner's ``k``-th best (all of an owner's when
    tied or fewer), so that ties at the ``k``-th place all reach the final sort (``owner`` sorted)."""
    counts = np.bincount(owner, minlength=owners)
    width = int(counts.max()) if len(counts) else 0
    if width == 0:
        return np.zeros(0, dtype=np.intp)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    padded = np.full((owners, width), -np.inf)
    padded[owner, np.arange(len(owner)) - starts[owner]] = scores
    thresholds = np.full(owners, -np.inf)  # an owner with at most k scores: all are contenders
    ks_array = np.array(ks)
    for k in set(ks):
        ranked = np.flatnonzero((ks_array == k) & (counts > k))
        if len(ranked) and k > 0:
            # Padding is -inf, below every score: an owner's k-th best is at column width - k.
            thresholds[ranked] = np.partition(padded[ranked], width - k, axis=1)[:, width - k]
    return np.flatnonzero(scores >= thresholds[owner])


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
    request = _model_request(user, popularity, model, 1, now, settings)
    factors = request.factors
    assert factors is not None
    _, (_, rows), (_, bought), unknowns = _candidates([request], factors, settings)
    chosen = (set(factors.rows(request.trending)[0]) | set(rows.tolist())) - set(bought.tolist())
    return {factors.ids[row] for row in chosen} | set(unknowns[0])


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


def _top(scored: Iterable[tuple[str, float]], k: int) -> list[ScoredItem]:
    # (-score, item) tuples compare in C, best first; negating a float twice gives it back exactly.
    pairs = [(-score, item) for item, score in scored]
    best = sorted(pairs)[:k] if len(pairs) <= 4 * k else heapq.nsmallest(k, pairs)
    return [ScoredItem(item, float(-negated)) for negated, item in best]

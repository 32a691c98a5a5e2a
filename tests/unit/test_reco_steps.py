"""The recommendations steps: what is learned, what is sent, what is never recommended."""

from __future__ import annotations

import itertools
import math
import pickle
import struct
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts import CLICK_ACTIONS, Click, ScoredItem
from models.reco_steps import (
    RecoSettings,
    _contenders_by_owner,
    candidate_items,
    rank,
    ranking_request,
    recommend,
    recommend_from_history,
    recommend_trending,
    recommendations_for,
    record_interaction,
)
from models.recommender import TARGETS, Recommender, TrainingExample
from tables.item_popularity import ItemDeltas, ItemPopularity
from tables.user_history import UserFactors, UserHistory


def trained_model(items: list[str]) -> Recommender:
    model = Recommender(n_factors=4, seed=1)
    for item in items:
        model.learn(TrainingExample(item, (0.1, 0.2, 0.3, 0.4), 0.0, 1.0))
    return model


def popular(weights: dict[str, float], minute: int = 0) -> ItemPopularity:
    popularity = ItemPopularity()
    popularity.apply(ItemDeltas({item: {minute: weight} for item, weight in weights.items()}))
    return popularity


def test_recording_sends_the_positive_then_negatives_with_the_pre_step_factors():
    model = trained_model([f"i{n}" for n in range(20)])
    user = UserHistory()
    deltas = ItemDeltas()
    click = Click("u1", "i3", "add_to_cart", 120.0)
    examples = record_interaction(user, click, model, deltas, RecoSettings(negatives=3))
    start = model.new_user("u1")
    assert examples[0] == TrainingExample("i3", tuple(start.latent.tolist()), 0.0, TARGETS["add_to_cart"])
    assert [e.target for e in examples[1:]] == [0.0, 0.0, 0.0]
    assert len({e.item_id for e in examples}) == 4 and "i3" not in {e.item_id for e in examples[1:]}
    # Each example carries the factors the user had before its step: replaying them gives the state.
    factors = start
    for example in examples:
        assert example.user_latent == tuple(factors.latent.tolist())
        factors = model.learn_user(factors, example.item_id, example.target)
    assert user.factors == factors
    assert user.interactions() == [(120.0, "i3", "add_to_cart")]
    assert deltas.items == {"i3": {2: 3.0}}


def test_negatives_are_the_same_on_a_replay_and_avoid_what_the_user_touched():
    model = trained_model([f"i{n}" for n in range(6)])
    first, second = UserHistory(), UserHistory()
    for user in (first, second):
        user.add(Click("u1", "i0", "purchase", 0.0))
        user.add(Click("u1", "i1", "view", 1.0))
    click = Click("u1", "i2", "view", 5.0)
    a = record_interaction(first, click, model, settings=RecoSettings(negatives=3))
    b = record_interaction(second, click, model, settings=RecoSettings(negatives=3))
    assert a == b
    assert {e.item_id for e in a[1:]} <= {"i3", "i4", "i5"}


def test_a_model_without_items_samples_no_negatives():
    examples = record_interaction(UserHistory(), Click("u1", "a", "view", 0.0), Recommender())
    assert [e.item_id for e in examples] == ["a"]


def test_a_cold_start_user_gets_trending_items():
    popularity = popular({"a": 5.0, "b": 1.0, "c": 3.0})
    model = trained_model(["a", "b", "c"])
    assert recommend(UserHistory(), popularity, model, 2, 60.0) == recommend_trending(
        UserHistory(), popularity, 2, 60.0
    )
    assert [s.item_id for s in recommend(UserHistory(), popularity, model, 2, 60.0)] == ["a", "c"]


def test_bought_items_are_never_recommended_by_any_method():
    items = [f"i{n}" for n in range(30)]
    model = trained_model(items)
    popularity = popular({item: float(n + 1) for n, item in enumerate(items)})
    user = UserHistory()
    for n, item in enumerate(items[::3]):
        record_interaction(user, Click("u1", item, "purchase", float(n)), model)
    for n, item in enumerate(items[1::3]):
        record_interaction(user, Click("u1", item, "view", 100.0 + n), model)
    bought = set(items[::3])
    for ranking in (
        recommend(user, popularity, model, 30, 200.0),
        recommend_trending(user, popularity, 30, 200.0),
        recommend_from_history(user, 30, 200.0),
    ):
        assert ranking and not bought & {s.item_id for s in ranking}


def test_recommend_ranks_the_candidates_by_the_models_score_exactly():
    items = [f"i{n}" for n in range(12)]
    model = trained_model(items)
    popularity = popular({"i0": 2.0, "i5": 1.0, "fresh": 4.0})
    user = UserHistory()
    record_interaction(user, Click("u1", "i7", "click", 30.0), model)
    candidates = candidate_items(user, popularity, model, 30.0)
    assert {"i0", "i5", "fresh", "i7"} <= set(candidates)
    assert_top_k(recommend(user, popularity, model, 5, 30.0), model_scores(model, user, candidates), 5)


def model_scores(model: Recommender, user: UserHistory, items: Iterable[str]) -> dict[str, float]:
    """Each item's predicted affinity for ``user``, computed one item at a time."""
    return {item: float(model.item_factors().scores(user.factors, [item])[0]) for item in items}


def assert_top_k(ranking: list[ScoredItem], scores: dict[str, float], k: int) -> None:
    """``ranking`` is the ``k`` best of ``scores``, best first, ties by item id.  Scores are compared
    to 1e-12: BLAS may round an item's score in its last bits differently in another batch."""
    assert len(ranking) == min(k, len(scores)) == len({s.item_id for s in ranking})
    assert [s.score for s in ranking] == pytest.approx([scores[s.item_id] for s in ranking], abs=1e-12)
    for better, worse in itertools.pairwise(ranking):
        assert better.score > worse.score or (better.score == worse.score and better.item_id < worse.item_id)
    if ranking:
        assert all(
            scores[item] <= ranking[-1].score + 1e-12 for item in set(scores) - {s.item_id for s in ranking}
        )


def test_candidates_include_the_nearest_items_to_the_recent_ones_in_factor_space():
    model = Recommender(n_factors=2)
    for item, latent in [("near", (1.0, 0.05)), ("far", (-1.0, 0.0)), ("seen", (1.0, 0.0))]:
        for _ in range(50):
            model.learn(TrainingExample(item, latent, 0.0, 5.0))
    user = UserHistory()
    user.add(Click("u1", "seen", "view", 0.0))
    found = candidate_items(user, ItemPopularity(), model, 0.0, RecoSettings(similar_candidates=1))
    assert found == {"near", "seen"}


def test_the_history_baseline_halves_weights_every_half_life():
    user = UserHistory()
    user.add(Click("u1", "a", "view", 0.0))
    user.add(Click("u1", "a", "click", 3_600.0))
    user.add(Click("u1", "b", "add_to_cart", 7_200.0))
    ranking = recommend_from_history(user, 5, 7_200.0)
    assert ranking == [ScoredItem("b", 3.0), ScoredItem("a", 1.0 * 0.25 + 2.0 * 0.5)]


def test_the_trending_baseline_adds_the_hour_to_the_days_hourly_mean():
    popularity = popular({"a": 24.0, "b": 2.0}, minute=0)
    popularity.apply(ItemDeltas({"b": {100: 1.0}}))  # 100 minutes in: out of the hour window at 2 h
    now = 2 * 3_600.0
    ranking = recommend_trending(UserHistory(), popularity, 5, now)
    # a: nothing in the hour, 24 over the day; b: 1 in the hour, 3 over the day
    assert ranking == [ScoredItem("b", 1.0 + 3.0 / 24), ScoredItem("a", 0.0 + 24.0 / 24)]


def test_the_message_carries_the_ranking_and_version():
    message = recommendations_for("u1", [ScoredItem("a", 1.5)], 7, 9.0)
    assert message.items == (ScoredItem("a", 1.5),) and message.model_version == 7


def test_a_users_state_with_factors_survives_its_encoding_between_steps():
    model = trained_model(["a", "b"])
    user = UserHistory()
    record_interaction(user, Click("u1", "a", "view", 0.0), model)
    restored = UserHistory.decode(user.encode())
    for state in (user, restored):
        record_interaction(state, Click("u1", "b", "click", 5.0), model)
    assert restored == user
    assert np.array_equal(restored.factors.latent, user.factors.latent)
    assert math.isfinite(restored.factors.bias)
    assert pickle.loads(pickle.dumps(model)).item_factors().ids == model.item_factors().ids


@settings(max_examples=300, deadline=None)
@given(
    # Few distinct scores: many ties at the k-th place.
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-1.0, 0.0, 0.5, 2.0])), max_size=60),
    st.lists(st.integers(0, 8), min_size=6, max_size=6),
)
def test_each_owners_contenders_are_every_score_at_least_its_kth_best(pairs, ks):
    pairs.sort(key=lambda pair: pair[0])
    owner = np.array([who for who, _ in pairs], dtype=np.intp)
    scores = np.array([score for _, score in pairs])
    found = _contenders_by_owner(scores, owner, ks, 6).tolist()
    expected = []
    for j, (who, score) in enumerate(pairs):
        mine = sorted((s for w, s in pairs if w == who), reverse=True)
        if len(mine) <= ks[who] or score >= mine[ks[who] - 1]:
            expected.append(j)
    assert found == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.sampled_from(CLICK_ACTIONS), st.floats(0.0, 1e6)),
        max_size=80,
    ),
    st.booleans(),
)
def test_a_users_encoding_is_the_documented_layout_byte_for_byte(interactions, with_factors):
    user = UserHistory()
    for item, action, ts in interactions:
        user.add(Click("u1", item, action, ts))
    if with_factors:
        user.factors = UserFactors(np.linspace(-1.0, 1.0, 10), 0.25)
    assert user.encode() == reference_encoding(user)
    assert UserHistory.decode(user.encode()) == user


def reference_encoding(user: UserHistory) -> bytes:
    """The layout spelled out with one struct format (the first version's encoder)."""
    items, codes = user.recent.columns()
    ids = list(dict.fromkeys([*items, *user.purchased]))
    index = {item_id: i for i, item_id in enumerate(ids)}
    factors = user.factors
    n_factors = 0 if factors is None else factors.latent.size
    rows = [index[item] for item in items] + [index[item] for item in user.purchased]
    packed = struct.pack(
        f"<BBHHHd{n_factors}d{len(items)}d{len(codes)}B{len(rows)}H",
        1,
        n_factors,
        len(items),
        len(user.purchased),
        len(ids),
        0.0 if factors is None else factors.bias,
        *([] if factors is None else factors.latent.tolist()),
        *user.recent.ts,
        *codes,
        *rows,
    )
    raw_ids = [item_id.encode() for item_id in ids]
    return packed + b"".join(struct.pack("<H", len(raw)) + raw for raw in raw_ids)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([f"i{n}" for n in range(40)]), min_size=1, max_size=30, unique=True),
    st.lists(
        st.tuples(st.sampled_from([f"i{n}" for n in range(50)]), st.sampled_from(CLICK_ACTIONS)),
        min_size=1,
        max_size=25,
    ),
    st.dictionaries(st.sampled_from([f"i{n}" for n in range(50)]), st.floats(0.5, 9.0), max_size=30),
    st.integers(1, 15),
)
def test_recommend_is_the_top_k_of_every_candidate_by_the_models_score(learned, clicks, weights, k):
    # Items the model never learned (i40 and up) and purchases among the clicks and the trending.
    model = trained_model(learned)
    popularity = popular(weights)
    user = UserHistory()
    for n, (item, action) in enumerate(clicks):
        record_interaction(user, Click("u1", item, action, float(n)), model)
    now = float(len(clicks))
    factors = model.item_factors()
    at = popularity.trending_time(now)
    found = {item for horizon in ("hour", "day") for item, _ in popularity.trending(at, 50, horizon)}
    found |= set(user.recent_items())
    seeds = [factors.index[item] for item in user.recent_items() if item in factors.index]
    seeds = seeds[: RecoSettings().history_seeds]
    found |= {factors.ids[row] for row in factors.similar_rows(seeds, 6)}
    candidates = sorted(found - set(user.purchased))
    reco_settings = RecoSettings(similar_candidates=6)
    assert set(candidates) == candidate_items(user, popularity, model, now, reco_settings)
    ranking = recommend(user, popularity, model, k, now, reco_settings)
    assert_top_k(ranking, model_scores(model, user, candidates), k)


def test_the_trending_ranking_kept_between_clicks_follows_every_change_of_the_view():
    popularity = popular({"a": 3.0, "b": 2.0})
    buyer = UserHistory()
    buyer.add(Click("u2", "a", "purchase", 0.0))
    assert [s.item_id for s in recommend_trending(UserHistory(), popularity, 2, 60.0)] == ["a", "b"]
    assert [s.item_id for s in recommend_trending(buyer, popularity, 2, 60.0)] == ["b"]
    popularity.apply(ItemDeltas({"b": {0: 5.0}, "c": {0: 4.0}}))
    assert recommend_trending(UserHistory(), popularity, 2, 60.0) == [
        ScoredItem("b", 7.0 + 7.0 / 24),
        ScoredItem("c", 4.0 + 4.0 / 24),
    ]
    assert [s.item_id for s in recommend_trending(buyer, popularity, 3, 60.0)] == ["b", "c"]


def test_asking_for_no_items_gets_none_whatever_the_model_knows():
    popularity = popular({"a": 2.0, "b": 1.0})
    user = UserHistory()
    record_interaction(user, Click("u1", "new", "view", 0.0), Recommender())  # the model knows no item
    assert recommend(user, popularity, Recommender(), 0, 60.0) == []
    assert recommend(UserHistory(), popularity, Recommender(), 0, 60.0) == []
    assert [s.item_id for s in recommend(user, popularity, Recommender(), 2, 60.0)] == ["a", "b"]


# A flush's clicks: four users, some clicking again, 45 items of which the models learn at most 42.
flush_clicks = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from([f"i{n}" for n in range(45)]),
        st.sampled_from(CLICK_ACTIONS),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    flush_clicks,
    st.integers(1, 12),
    st.booleans(),
)
def test_ranking_a_flushs_requests_together_equals_ranking_each_alone(clicks, k, new_model_midway):
    # Several users, some clicking more than once (each request is the user's state at that
    # click), purchases, items the model never learned (i40 and up), and a model replaced
    # midway: requests of two models ranked in one call.
    model = trained_model([f"i{n}" for n in range(40)])
    popularity = popular({f"i{n}": float(n % 7) for n in range(0, 45, 2)})
    users: dict[str, UserHistory] = {}
    requests, alone = [], []
    for n, (user_id, item, action) in enumerate(clicks):
        if new_model_midway and n == len(clicks) // 2:
            model = trained_model([f"i{n}" for n in range(5, 42)])
        user = users.setdefault(user_id, UserHistory())
        record_interaction(user, Click(user_id, item, action, float(n)), model)
        requests.append(ranking_request(user, popularity, model, k, float(n)))
        alone.append(recommend(user, popularity, model, k, float(n)))
    together = rank(requests)
    assert len(together) == len(alone)
    for batch, single in zip(together, alone, strict=True):
        assert [s.item_id for s in batch] == [s.item_id for s in single]
        assert [s.score for s in batch] == pytest.approx([s.score for s in single], abs=1e-12)

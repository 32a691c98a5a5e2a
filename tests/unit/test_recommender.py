"""The split recommender: each half of a step is River's, users never enter the snapshot, size is bounded."""

from __future__ import annotations

import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import optim, reco

from models.recommender import ItemFactors, Recommender, TrainingExample, snapshot_bytes
from models.snapshots import MAX_SNAPSHOT_BYTES, Snapshot
from tables.user_history import UserFactors


def river_twin(model: Recommender) -> reco.BiasedMF:
    return reco.BiasedMF(
        n_factors=model.n_factors,
        bias_optimizer=optim.SGD(model.learning_rate),
        latent_optimizer=optim.SGD(model.learning_rate),
        l2_bias=model.l2,
        l2_latent=model.l2,
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=model.seed),
        seed=model.seed,
    )


def test_a_split_step_equals_rivers_own_learn_one_on_both_halves():
    model = Recommender(n_factors=4, learning_rate=0.05, l2=0.02, seed=3)
    twin = river_twin(model)
    users = {name: model.new_user(name) for name in ("u1", "u2")}
    for name, user in users.items():
        twin.u_latents[name] = user.latent.copy()
        twin.u_biases[name] = user.bias
    # A constant target keeps the global mean where the user stage's snapshot has it, so
    # that River's prediction inside learn_one is the user stage's within rounding.  The items
    # are learned once first: for an item new to the learner, the user stage steps against
    # zero factors where River would use the random ones the learner is about to draw.
    for item in ("a", "b", "c"):
        model.learn(TrainingExample(item, tuple(twin.u_latents["u1"].tolist()), twin.u_biases["u1"], 1.0))
        twin.learn_one("u1", item, 1.0)
    users["u1"] = UserFactors(twin.u_latents["u1"].copy(), twin.u_biases["u1"])
    steps = [("u1", "a"), ("u2", "a"), ("u1", "b"), ("u2", "b"), ("u1", "a"), ("u2", "c")] * 5
    for name, item in steps:
        example = model.training_example(users[name], item, 1.0)
        users[name] = model.learn_user(users[name], item, 1.0)
        model.learn(example)
        twin.learn_one(name, item, 1.0)
        np.testing.assert_allclose(users[name].latent, twin.u_latents[name], rtol=0, atol=1e-12)
        assert users[name].bias == pytest.approx(twin.u_biases[name], abs=1e-12)
        factors = model.item_factors()
        for other in factors.ids:
            row = factors.index[other]
            np.testing.assert_allclose(factors.matrix[row], twin.i_latents[other], rtol=0, atol=1e-12)
            assert factors.biases[row] == pytest.approx(twin.i_biases[other], abs=1e-12)
    assert len(model.mf.u_latents) == 0 and len(model.mf.u_biases) == 0


def test_an_unknown_item_scores_as_zero_factors_and_is_not_created_by_scoring():
    model = Recommender(n_factors=3)
    model.learn(TrainingExample("a", (0.1, 0.2, 0.3), 0.0, 2.0))
    user = UserFactors(np.array([1.0, 1.0, 1.0]), 0.5)
    factors = model.item_factors()
    score = factors.scores(user, ["never-seen"])[0]
    assert score == factors.global_mean + 0.5
    assert model.learn_user(user, "never-seen", 2.0).latent.tolist() == pytest.approx(
        (user.latent * (1 - model.learning_rate * model.l2)).tolist()
    )
    assert "never-seen" not in model.mf.i_latents


def test_scores_equal_rivers_prediction_for_known_items():
    model = Recommender(n_factors=4, seed=5)
    user = model.new_user("u1")
    for item in ("a", "b", "c"):
        model.learn(model.training_example(user, item, 3.0))
    twin_mf = model.mf
    twin_mf.u_latents["u"] = user.latent
    twin_mf.u_biases["u"] = user.bias
    expected = [twin_mf.predict_one("u", item) for item in ("a", "b", "c")]
    del twin_mf.u_latents["u"], twin_mf.u_biases["u"]
    assert model.item_factors().scores(user, ["a", "b", "c"]).tolist() == pytest.approx(expected, abs=1e-12)


def test_items_beyond_the_cap_are_forgotten_least_recently_learned_first():
    model = Recommender(n_factors=2, max_items=3)
    user = (0.1, 0.1)
    for item in ["a", "b", "c", "a", "d", "e"]:
        model.learn(TrainingExample(item, user, 0.0, 1.0))
    assert model.item_factors().ids == ["a", "d", "e"]
    assert set(model.mf.i_latents) == {"a", "d", "e"} and set(model.mf.i_biases) == {"a", "d", "e"}
    assert model.evicted == 2


def test_a_snapshot_round_trip_keeps_every_factor_and_the_learning_order():
    model = Recommender(n_factors=3, max_items=4, seed=2)
    for n in range(10):
        model.learn(TrainingExample(f"i{n % 6}", (0.1 * n, 0.2, -0.1), 0.05, float(n % 4)))
    copy = pickle.loads(pickle.dumps(model))
    original, restored = model.item_factors(), copy.item_factors()
    assert restored.ids == original.ids
    assert np.array_equal(restored.matrix, original.matrix)
    assert np.array_equal(restored.biases, original.biases)
    assert restored.global_mean == original.global_mean
    # Both go on learning identically (the initializer's random state travelled too).
    for target in (model, copy):
        target.learn(TrainingExample("new", (0.3, 0.3, 0.3), 0.0, 5.0))
        target.learn(TrainingExample("i0", (0.3, 0.3, 0.3), 0.0, 5.0))
    assert np.array_equal(model.item_factors().matrix, copy.item_factors().matrix)
    assert model.item_factors().ids == copy.item_factors().ids


def test_the_snapshot_at_the_item_cap_stays_well_under_the_topic_limit():
    model = Recommender()  # 10 factors, 5,000 items
    rng = np.random.default_rng(0)
    for n in range(model.max_items + 500):
        latent = tuple(rng.normal(0.0, 0.3, model.n_factors).tolist())
        model.learn(TrainingExample(f"item-{n:07d}", latent, 0.0, float(n % 6)))
    assert len(model.item_factors()) == model.max_items
    size = snapshot_bytes(model)
    assert size < MAX_SNAPSHOT_BYTES * 0.6, size
    signed = Snapshot("reco", version=1, model=model).encode(key=b"k" * 16)
    assert len(signed) < MAX_SNAPSHOT_BYTES * 0.6
    assert zlib.decompress(signed[-(len(signed) - 58) :])  # header + signature, then the body


def test_a_user_is_initialised_from_the_id_alone():
    a, b = Recommender(seed=1), Recommender(seed=2)
    assert a.new_user("u1") == b.new_user("u1")
    assert a.new_user("u1") != a.new_user("u2")


def test_training_examples_survive_their_encoding_exactly():
    example = TrainingExample("item-1", (0.1, -1e-300, 3.141592653589793), -0.0, 5.0)
    assert TrainingExample.decode(example.encode()) == example


def cosine(matrix: np.ndarray, a: int, b: int) -> float:
    norms = np.linalg.norm(matrix[a]) * np.linalg.norm(matrix[b])
    return float(matrix[a] @ matrix[b] / norms) if norms > 0.0 else 0.0


def assert_nearest(matrix: np.ndarray, seed: int, found: list[int], count: int) -> None:
    """``found`` are ``count`` other rows whose similarities to ``seed`` are a full sort's best,
    in order (rows whose similarity differs only in the last bits may come in either order)."""
    others = sorted(
        (row for row in range(len(matrix)) if row != seed), key=lambda row: -cosine(matrix, seed, row)
    )
    expected = [cosine(matrix, seed, row) for row in others[:count]]
    assert len(found) == len(set(found)) == len(expected) and seed not in found
    assert [cosine(matrix, seed, row) for row in found] == pytest.approx(expected, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    # Few distinct coordinates: many ties of similarity.
    st.lists(
        st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0]), min_size=3, max_size=3), min_size=1, max_size=25
    ),
    st.lists(st.integers(0, 24), min_size=1, max_size=5),
    st.integers(1, 30),
)
def test_similar_rows_are_each_seeds_nearest_by_cosine_as_a_full_sort_finds_them(latents, seeds, k):
    matrix = np.array(latents)
    seeds = [seed % len(matrix) for seed in seeds]
    factors = ItemFactors([f"i{n}" for n in range(len(matrix))], matrix, np.zeros(len(matrix)), 0.0)
    per_seed = min(-(-k // len(seeds)), len(matrix) - 1)
    found = factors.similar_rows(seeds, k)
    assert len(found) == per_seed * len(seeds)
    for n, seed in enumerate(seeds):
        assert_nearest(matrix, seed, found[n * per_seed : (n + 1) * per_seed], per_seed)
    # Asked again, from the kept neighbours: the same; and fewer, the first of them.
    assert factors.similar_rows(seeds, k) == found
    assert factors.similar_rows(seeds[:1], 1) == found[: min(1, per_seed)]


def test_ties_of_similarity_go_to_the_smaller_row():
    matrix = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    factors = ItemFactors([f"i{n}" for n in range(5)], matrix, np.zeros(5), 0.0)
    assert factors.similar_rows([0], k=4) == [2, 4, 1, 3]


def test_rows_keeps_the_answer_for_a_tuple_and_looks_a_list_up_afresh():
    factors = ItemFactors(["a", "b"], np.eye(2), np.zeros(2), 0.0)
    trending = ("b", "new", "a")
    rows, unknown = factors.rows(trending)
    assert rows == (1, 0) and unknown == ("new",)
    assert factors.rows(trending)[0] is rows
    items = ["a"]
    assert list(factors.rows(items)[0]) == [0]
    items.append("b")
    assert list(factors.rows(items)[0]) == [0, 1]


def test_several_user_steps_at_once_are_rivers_sgd_steps_in_turn_each_sent_with_the_factors_before_it():
    model = Recommender(n_factors=4, seed=2)
    for item in ("a", "b"):
        model.learn(TrainingExample(item, (0.3, -0.1, 0.2, 0.5), 0.1, 3.0))
    factors = model.item_factors()
    start = model.new_user("u1")
    steps = [("a", 5.0), ("never-seen", 0.0), ("b", 0.0)]
    examples, after = model.learn_user_steps(start, steps)
    latent, bias = start.latent.copy(), start.bias
    for example, (item, target) in zip(examples, steps, strict=True):
        assert example.item_id == item and example.target == target
        assert example.user_latent == pytest.approx(tuple(latent.tolist()), abs=1e-15)
        assert example.user_bias == pytest.approx(bias, abs=1e-15)
        # BiasedMF.learn_one's user half, in arrays: squared loss gradient, clamped, L2 on the user.
        row = factors.index.get(item)
        item_latent = np.zeros(4) if row is None else factors.matrix[row]
        item_bias = 0.0 if row is None else factors.biases[row]
        prediction = factors.global_mean + bias + item_bias + latent @ item_latent
        gradient = np.clip(2.0 * (prediction - target), -model.mf.clip_gradient, model.mf.clip_gradient)
        latent, bias = (
            latent - 0.02 * (gradient * item_latent + 0.01 * latent),
            bias - 0.02 * (gradient + 0.01 * bias),
        )
    assert after.latent.tolist() == pytest.approx(latent.tolist(), abs=1e-12)
    assert after.bias == pytest.approx(bias, abs=1e-12)


@given(
    targets=st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0]), min_size=1, max_size=40),
    items=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=40, max_size=40),
    clip=st.sampled_from([1e12, 0.5]),  # River's default (no clipping) and a clipping one
)
@settings(max_examples=50, deadline=None)
def test_the_learners_step_leaves_rivers_model_as_learn_one_with_the_lent_user_would(targets, items, clip):
    model = Recommender(seed=7)  # eddy's 10 factors, learning rate and L2
    model.mf.clip_gradient = clip
    twin = river_twin(model)
    twin.clip_gradient = clip
    user = model.new_user("u1")
    for target, item in zip(targets, items, strict=False):
        example = model.training_example(user, item, target)
        model.learn(example)
        twin.u_latents["lent"] = np.array(example.user_latent)
        twin.u_biases["lent"] = example.user_bias
        twin.learn_one("lent", item, target)
        user = model.learn_user(user, item, target)
    mf = model.mf
    assert mf.global_mean.get() == twin.global_mean.get() and mf.global_mean.n == twin.global_mean.n
    assert sorted(mf.i_latents) == sorted(twin.i_latents) and not mf.u_latents and not mf.u_biases
    for item in twin.i_latents:  # new items drawn by the same initializer in the same order
        np.testing.assert_allclose(mf.i_latents[item], twin.i_latents[item], rtol=0, atol=1e-12)
        assert mf.i_biases[item] == pytest.approx(twin.i_biases[item], abs=1e-12)
    for name in ("u_bias_optimizer", "i_bias_optimizer", "u_latent_optimizer", "i_latent_optimizer"):
        assert getattr(mf, name).n_iterations == getattr(twin, name).n_iterations == len(targets)

"""The split recommender: each half of a step is River's, users never enter the snapshot, size is bounded."""

from __future__ import annotations

import pickle
import zlib

import numpy as np
import pytest
from river import optim, reco

from models.recommender import Recommender, TrainingExample, snapshot_bytes
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
    # that River's prediction inside learn_one is the user stage's to the last bit.  The items
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

"""FraudModel: the z-score anomaly, the fused standardization, and pickles old and new."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from river import preprocessing

from models.fraud import (
    SUPERVISED_ONLY,
    Z_CLIP,
    FraudModel,
    anomaly,
    classifier_inputs,
    largest_positive,
    terminal_risk,
    tree_inputs,
)


def traffic(n: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [
        {
            "amount": rng.lognormvariate(3.0, 1.0),
            "online": float(rng.random() < 0.3),
            "hour": rng.uniform(0.0, 24.0),
            "card_count_1h": rng.randint(1, 4),
            "card_merchant_prev_30d": rng.randint(0, 3),
            "card_amount_log_ratio": rng.gauss(0.0, 0.5),
            "card_country_share_30d": rng.random(),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def trained() -> tuple[FraudModel, list[dict[str, float]]]:
    model = FraudModel()
    examples = traffic(800, seed=1)
    for i, features in enumerate(examples):
        model.observe(features)
        model.learn(features, is_fraud=features["amount"] > 50.0 and i % 2 == 0)
    return model, traffic(50, seed=2)


def test_standardized_inputs_are_the_river_scalers_transform_of_the_classifier_inputs(trained):
    model, examples = trained
    for features in examples:
        expected = model.scaler.transform_one(classifier_inputs(features))
        got = model.standardized_inputs(features)
        assert list(got) == list(expected)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_the_probability_is_the_classifiers(trained):
    model, examples = trained
    assert model.frauds_learned >= model.warmup_frauds
    for features in examples:
        p = model.classifier.predict_proba_one(model.standardized_inputs(features))[True]
        assert model.score(features).p_fraud == pytest.approx(model._calibrated(p), rel=1e-9)


def test_reasons_are_the_inputs_pushing_the_log_odds_up_most(trained):
    model, examples = trained
    weights = model.classifier.weights
    for features in examples:
        z = model.standardized_inputs(features)
        pushes = sorted(((weights.get(name, 0.0) * value, name) for name, value in z.items()), reverse=True)
        expected = [name for push, name in pushes[: model.n_reasons] if push > 0]
        assert model.score(features).reasons == expected


def test_anomaly_ranks_outliers_above_typical_traffic_with_no_labels():
    model = FraudModel()
    for features in traffic(500, seed=3):
        model.observe(features)
    typical = traffic(200, seed=4)
    outlier = {**typical[0], "amount": 20_000.0, "card_count_1h": 12, "card_amount_log_ratio": 4.0}
    scores = [model.score(features) for features in typical]
    assert all(score.supervised_weight == 0.0 and score.score == score.anomaly for score in scores)
    assert model.score(outlier).score > max(score.score for score in scores)
    assert model.score(outlier).reasons  # the most unusual inputs


def test_anomaly_clips_each_input_at_z_clip_standard_deviations():
    assert Z_CLIP == 20.0
    assert anomaly({"a": 20.0}) == anomaly({"a": 500.0}) == 400.0 / 402.0
    assert anomaly({"a": -20.0, "b": 0.0}) == anomaly({"a": -1e9, "b": 0.0}) == 200.0 / 202.0


def test_terminal_risk_reads_the_fraud_labels_behind_the_smoothed_rate():
    # 7 labels, 5 of them frauds: smoothed rate (5 + 0.01 * 20) / (7 + 20)
    x = terminal_risk({"merchant_labels_7d": 7, "merchant_fraud_rate_7d": 5.2 / 27})
    assert x == {
        "m_frauds_7d": math.log1p(5),
        "m_fraud_share_7d": 5 / 7,
        "x_share_frauds_7d": 5 / 7 * math.log1p(5),
    }
    assert terminal_risk({"merchant_labels_7d": 0, "merchant_fraud_rate_7d": 0.01})["m_fraud_share_7d"] == 0.0
    assert set(x) == SUPERVISED_ONLY <= set(classifier_inputs({"amount": 1.0}))


def test_the_anomaly_score_leaves_out_the_supervised_only_inputs(trained):
    model, examples = trained
    features = examples[0]
    z = model.standardized_inputs(features)
    plain = {name: value for name, value in z.items() if name not in SUPERVISED_ONLY}
    assert model.score(features).anomaly == anomaly(plain)
    assert anomaly({"a": 1.0, "b": -1.0, "c": 1e6}, skip=frozenset({"c"})) == anomaly({"a": 1.0, "b": -1.0})


def test_tree_inputs_read_the_fraud_labels_behind_the_smoothed_rates():
    features = {
        "amount": 80.0,
        "card_amount_log_ratio": -0.25,
        "merchant_labels_7d": 7,
        "merchant_fraud_rate_7d": 7.2 / 27,  # 7 frauds of 7 labels
        "merchant_labels_30d": 20,
        "merchant_fraud_rate_30d": 15.2 / 40,  # 15 frauds of 20 labels
    }
    assert tree_inputs(features) == {
        "amount": 80.0,
        "ratio": -0.25,
        "frauds_7d": 7,
        "share_7d": 1.0,
        "share_30d": 0.75,
    }
    assert tree_inputs({}) == {"amount": 0.0, "ratio": 0.0, "frauds_7d": 0, "share_7d": 0.0, "share_30d": 0.0}


def test_the_tree_joins_the_probability_only_at_a_terminal_with_fraud_labels(trained):
    model, examples = trained
    plain = examples[0]
    flagged = {**plain, "merchant_labels_7d": 7, "merchant_fraud_rate_7d": 7.2 / 27}
    for features in (plain, flagged):
        z = model.standardized_inputs(features)
        log_odds = model.classifier.intercept + sum(
            model._classifier_weights.get(n, 0.0) * v for n, v in z.items()
        )
        p_classifier = model._calibrated(1.0 / (1.0 + math.exp(-log_odds)))
        p_tree = model._calibrated(model.tree.predict_proba_one(tree_inputs(features)).get(True, 0.0))
        expected = p_classifier if features is plain else (p_classifier + p_tree) / 2
        assert model.score(features).p_fraud == pytest.approx(expected, rel=1e-12)


def test_largest_positive_matches_a_full_sort():
    rng = random.Random(5)
    for _ in range(200):
        values = {f"f{i}": rng.choice([rng.gauss(0.0, 1.0), 0.0, 1.0]) for i in range(rng.randint(0, 12))}
        n = rng.randint(1, 4)
        ranked = sorted(((value, name) for name, value in values.items() if value > 0), reverse=True)
        assert largest_positive(values, n) == [name for _, name in ranked[:n]]


def test_a_pickled_model_scores_the_same_after_loading(trained):
    model, examples = trained
    restored = pickle.loads(pickle.dumps(model))
    assert "_standardizers" not in model.__getstate__()
    for features in examples:
        assert restored.score(features) == model.score(features)


def test_a_pickle_from_before_the_z_score_anomaly_loads_and_drops_its_half_space_trees(trained):
    model, examples = trained
    state = model.__getstate__()
    state["detector"] = preprocessing.MinMaxScaler()  # stands for the old MinMaxScaler | HalfSpaceTrees
    old = FraudModel.__new__(FraudModel)
    old.__setstate__(state)
    assert not hasattr(old, "detector")
    for features in examples:
        assert old.score(features) == model.score(features)


def test_observe_updates_the_scaler_exactly_as_its_own_learn_one(trained):
    model, _ = trained
    scaler = preprocessing.StandardScaler()
    for features in traffic(800, seed=1):
        scaler.learn_one(classifier_inputs(features))
    assert model.scaler.counts == scaler.counts
    assert model.scaler.means == scaler.means  # bit for bit: the same arithmetic in the same order
    assert model.scaler.vars == scaler.vars

"""Hit-rate and NDCG on hand-made rankings, and a tiny replay of the whole evaluation."""

from __future__ import annotations

import math

import pytest

from app.contracts import ScoredItem
from app.simulation.clicks import ClickStreamConfig
from models.reco_quality import METHODS, TARGETS, RankingMetrics, evaluate, ndcg_at, rank_of


def ranking(*items: str) -> list[ScoredItem]:
    return [ScoredItem(item, float(-n)) for n, item in enumerate(items)]


def test_rank_is_one_based_and_none_when_absent():
    assert rank_of("a", ranking("a", "b")) == 1
    assert rank_of("b", ranking("a", "b")) == 2
    assert rank_of("c", ranking("a", "b")) is None


def test_ndcg_of_one_relevant_item_by_hand():
    # DCG = 1 / log2(rank + 1); the ideal ranking has the item first, DCG 1.
    assert ndcg_at(1, 10) == 1.0
    assert ndcg_at(2, 10) == pytest.approx(1 / math.log2(3))  # 0.6309...
    assert ndcg_at(3, 10) == 0.5
    assert ndcg_at(7, 10) == pytest.approx(1 / 3)
    assert ndcg_at(10, 10) == pytest.approx(1 / math.log2(11))
    assert ndcg_at(11, 10) == 0.0 and ndcg_at(None, 10) == 0.0
    assert ndcg_at(3, 2) == 0.0


def test_hit_rate_and_ndcg_of_four_hand_made_cases():
    # next items: a (ranked 1st), c (3rd), x (absent), d (4th, beyond k=3)
    metrics = RankingMetrics(k=3)
    for item, shown in [
        ("a", ranking("a", "b", "c")),
        ("c", ranking("a", "b", "c")),
        ("x", ranking("a", "b", "c")),
        ("d", ranking("a", "b", "c", "d")),
    ]:
        metrics.update(rank_of(item, shown))
    assert (metrics.n, metrics.hits) == (4, 2)
    assert metrics.hit_rate == 0.5
    assert metrics.ndcg == pytest.approx((1.0 + 0.5 + 0.0 + 0.0) / 4)


def test_no_ranks_give_zero_not_a_division_error():
    assert RankingMetrics(k=10).hit_rate == 0.0 and RankingMetrics(k=10).ndcg == 0.0


def test_a_tiny_replay_scores_every_method_on_the_same_tail_events():
    config = ClickStreamConfig(seed=2, n_users=40, n_items=30, days=2)
    report = evaluate(config, snapshot_every=200, flush_every=20)
    assert report.tail_events > 0 and report.events > report.tail_events
    for target in TARGETS:
        counts = {report.metrics[target][method].n for method in METHODS}
        assert len(counts) == 1
    assert report.metrics["view"]["recommender"].n > 0
    for target in TARGETS:
        for method in METHODS:
            metrics = report.metrics[target][method]
            assert 0.0 <= metrics.ndcg <= metrics.hit_rate <= 1.0
    assert report.items_in_model <= 30
    assert "recommender" in report.table()

"""Tests of the simulated card-transaction stream."""

from __future__ import annotations

import doctest
import re
import statistics
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings

from app.simulation import transactions
from app.simulation.transactions import (
    FRAUD_KINDS,
    SimulatedEvent,
    TransactionStreamConfig,
    generate_transaction_stream,
)
from tests.simulation.stream_checks import assert_ordered_in_span_and_labelled, odd_configs, transactions_of

SMALL = TransactionStreamConfig(seed=3, n_cards=150, n_merchants=120, days=20)
MEDIUM = TransactionStreamConfig(seed=7, n_cards=1_500, n_merchants=300, days=45)
DAY = 86_400.0


def by_card(txs: list[SimulatedEvent]) -> dict[str, list[SimulatedEvent]]:
    cards: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for tx in txs:
        cards[tx.key].append(tx)
    return cards


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Rank-based ROC AUC (Mann-Whitney U), ties sharing their average rank."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@pytest.fixture(scope="module")
def small() -> list[SimulatedEvent]:
    return list(generate_transaction_stream(SMALL))


@pytest.fixture(scope="module")
def medium_txs() -> list[SimulatedEvent]:
    return transactions_of(list(generate_transaction_stream(MEDIUM)))


def test_roc_auc_helper() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([1.0, 1.0], [False, True]) == 0.5


def test_same_seed_same_stream(small: list[SimulatedEvent]) -> None:
    assert list(generate_transaction_stream(SMALL)) == small


def test_different_seeds_differ(small: list[SimulatedEvent]) -> None:
    other = TransactionStreamConfig(seed=4, n_cards=150, n_merchants=120, days=20)
    assert list(generate_transaction_stream(other)) != small


def test_time_order_and_span(small: list[SimulatedEvent]) -> None:
    times = [event.event_time for event in small]
    assert times == sorted(times)
    assert all(event.event_time == event.value["ts"] for event in small)
    txs = transactions_of(small)
    assert all(SMALL.start <= tx.event_time < SMALL.end for tx in txs)
    assert small[-1].topic == "fraud-labels" and small[-1].event_time >= SMALL.end


def test_transaction_payload_contract(small: list[SimulatedEvent]) -> None:
    txs = transactions_of(small)
    assert len(txs) > 1_000
    assert len({tx.value["tx_id"] for tx in txs}) == len(txs)
    for tx in txs:
        value = tx.value
        assert set(value) == {
            "tx_id", "card_id", "merchant_id", "amount", "ts", "currency", "country", "channel",
        }  # fmt: skip
        assert re.fullmatch(r"tx-\d{9}", value["tx_id"])
        assert re.fullmatch(r"card-\d{4}", value["card_id"]) and tx.key == value["card_id"]
        assert re.fullmatch(r"m-\d{4}", value["merchant_id"])
        assert type(value["amount"]) is float and value["amount"] >= 0
        assert round(value["amount"], 2) == value["amount"]
        assert type(value["ts"]) is float
        assert value["currency"] == "EUR"
        assert re.fullmatch(r"[A-Z]{2}", value["country"])
        assert value["channel"] in {"pos", "online"}
        assert set(tx.truth) == {"is_fraud", "fraud_kind"}
        assert type(tx.truth["is_fraud"]) is bool
        assert (tx.truth["fraud_kind"] is not None) is tx.truth["is_fraud"]
        assert tx.truth["fraud_kind"] in (None, *FRAUD_KINDS)


@pytest.mark.parametrize("jitter", [0.0, 2 * DAY])
def test_every_transaction_has_one_matching_label(jitter: float) -> None:
    config = TransactionStreamConfig(
        seed=5, n_cards=120, days=15, label_delay_seconds=3 * DAY, label_jitter_seconds=jitter
    )
    events = list(generate_transaction_stream(config))
    txs = {event.value["tx_id"]: event for event in transactions_of(events)}
    labels = [event for event in events if event.topic == "fraud-labels"]
    assert Counter(label.key for label in labels) == Counter(dict.fromkeys(txs, 1))
    for label in labels:
        tx = txs[label.key]
        assert set(label.value) == {"tx_id", "is_fraud", "ts"} and label.truth is None
        assert label.value["tx_id"] == label.key and label.event_time == label.value["ts"]
        assert label.value["is_fraud"] is tx.truth["is_fraud"]
        delay = label.event_time - tx.event_time
        assert 3 * DAY - 1e-3 <= delay <= 3 * DAY + jitter + 1e-3
    if jitter:
        assert len({round(label.event_time - txs[label.key].event_time) for label in labels}) > 1


def test_fraud_share_and_kinds(medium_txs: list[SimulatedEvent]) -> None:
    kinds = Counter(tx.truth["fraud_kind"] for tx in medium_txs if tx.truth["is_fraud"])
    share = sum(kinds.values()) / len(medium_txs)
    assert 0.5 * MEDIUM.fraud_share <= share <= 2 * MEDIUM.fraud_share
    assert set(kinds) == set(FRAUD_KINDS)
    assert all(0.1 <= count / sum(kinds.values()) <= 0.5 for count in kinds.values())


@pytest.mark.parametrize("fraud_share", [0.0, 0.04])
def test_fraud_share_follows_config(fraud_share: float) -> None:
    config = TransactionStreamConfig(seed=1, n_cards=400, days=30, fraud_share=fraud_share)
    txs = transactions_of(list(generate_transaction_stream(config)))
    share = sum(tx.truth["is_fraud"] for tx in txs) / len(txs)
    assert share == pytest.approx(fraud_share, abs=0.25 * fraud_share)


def test_daily_rhythm(medium_txs: list[SimulatedEvent]) -> None:
    hours = Counter(int(tx.event_time % DAY // 3_600) for tx in medium_txs)
    assert sum(hours[h] for h in range(12, 20)) > 5 * sum(hours[h] for h in range(2, 5))


def test_favourite_merchants_dominate(medium_txs: list[SimulatedEvent]) -> None:
    shares = []
    for txs in by_card(medium_txs).values():
        legit = Counter(tx.value["merchant_id"] for tx in txs if not tx.truth["is_fraud"])
        if legit.total() >= 30:
            shares.append(sum(count for _, count in legit.most_common(10)) / legit.total())
    assert len(shares) > 50
    assert statistics.median(shares) >= 0.7


def test_stolen_card_bursts_are_large_and_final(medium_txs: list[SimulatedEvent]) -> None:
    ratios = []
    for txs in by_card(medium_txs).values():
        stolen = [tx for tx in txs if tx.truth["fraud_kind"] == "stolen_card"]
        legit = [tx.value["amount"] for tx in txs if not tx.truth["is_fraud"]]
        if stolen and legit:
            median = statistics.median(legit)
            ratios.extend(tx.value["amount"] / median for tx in stolen)
        if stolen:
            theft = stolen[0].event_time
            after = [tx for tx in txs if tx.event_time >= theft]
            assert all(tx.truth["fraud_kind"] == "stolen_card" for tx in after)
            assert stolen[-1].event_time - theft < 2 * DAY
    assert statistics.median(ratios) >= 3


def test_card_testing_is_a_fast_burst_of_tiny_amounts(medium_txs: list[SimulatedEvent]) -> None:
    testing = [tx for tx in medium_txs if tx.truth["fraud_kind"] == "card_testing"]
    tiny = [tx for tx in testing if tx.value["amount"] <= 3.0]
    assert len(tiny) >= 0.8 * len(testing)
    assert all(tx.value["channel"] == "online" for tx in testing)


def test_amount_ratio_baseline_has_signal_but_is_not_trivial(
    medium_txs: list[SimulatedEvent],
) -> None:
    medians = {
        card: statistics.median(tx.value["amount"] for tx in txs) for card, txs in by_card(medium_txs).items()
    }
    scores = [tx.value["amount"] / medians[tx.key] for tx in medium_txs]
    labels = [tx.truth["is_fraud"] for tx in medium_txs]
    assert 0.6 <= roc_auc(scores, labels) <= 0.97


def test_legitimate_noise_resembles_fraud(medium_txs: list[SimulatedEvent]) -> None:
    legit = [tx for tx in medium_txs if not tx.truth["is_fraud"]]
    homes = {
        card: Counter(tx.value["country"] for tx in txs).most_common(1)[0][0]
        for card, txs in by_card(legit).items()
    }
    abroad = sum(tx.value["country"] != homes[tx.key] for tx in legit) / len(legit)
    online = sum(tx.value["channel"] == "online" for tx in legit) / len(legit)
    assert 0.02 <= abroad <= 0.2
    assert 0.1 <= online <= 0.5


@given(fields=odd_configs)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_odd_configs(fields: dict) -> None:
    config = TransactionStreamConfig(**fields, fraud_share=0.1)
    events = list(generate_transaction_stream(config))
    assert_ordered_in_span_and_labelled(events, config)


@pytest.mark.parametrize(
    "changes",
    [
        {"seed": -1},
        {"n_cards": 0},
        {"n_merchants": 0},
        {"days": 0.0},
        {"fraud_share": 0.6},
        {"label_delay_seconds": -1.0},
        {"label_jitter_seconds": -1.0},
    ],
)
def test_invalid_config_is_rejected(changes: dict) -> None:
    with pytest.raises(ValueError):
        TransactionStreamConfig(**changes)


def test_docstring_examples() -> None:
    assert doctest.testmod(transactions, raise_on_error=True).attempted > 0

"""Tests of the handbook scenario of the card-transaction stream, against brute-force recomputation."""

from __future__ import annotations

import doctest
import math
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from app.simulation import handbook
from app.simulation.handbook import (
    COMPROMISED_DAYS,
    HANDBOOK_FRAUD_KINDS,
    HIGH_AMOUNT,
    LEAKED_DAYS,
    RADIUS,
    HandbookStreamConfig,
    generate_handbook_stream,
)
from app.simulation.streams import build_stream
from app.simulation.transactions import (
    SimulatedEvent,
    TransactionStreamConfig,
    fraud_kinds,
    generate_transaction_stream,
    stream_config,
)
from tests.simulation.stream_checks import assert_ordered_in_span_and_labelled, odd_configs, transactions_of

SMALL = HandbookStreamConfig(seed=3, n_cards=150, n_merchants=300, days=20)
MEDIUM = HandbookStreamConfig(seed=7, n_cards=1_000, n_merchants=2_000, days=60)
DAY = 86_400.0


def index(identifier: str) -> int:
    return int(identifier.rsplit("-", 1)[1])


def day_of(tx: SimulatedEvent, config: HandbookStreamConfig) -> int:
    return math.floor((tx.event_time - config.start) / DAY)


def world_of(config: HandbookStreamConfig) -> handbook._World:
    """The stream's world, rebuilt from the seed as the generator builds it."""
    world_seed = np.random.SeedSequence(config.seed).spawn(5)[0]
    return handbook._build_world(config, np.random.default_rng(world_seed))


@pytest.fixture(scope="module")
def small() -> list[SimulatedEvent]:
    return list(generate_transaction_stream(SMALL))


@pytest.fixture(scope="module")
def medium_txs() -> list[SimulatedEvent]:
    return transactions_of(list(generate_handbook_stream(MEDIUM)))


def test_the_entry_point_dispatches_on_the_config() -> None:
    assert list(generate_transaction_stream(SMALL))[:50] == list(generate_handbook_stream(SMALL))[:50]
    assert stream_config("handbook", seed=3, n_cards=150, n_merchants=300, days=20) == SMALL
    assert isinstance(stream_config(seed=3), TransactionStreamConfig)
    assert fraud_kinds(SMALL) == HANDBOOK_FRAUD_KINDS
    with pytest.raises(ValueError, match="unknown scenario"):
        stream_config("other")


def test_build_stream_takes_the_scenario() -> None:
    events, topics, total = build_stream("transactions", size=30, days=3.0, scenario="handbook")
    events = list(events)
    assert topics == ("transactions", "fraud-labels") and total == len(events)
    assert {event.value["country"] for event in transactions_of(events)} == {"BE"}
    with pytest.raises(ValueError):
        build_stream("clicks", size=3, days=1.0, scenario="handbook")


def test_same_seed_same_stream(small: list[SimulatedEvent]) -> None:
    assert list(generate_handbook_stream(SMALL)) == small


def test_different_seeds_differ(small: list[SimulatedEvent]) -> None:
    other = HandbookStreamConfig(seed=4, n_cards=150, n_merchants=300, days=20)
    assert list(generate_handbook_stream(other)) != small


def test_time_order_and_span(small: list[SimulatedEvent]) -> None:
    times = [event.event_time for event in small]
    assert times == sorted(times)
    assert all(event.event_time == event.value["ts"] for event in small)
    txs = transactions_of(small)
    assert all(SMALL.start <= tx.event_time < SMALL.end for tx in txs)
    assert small[-1].topic == "fraud-labels" and small[-1].event_time >= SMALL.end


def test_transaction_payload_contract(small: list[SimulatedEvent]) -> None:
    txs = transactions_of(small)
    assert len(txs) > 4_000
    assert [tx.value["tx_id"] for tx in txs] == [f"tx-{i:09d}" for i in range(len(txs))]
    for tx in txs:
        value = tx.value
        assert set(value) == {
            "tx_id", "card_id", "merchant_id", "amount", "ts", "currency", "country", "channel",
        }  # fmt: skip
        assert re.fullmatch(r"card-\d{4}", value["card_id"]) and tx.key == value["card_id"]
        assert re.fullmatch(r"m-\d{4}", value["merchant_id"])
        assert index(value["card_id"]) < SMALL.n_cards and index(value["merchant_id"]) < SMALL.n_merchants
        assert type(value["amount"]) is float and value["amount"] >= 0
        assert round(value["amount"], 2) == value["amount"]
        assert type(value["ts"]) is float and round(value["ts"], 3) == value["ts"]
        assert (value["currency"], value["country"], value["channel"]) == ("EUR", "BE", "pos")
        assert set(tx.truth) == {"is_fraud", "fraud_kind"}
        assert (tx.truth["fraud_kind"] is not None) is tx.truth["is_fraud"]
        assert tx.truth["fraud_kind"] in (None, *HANDBOOK_FRAUD_KINDS)


@pytest.mark.parametrize("jitter", [0.0, 2 * DAY])
def test_every_transaction_has_one_label_exactly_the_delay_later(jitter: float) -> None:
    config = HandbookStreamConfig(
        seed=5,
        n_cards=120,
        n_merchants=240,
        days=15,
        label_delay_seconds=3 * DAY,
        label_jitter_seconds=jitter,
    )
    events = list(generate_handbook_stream(config))
    txs = {event.value["tx_id"]: event for event in transactions_of(events)}
    labels = [event for event in events if event.topic == "fraud-labels"]
    assert Counter(label.key for label in labels) == Counter(dict.fromkeys(txs, 1))
    for label in labels:
        tx = txs[label.key]
        assert set(label.value) == {"tx_id", "is_fraud", "ts"} and label.truth is None
        assert label.value["tx_id"] == label.key and label.event_time == label.value["ts"]
        assert label.value["is_fraud"] is tx.truth["is_fraud"]
        if jitter:
            assert 3 * DAY - 1e-3 <= label.event_time - tx.event_time <= 3 * DAY + jitter + 1e-3
        else:
            assert label.event_time == round(tx.event_time + 3 * DAY, 3)
    if jitter:
        assert len({round(label.event_time - txs[label.key].event_time) for label in labels}) > 1


def test_cards_pay_only_at_terminals_within_the_radius(medium_txs: list[SimulatedEvent]) -> None:
    world = world_of(MEDIUM)
    reachable = defaultdict(set)
    for card in range(MEDIUM.n_cards):  # brute force: every card against every terminal
        distances = np.hypot(*(world.terminal_xy - world.card_xy[card]).T)
        reachable[card] = set(np.flatnonzero(distances < RADIUS).tolist())
    used = defaultdict(set)
    for tx in medium_txs:
        used[index(tx.value["card_id"])].add(index(tx.value["merchant_id"]))
    assert all(used[card] <= reachable[card] for card in used)
    assert sum(map(len, used.values())) > 0.5 * sum(len(reachable[card]) for card in used)


def test_available_terminals_match_brute_force() -> None:
    rng = np.random.default_rng(11)
    cards, terminals = rng.uniform(0, 30, (40, 2)), rng.uniform(0, 30, (70, 2))
    start, found = handbook.available_terminals(cards, terminals, 5.0)
    for card, xy in enumerate(cards):
        expected = [t for t, other in enumerate(terminals) if math.dist(xy, other) < 5.0]
        assert found[start[card] : start[card + 1]].tolist() == expected


def test_amounts_above_220_are_all_fraud(medium_txs: list[SimulatedEvent]) -> None:
    high = [tx for tx in medium_txs if tx.value["amount"] > HIGH_AMOUNT]
    assert len(high) > 50
    assert all(tx.truth["is_fraud"] for tx in high)
    kinds = {tx.truth["fraud_kind"] for tx in high}
    assert kinds <= {"high_amount", "compromised_terminal", "leaked_credentials"} and "high_amount" in kinds
    assert all(
        tx.value["amount"] > HIGH_AMOUNT for tx in medium_txs if tx.truth["fraud_kind"] == "high_amount"
    )


def replayed_draws(config: HandbookStreamConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The terminals and cards the generator draws each day, replayed from the seed."""
    seeds = np.random.SeedSequence(config.seed).spawn(5)
    terminals = handbook.daily_draws(
        np.random.default_rng(seeds[2]),
        config.n_merchants,
        config.compromised_terminals_per_day,
        config.n_days,
    )
    cards = handbook.daily_draws(
        np.random.default_rng(seeds[3]), config.n_cards, config.leaked_cards_per_day, config.n_days
    )
    return terminals, cards


def test_compromised_terminals_are_all_fraud_for_28_days(medium_txs: list[SimulatedEvent]) -> None:
    terminal_draws, _ = replayed_draws(MEDIUM)
    compromised = {
        (terminal, day + offset)
        for day, terminals in enumerate(terminal_draws)
        for terminal in terminals.tolist()
        for offset in range(COMPROMISED_DAYS)
    }
    assert len({terminal for terminal, _ in compromised}) > 0.5 * MEDIUM.compromised_terminals_per_day * 60
    in_window = 0
    for tx in medium_txs:
        kind = tx.truth["fraud_kind"]
        if (index(tx.value["merchant_id"]), day_of(tx, MEDIUM)) in compromised:
            in_window += 1
            assert kind in ("compromised_terminal", "leaked_credentials")
        elif kind != "leaked_credentials":  # the earlier scenarios, recomputed exactly
            assert kind == ("high_amount" if tx.value["amount"] > HIGH_AMOUNT else None)
    assert in_window > 200


def test_leaked_cards_have_a_third_of_their_window_as_fraud(medium_txs: list[SimulatedEvent]) -> None:
    _, card_draws = replayed_draws(MEDIUM)
    windows: dict[int, list[int]] = defaultdict(list)
    for day, cards in enumerate(card_draws):
        for card in cards.tolist():
            windows[card].append(day)
    by_card: dict[int, list[SimulatedEvent]] = defaultdict(list)
    for tx in medium_txs:
        by_card[index(tx.key)].append(tx)
    ratios = []
    for card, txs in by_card.items():
        leaked = [tx for tx in txs if tx.truth["fraud_kind"] == "leaked_credentials"]
        opened = windows.get(card, [])
        assert all(any(d <= day_of(tx, MEDIUM) < d + LEAKED_DAYS for d in opened) for tx in leaked)
        if len(opened) == 1:
            in_window = [tx for tx in txs if opened[0] <= day_of(tx, MEDIUM) < opened[0] + LEAKED_DAYS]
            assert len(leaked) == len(in_window) // 3
        legit = [tx.value["amount"] for tx in txs if not tx.truth["is_fraud"]]
        if leaked and len(legit) >= 10:
            ratios.extend(tx.value["amount"] / (sum(legit) / len(legit)) for tx in leaked)
    assert len(windows) > 0.5 * MEDIUM.leaked_cards_per_day * 60
    assert 3.5 < float(np.median(ratios)) < 6.5


def test_fraud_share_is_near_the_handbooks(medium_txs: list[SimulatedEvent]) -> None:
    kinds = Counter(tx.truth["fraud_kind"] for tx in medium_txs if tx.truth["is_fraud"])
    share = kinds.total() / len(medium_txs)
    assert 0.004 <= share <= 0.012
    assert set(kinds) == set(HANDBOOK_FRAUD_KINDS)
    assert kinds["compromised_terminal"] > kinds["leaked_credentials"] > kinds["high_amount"]


def test_profiles_and_daily_rhythm(medium_txs: list[SimulatedEvent]) -> None:
    per_card_day = len(medium_txs) / (MEDIUM.n_cards * MEDIUM.days)
    assert per_card_day == pytest.approx(2.0 * 0.969, rel=0.05)
    seconds = np.array([tx.event_time % DAY for tx in medium_txs])
    assert abs(seconds.mean() - DAY / 2) < 500 and 18_000 < seconds.std() < 20_000
    legit = np.array([tx.value["amount"] for tx in medium_txs if not tx.truth["is_fraud"]])
    assert 45 < legit.mean() < 60 and legit.min() >= 0


def test_draws_scale_with_the_population() -> None:
    assert (MEDIUM.compromised_terminals_per_day, MEDIUM.leaked_cards_per_day) == (0.4, 0.6)
    draws = handbook.daily_draws(np.random.default_rng(1), 5, 7.5, 3)
    assert [len(day) for day in draws] == [5, 5, 5]  # never more than the population


@given(fields=odd_configs)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_odd_configs(fields: dict) -> None:
    config = HandbookStreamConfig(**fields)
    events = list(generate_handbook_stream(config))
    txs = assert_ordered_in_span_and_labelled(events, config)
    assert all(tx.value["amount"] <= HIGH_AMOUNT or tx.truth["is_fraud"] for tx in txs)


@pytest.mark.parametrize(
    "changes",
    [
        {"seed": -1},
        {"n_cards": 0},
        {"n_merchants": 0},
        {"days": 0.0},
        {"label_delay_seconds": -1.0},
        {"label_jitter_seconds": -1.0},
    ],
)
def test_invalid_config_is_rejected(changes: dict) -> None:
    with pytest.raises(ValueError):
        HandbookStreamConfig(**changes)


def test_docstring_examples() -> None:
    assert doctest.testmod(handbook, raise_on_error=True).attempted > 0

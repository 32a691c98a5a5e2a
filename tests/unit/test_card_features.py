"""Card features against a brute-force recomputation of the exact sliding windows."""

from __future__ import annotations

import copy
import math
import uuid
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables import card_features
from tables.card_features import (
    FEATURE_NAMES,
    MAX_EVENTS,
    RETENTION,
    DuplicateTransaction,
    add_transaction,
    card_features_at,
    card_is_idle,
    card_log,
)

MINUTE = 60
HOUR = 3_600
DAY = 86_400

COUNT_HORIZONS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
AMOUNT_HORIZONS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
MERCHANT_HORIZONS = {"24h": DAY, "7d": 7 * DAY}
EXPECTED_NAMES = (
    {f"card_count_{name}" for name in COUNT_HORIZONS}
    | {f"card_amount_sum_{name}" for name in AMOUNT_HORIZONS}
    | {f"card_amount_max_{name}" for name in AMOUNT_HORIZONS}
    | {f"card_distinct_merchants_{name}" for name in MERCHANT_HORIZONS}
    | {
        "card_amount_mean_30d",
        "card_seconds_since_prev",
        "card_no_prior_30d",
        "card_amount_log_ratio",
        "card_merchant_prev_30d",
        "card_country_share_30d",
    }
)
EXACT_NAMES = (
    {f"card_count_{name}" for name in COUNT_HORIZONS}
    | {f"card_amount_max_{name}" for name in AMOUNT_HORIZONS}
    | {f"card_distinct_merchants_{name}" for name in MERCHANT_HORIZONS}
    | {"card_seconds_since_prev", "card_no_prior_30d", "card_merchant_prev_30d"}
)


@dataclass(frozen=True)
class Tx:
    tx_id: str
    card: str
    ts: float
    amount: float
    merchant: str
    country: str | None


def brute_force_features(done: list[Tx], current: Tx) -> dict[str, float]:
    """Features of ``current`` from the transactions of its card processed up to it (itself last)."""
    seen = [tx for tx in done if tx.card == current.card]
    ts = current.ts

    def within(horizon: float, txs: list[Tx]) -> list[Tx]:
        return [tx for tx in txs if ts - horizon < tx.ts <= ts]

    features: dict[str, float] = {}
    for name, horizon in COUNT_HORIZONS.items():
        features[f"card_count_{name}"] = len(within(horizon, seen))
    for name, horizon in AMOUNT_HORIZONS.items():
        amounts = [tx.amount for tx in within(horizon, seen)]
        features[f"card_amount_sum_{name}"] = sum(amounts)
        features[f"card_amount_max_{name}"] = max(amounts)
    for name, horizon in MERCHANT_HORIZONS.items():
        features[f"card_distinct_merchants_{name}"] = len({tx.merchant for tx in within(horizon, seen)})
    features["card_amount_mean_30d"] = features["card_amount_sum_30d"] / features["card_count_30d"]
    previous = within(30 * DAY, [tx for tx in seen if tx is not current])
    if previous:
        usual = sum(tx.amount for tx in previous) / len(previous)
        features["card_seconds_since_prev"] = ts - max(tx.ts for tx in previous)
        features["card_no_prior_30d"] = 0.0
    else:
        usual = current.amount
        features["card_seconds_since_prev"] = 30 * DAY
        features["card_no_prior_30d"] = 1.0
    features["card_amount_log_ratio"] = math.log((current.amount + 1.0) / (usual + 1.0))
    features["card_merchant_prev_30d"] = sum(1 for tx in previous if tx.merchant == current.merchant)
    same_country = sum(1 for tx in previous if tx.country == current.country)
    features["card_country_share_30d"] = (same_country + 1.0) / (len(previous) + 2.0)
    return features


def assert_features_match(got: dict[str, float], expected: dict[str, float], context: object) -> None:
    assert set(got) == EXPECTED_NAMES, context
    for name in EXPECTED_NAMES:
        if name in EXACT_NAMES:
            assert got[name] == expected[name], (name, context)
        else:
            assert math.isclose(got[name], expected[name], rel_tol=1e-9, abs_tol=1e-9), (
                name,
                got[name],
                expected[name],
                context,
            )


def process(order: list[Tx], *, round_trip: bool = False) -> list[dict[str, float]]:
    """Feed transactions to per-card logs in ``order``; optionally reload each log from JSON every time."""
    states: dict[str, dict | None] = {}
    logs: dict = {}
    results = []
    for tx in order:
        if round_trip:
            state = states.get(tx.card)
            log = card_log(orjson.loads(orjson.dumps(state)) if state is not None else None)
        else:
            log = logs.setdefault(tx.card, card_log(None))
        results.append(
            add_transaction(
                log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant, country=tx.country
            )
        )
        states[tx.card] = log.to_state()
    return results


# Offsets that land exactly on (and next to) every window boundary, so ties and edges are common.
BOUNDARY_OFFSETS = [0, 1, 299, 300, 301, 3_599, 3_600, 3_601, DAY - 1, DAY, DAY + 1]
BOUNDARY_OFFSETS += [7 * DAY - 1, 7 * DAY, 7 * DAY + 1, 30 * DAY - 1, 30 * DAY, 30 * DAY + 1]

amounts = st.one_of(
    st.just(0.0),
    st.sampled_from([0.01, 1.0, 12.5, 99.99, 5_000.0]),
    st.floats(0.0, 10_000.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def transactions(draw, max_size: int = 40) -> list[Tx]:
    anchors = draw(st.lists(st.integers(0, 10 * DAY), min_size=1, max_size=4))
    size = draw(st.integers(1, max_size))
    txs = []
    for i in range(size):
        if draw(st.booleans()):
            ts = draw(st.sampled_from(anchors)) + draw(st.sampled_from(BOUNDARY_OFFSETS))
        else:
            ts = draw(st.integers(0, 40 * DAY))
        txs.append(
            Tx(
                tx_id=f"t{i}",
                card=draw(st.sampled_from(["c1", "c2", "c3"])),
                ts=float(min(ts, 40 * DAY)),
                amount=draw(amounts),
                merchant=draw(st.sampled_from(["m1", "m2", "m3"])),
                country=draw(st.sampled_from(["FR", "DE", None])),
            )
        )
    return txs


@st.composite
def late_orders(draw) -> list[Tx]:
    """Transactions in a processing order where none is a day or more older than one processed before."""
    txs = draw(transactions())
    delays = draw(st.lists(st.integers(0, DAY - 1), min_size=len(txs), max_size=len(txs)))
    order = sorted(range(len(txs)), key=lambda i: (txs[i].ts + delays[i], i))
    return [txs[i] for i in order]


def check_against_brute_force(order: list[Tx]) -> None:
    results = process(order)
    for i, (tx, got) in enumerate(zip(order, results, strict=True)):
        assert_features_match(got, brute_force_features(order[: i + 1], tx), tx)


@settings(max_examples=200, deadline=None)
@given(transactions())
def test_features_match_brute_force_when_processed_in_event_time_order(txs):
    check_against_brute_force(sorted(txs, key=lambda tx: tx.ts))


@settings(max_examples=200, deadline=None)
@given(transactions())
def test_features_match_brute_force_when_ties_are_processed_in_any_order(txs):
    check_against_brute_force(sorted(txs, key=lambda tx: (tx.ts, -int(tx.tx_id[1:]))))


@settings(max_examples=200, deadline=None)
@given(late_orders())
def test_features_match_brute_force_when_processed_out_of_order_within_a_day(order):
    check_against_brute_force(order)


@settings(max_examples=100, deadline=None)
@given(late_orders())
def test_features_are_identical_when_the_log_is_reloaded_from_orjson_state_before_every_transaction(order):
    assert process(order, round_trip=True) == process(order)


# --- examples ----------------------------------------------------------------------------


def add(log, tx_id, ts, amount=10.0, merchant="m1", country="FR"):
    return add_transaction(
        log, tx_id=tx_id, ts=float(ts), amount=amount, merchant_id=merchant, country=country
    )


def test_first_transaction_of_a_card_has_no_prior_and_neutral_ratios():
    features = add(card_log(None), "t1", 1_000, amount=42.0)
    assert features["card_no_prior_30d"] == 1.0
    assert features["card_seconds_since_prev"] == 30 * DAY
    assert features["card_amount_log_ratio"] == 0.0
    assert features["card_country_share_30d"] == 0.5
    assert features["card_merchant_prev_30d"] == 0
    assert features["card_count_5m"] == features["card_count_30d"] == 1
    assert features["card_amount_mean_30d"] == 42.0


def test_transaction_processed_earlier_with_later_ts_is_excluded():
    log = card_log(None)
    add(log, "later", 2_000, amount=500.0)
    features = add(log, "earlier", 1_000, amount=10.0)
    assert features["card_count_1h"] == 1
    assert features["card_amount_max_1h"] == 10.0
    assert features["card_no_prior_30d"] == 1.0


def test_transaction_with_same_ts_counts_only_ties_processed_before_it():
    log = card_log(None)
    first = add(log, "a", 1_000, amount=1.0)
    second = add(log, "b", 1_000, amount=3.0)
    assert first["card_count_5m"] == 1
    assert second["card_count_5m"] == 2
    assert second["card_seconds_since_prev"] == 0.0
    assert second["card_no_prior_30d"] == 0.0
    assert math.isclose(second["card_amount_log_ratio"], math.log(4.0 / 2.0))


def test_window_excludes_transaction_exactly_horizon_seconds_before():
    log = card_log(None)
    add(log, "a", 0)
    features = add(log, "b", HOUR)
    assert features["card_count_1h"] == 1
    assert features["card_count_24h"] == 2


def test_previous_transaction_exactly_30_days_before_counts_as_no_prior():
    log = card_log(None)
    add(log, "a", 0)
    features = add(log, "b", 30 * DAY)
    assert features["card_no_prior_30d"] == 1.0
    assert features["card_seconds_since_prev"] == 30 * DAY
    log = card_log(None)
    add(log, "a", 1)
    features = add(log, "b", 30 * DAY)
    assert features["card_no_prior_30d"] == 0.0
    assert features["card_seconds_since_prev"] == 30 * DAY - 1


def test_merchant_and_country_history_use_previous_transactions_only():
    log = card_log(None)
    add(log, "a", 0, merchant="m1", country="FR")
    add(log, "b", 60, merchant="m2", country="FR")
    add(log, "c", 120, merchant="m1", country="DE")
    features = add(log, "d", 180, merchant="m1", country="FR")
    assert features["card_merchant_prev_30d"] == 2
    assert features["card_country_share_30d"] == (2 + 1) / (3 + 2)
    assert features["card_distinct_merchants_24h"] == 2


def test_duplicate_tx_id_raises_and_leaves_the_log_unchanged():
    log = card_log(None)
    add(log, "t1", 100, amount=5.0)
    add(log, "t2", 200, amount=7.0)
    before = copy.deepcopy(log.to_state())
    with pytest.raises(DuplicateTransaction, match="t1"):
        add(log, "t1", 300, amount=9.0, merchant="m9")
    assert log.to_state() == before
    with pytest.raises(DuplicateTransaction):
        add(log, "t2", 50)
    assert log.to_state() == before


def test_card_features_at_newest_index_of_reloaded_state_equals_features_returned_on_insert():
    log = card_log(None)
    for i, ts in enumerate([0, 30, 3_000, 90_000, 90_000]):
        last = add(log, f"t{i}", ts, amount=float(i))
    restored = card_log(orjson.loads(orjson.dumps(log.to_state())))
    assert card_features_at(restored, len(restored.ts) - 1) == last


def test_retention_drops_transactions_31_days_or_more_behind_the_newest():
    log = card_log(None)
    add(log, "old", 0)
    add(log, "kept", 1)
    add(log, "newest", 31 * DAY)
    assert log.column("tx") == ["kept", "newest"]
    add(log, "newer", 31 * DAY + 1)
    assert log.column("tx") == ["newest", "newer"]
    assert log.ts == [31.0 * DAY, 31.0 * DAY + 1]


def test_transaction_a_day_late_still_sees_its_full_30_day_window():
    log = card_log(None)
    add(log, "a", 0, amount=1.0)
    add(log, "b", 31 * DAY - 10, amount=2.0)  # newest; "a" is still kept (31 days - 10 s behind)
    features = add(log, "late", 30 * DAY - 5, amount=4.0)  # window (-5, 30d - 5]: holds "a"
    assert features["card_count_30d"] == 2
    assert features["card_amount_sum_30d"] == 5.0


def test_transaction_older_than_retention_behind_the_newest_gets_its_own_features():
    """A transaction arriving more than 31 days late must not crash the card stage."""
    log = card_log(None)
    add(log, "recent", 40 * DAY, amount=1.0)
    features = add(log, "very_late", 0, amount=5.0)
    assert features["card_count_5m"] == 1
    assert features["card_amount_max_1h"] == 5.0
    assert features["card_no_prior_30d"] == 1.0


@settings(max_examples=200, deadline=None)
@given(
    transactions(),
    st.sampled_from([29 * DAY, 30 * DAY - 1, 30 * DAY, 30 * DAY + 1, 31 * DAY - 1, 31 * DAY, 31 * DAY + 1]),
    st.lists(st.sampled_from([0, 1, HOUR, DAY]), min_size=1, max_size=4),
)
def test_a_card_idle_at_the_watermark_gives_later_transactions_the_features_of_an_empty_log(
    txs, lag, later_offsets
):
    log = card_log(None)
    for tx in sorted(txs, key=lambda tx: tx.ts):
        add_transaction(
            log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant, country=tx.country
        )
    watermark = log.newest + lag
    if not card_is_idle(log.to_state(), watermark):
        return
    dropped = card_log(None)
    for i, offset in enumerate(sorted(later_offsets)):
        later = {"tx_id": f"later-{i}", "ts": watermark + offset, "amount": 5.0, "merchant_id": "m1"}
        assert add_transaction(log, **later, country="FR") == add_transaction(dropped, **later, country="FR")


# --- the count limit ---------------------------------------------------------------------


def test_features_come_in_the_documented_order():
    assert tuple(add(card_log(None), "t1", 0)) == FEATURE_NAMES


def brute_force_with_count_limit(done: list[Tx], current: Tx, max_events: int) -> dict[str, float]:
    """Features of ``current`` seeing only the last ``max_events - 1`` earlier transactions of its card."""
    earlier = [tx for tx in done if tx.card == current.card and tx is not current]
    return brute_force_features([*earlier[max(0, len(earlier) - (max_events - 1)) :], current], current)


@settings(max_examples=200, deadline=None)
@given(transactions(max_size=60), st.integers(1, 6))
def test_with_a_count_limit_features_match_brute_force_over_the_kept_transactions(txs, max_events):
    order = sorted(txs, key=lambda tx: tx.ts)  # in event-time order the kept ones are the newest
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(card_features, "MAX_EVENTS", max_events)
        results = process(order)
        reloaded = process(order, round_trip=True)
    assert reloaded == results
    for i, (tx, got) in enumerate(zip(order, results, strict=True)):
        assert_features_match(got, brute_force_with_count_limit(order[: i + 1], tx, max_events), tx)


def test_a_busy_card_keeps_max_events_and_its_state_stays_far_below_kafkas_record_limit():
    log = card_log(None)
    for i in range(3 * MAX_EVENTS):  # one payment a minute for two days
        features = add(log, f"{uuid.UUID(int=i)}", i * 60.0, amount=10.0 + i % 7, merchant=f"m-{i % 50:04d}")
        assert len(log.ts) <= MAX_EVENTS
    assert features["card_count_30d"] == MAX_EVENTS  # the window holds the kept transactions only
    assert features["card_count_5m"] == 5 and features["card_count_1h"] == 60  # short windows exact
    assert log.ts[0] == (2 * MAX_EVENTS) * 60.0  # the oldest went first
    size = len(orjson.dumps(log.to_state()))
    assert size < 150_000, size
    # The newest transaction's features can be recomputed from the stored log (a redelivery).
    restored = card_log(orjson.loads(orjson.dumps(log.to_state())))
    assert card_features_at(restored, len(restored.ts) - 1) == features


def test_a_state_over_the_count_limit_is_cut_down_on_the_next_transaction():
    log = card_log(None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(card_features, "MAX_EVENTS", 10)  # written by a version that kept more
        for i in range(10):
            add(log, f"t{i}", i)
    state = orjson.loads(orjson.dumps(log.to_state()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(card_features, "MAX_EVENTS", 4)
        log = card_log(state)
        features = add(log, "t10", 10)
    assert log.column("tx") == ["t7", "t8", "t9", "t10"]
    assert features["card_count_5m"] == 4


def test_a_late_transaction_into_a_full_log_drops_the_oldest_and_counts_only_itself():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(card_features, "MAX_EVENTS", 3)
        log = card_log(None)
        for i, ts in enumerate([100, 200, 300]):
            add(log, f"t{i}", ts)
        features = add(log, "late", 50, amount=7.0)
    assert log.column("tx") == ["late", "t1", "t2"]
    assert features["card_count_5m"] == 1 and features["card_amount_sum_1h"] == 7.0


@settings(max_examples=200, deadline=None)
@given(
    transactions(),
    st.integers(1, 4),
    st.sampled_from([30 * DAY, 31 * DAY - 1, 31 * DAY, 31 * DAY + 1, 32 * DAY]),
)
def test_the_count_limit_keeps_the_newest_transaction_so_card_is_idle_still_tells(txs, max_events, lag):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(card_features, "MAX_EVENTS", max_events)
        log = card_log(None)
        for tx in sorted(txs, key=lambda tx: tx.ts):
            add_transaction(
                log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant, country=tx.country
            )
        assert len(log.ts) <= max_events
        assert log.newest == max(tx.ts for tx in txs)
        watermark = log.newest + lag
        idle = card_is_idle(log.to_state(), watermark)
        assert idle == (lag > RETENTION)
        if idle:
            later = {"tx_id": "later", "ts": watermark, "amount": 5.0, "merchant_id": "m1", "country": "FR"}
            assert add_transaction(log, **later) == add_transaction(card_log(None), **later)

"""Merchant features against a brute-force recomputation of the bucketed windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.merchant_features import BUCKETS_KEPT, MerchantActivity, fraud_labels

MINUTE = 60
HOUR = 3_600
DAY = 86_400
PRIOR_RATE = 0.01
PRIOR_LABELS = 20.0

# feature suffix -> (bucket width, buckets in the window)
ACTIVITY = {"1h": (MINUTE, 60), "24h": (HOUR, 24), "7d": (DAY, 7), "30d": (DAY, 30)}
EXPECTED_NAMES = {
    "merchant_count_1h",
    "merchant_count_24h",
    "merchant_count_7d",
    "merchant_count_30d",
    "merchant_amount_mean_30d",
    "merchant_amount_ratio",
    "merchant_burst_1h",
    "merchant_labels_7d",
    "merchant_labels_30d",
    "merchant_fraud_rate_7d",
    "merchant_fraud_rate_30d",
}
EXACT_NAMES = {name for name in EXPECTED_NAMES if "count" in name or "labels" in name}


@dataclass(frozen=True)
class Event:
    kind: str  # "tx" or "label"
    ts: float
    amount: float = 0.0
    is_fraud: bool = False


def in_window(event_ts: float, ts: float, width: float, n: int) -> bool:
    end = math.floor(ts / width)
    return end - n < math.floor(event_ts / width) <= end


def brute_force_features(done: list[Event], current: Event) -> dict[str, float]:
    """Features of transaction ``current`` from the events processed up to it (itself last)."""
    txs = [e for e in done if e.kind == "tx"]
    labels = [e for e in done if e.kind == "label"]
    ts, amount = current.ts, current.amount
    features: dict[str, float] = {}
    for name, (width, n) in ACTIVITY.items():
        features[f"merchant_count_{name}"] = sum(1 for e in txs if in_window(e.ts, ts, width, n))
    month = [e.amount for e in txs if in_window(e.ts, ts, DAY, 30)]
    mean = sum(month) / len(month) if month else amount
    features["merchant_amount_mean_30d"] = mean
    features["merchant_amount_ratio"] = (amount + 1.0) / (mean + 1.0)
    features["merchant_burst_1h"] = features["merchant_count_1h"] / (
        features["merchant_count_30d"] / 720 + 1.0
    )
    for name, n in {"7d": 7, "30d": 30}.items():
        seen = [e for e in labels if in_window(e.ts, ts, DAY, n)]
        frauds = sum(1 for e in seen if e.is_fraud)
        features[f"merchant_labels_{name}"] = len(seen)
        features[f"merchant_fraud_rate_{name}"] = (frauds + PRIOR_RATE * PRIOR_LABELS) / (
            len(seen) + PRIOR_LABELS
        )
    return features


def assert_features_match(got: dict[str, float], expected: dict[str, float], context: object) -> None:
    assert set(got) == EXPECTED_NAMES, context
    for name in EXPECTED_NAMES:
        if name in EXACT_NAMES:
            assert got[name] == expected[name], (name, got[name], expected[name], context)
        else:
            assert math.isclose(got[name], expected[name], rel_tol=1e-9, abs_tol=1e-12), (
                name,
                got[name],
                expected[name],
                context,
            )


def apply(merchant: MerchantActivity, event: Event) -> dict[str, float] | None:
    if event.kind == "tx":
        return merchant.add_transaction(event.ts, event.amount)
    merchant.add_label(event.ts, event.is_fraud)
    return None


def check_against_brute_force(order: list[Event]) -> None:
    merchant = MerchantActivity()
    for i, event in enumerate(order):
        got = apply(merchant, event)
        if got is not None:
            assert_features_match(got, brute_force_features(order[: i + 1], event), (i, event))


BOUNDARY_OFFSETS = [0, 1, 59, 60, 61, 3_599, 3_600, 3_601, DAY - 1, DAY, DAY + 1]
BOUNDARY_OFFSETS += [7 * DAY - 1, 7 * DAY, 7 * DAY + 1, 30 * DAY - 1, 30 * DAY, 30 * DAY + 1]


@st.composite
def events(draw, max_size: int = 60) -> list[Event]:
    anchors = draw(st.lists(st.integers(0, 10 * DAY), min_size=1, max_size=4))
    size = draw(st.integers(1, max_size))
    result = []
    for _ in range(size):
        if draw(st.booleans()):
            ts = draw(st.sampled_from(anchors)) + draw(st.sampled_from(BOUNDARY_OFFSETS))
        else:
            ts = draw(st.integers(0, 40 * DAY))
        ts = float(min(ts, 40 * DAY))
        if draw(st.integers(0, 3)) == 0:
            result.append(Event("label", ts, is_fraud=draw(st.booleans())))
        else:
            amount = draw(st.one_of(st.just(0.0), st.floats(0.0, 5_000.0, allow_nan=False)))
            result.append(Event("tx", ts, amount=amount))
    return result


@st.composite
def late_orders(draw, max_lateness: int) -> list[Event]:
    """Events in a processing order where none is ``max_lateness`` seconds or more older than one before."""
    evs = draw(events())
    delays = draw(st.lists(st.integers(0, max_lateness - 1), min_size=len(evs), max_size=len(evs)))
    order = sorted(range(len(evs)), key=lambda i: (evs[i].ts + delays[i], i))
    return [evs[i] for i in order]


@settings(max_examples=200, deadline=None)
@given(events())
def test_features_match_brute_force_when_processed_in_event_time_order(evs):
    check_against_brute_force(sorted(evs, key=lambda e: e.ts))


@settings(max_examples=200, deadline=None)
@given(late_orders(max_lateness=HOUR))
def test_features_match_brute_force_at_a_quiet_merchant_with_events_up_to_an_hour_late(order):
    check_against_brute_force(order)


def test_late_transaction_at_a_busy_merchant_counts_its_whole_last_hour():
    """One minute bucket per minute for an hour, then a transaction 30 seconds late."""
    merchant = MerchantActivity()
    for minute in range(61):
        merchant.add_transaction(minute * 60.0, 1.0)
    features = merchant.add_transaction(59 * 60.0 + 30.0, 1.0)
    # Its 1h window holds minute buckets 0..59: 60 earlier transactions and itself.
    assert features["merchant_count_1h"] == 61


def test_late_transaction_at_a_busy_merchant_counts_its_whole_last_30_days():
    merchant = MerchantActivity()
    for day in range(31):
        merchant.add_transaction(day * DAY, 10.0)
    features = merchant.add_transaction(30 * DAY - 1.0, 10.0)  # one second late, in day bucket 29
    assert features["merchant_count_30d"] == 31  # days 0..29 and itself


# --- labels and fraud rates --------------------------------------------------------------


def test_fraud_rate_without_labels_is_the_prior_rate():
    features = MerchantActivity().add_transaction(1_000.0, 10.0)
    assert features["merchant_labels_7d"] == features["merchant_labels_30d"] == 0
    assert math.isclose(features["merchant_fraud_rate_7d"], PRIOR_RATE)
    assert math.isclose(features["merchant_fraud_rate_30d"], PRIOR_RATE)


def test_fraud_rate_is_smoothed_towards_the_prior_by_20_pseudo_labels():
    merchant = MerchantActivity()
    merchant.add_label(10 * DAY, True)
    merchant.add_label(10 * DAY + 5, False)
    merchant.add_label(10 * DAY + 9, False)
    merchant.add_label(2 * DAY, True)  # in the 30-day window only
    features = merchant.add_transaction(12 * DAY, 1.0)
    assert features["merchant_labels_7d"] == 3
    assert features["merchant_labels_30d"] == 4
    assert math.isclose(features["merchant_fraud_rate_7d"], (1 + 0.2) / (3 + 20))
    assert math.isclose(features["merchant_fraud_rate_30d"], (2 + 0.2) / (4 + 20))


def test_fraud_rate_ignores_labels_not_yet_added_and_labels_stamped_after_the_transaction():
    merchant = MerchantActivity()
    merchant.add_label(5 * DAY, True)  # label ts in a later day bucket than the transaction
    before = merchant.add_transaction(3 * DAY, 1.0)
    assert before["merchant_labels_30d"] == 0
    merchant.add_label(3 * DAY + 100, True)
    after = merchant.add_transaction(3 * DAY + 200, 1.0)
    assert after["merchant_labels_30d"] == 1
    assert math.isclose(after["merchant_fraud_rate_30d"], 1.2 / 21)


def test_labels_are_counted_by_day_buckets_of_their_arrival_time():
    merchant = MerchantActivity()
    merchant.add_label(0.0, True)  # day bucket 0
    merchant.add_label(DAY - 1, True)  # day bucket 0
    merchant.add_label(DAY, False)  # day bucket 1
    assert merchant.add_transaction(7 * DAY - 1, 1.0)["merchant_labels_7d"] == 3  # buckets 0..6
    assert merchant.add_transaction(7 * DAY, 1.0)["merchant_labels_7d"] == 1  # buckets 1..7


# --- activity examples -------------------------------------------------------------------


def test_activity_windows_are_aligned_buckets_not_sliding_windows():
    merchant = MerchantActivity()
    merchant.add_transaction(0.0, 10.0)  # minute 0, hour 0
    features = merchant.add_transaction(3_659.0, 30.0)  # minute 60, 1h window = minutes 1..60
    assert features["merchant_count_1h"] == 1
    assert features["merchant_count_24h"] == 2
    assert features["merchant_amount_mean_30d"] == 20.0
    assert math.isclose(features["merchant_amount_ratio"], 31.0 / 21.0)
    assert math.isclose(features["merchant_burst_1h"], 1 / (2 / 720 + 1))


def test_amount_mean_of_first_transaction_is_its_own_amount():
    features = MerchantActivity().add_transaction(0.0, 0.0)
    assert features["merchant_amount_mean_30d"] == 0.0
    assert features["merchant_amount_ratio"] == 1.0
    assert features["merchant_count_1h"] == features["merchant_count_30d"] == 1


# --- state -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(events())
def test_features_are_identical_when_reloaded_from_orjson_state_before_every_event(evs):
    order = sorted(evs, key=lambda e: e.ts)
    live = MerchantActivity()
    state = None
    for event in order:
        reloaded = MerchantActivity(orjson.loads(orjson.dumps(state)) if state is not None else None)
        assert apply(reloaded, event) == apply(live, event)
        state = reloaded.to_state()
        assert state == live.to_state()


def test_state_stays_bounded_after_a_long_stream():
    merchant = MerchantActivity()
    limits = {key: keep + 1 for key, keep in BUCKETS_KEPT.items()}
    for i in range(20_000):  # one transaction every 7 minutes for about 97 days
        ts = i * 420.0
        merchant.add_transaction(ts, 5.0)
        if i % 50 == 0:
            merchant.add_label(ts, i % 100 == 0)
        if i % 500 == 0:
            state = merchant.to_state()
            for key, limit in limits.items():
                assert len(state[key]) <= limit, (key, len(state[key]))
    state = merchant.to_state()
    for key, limit in limits.items():
        assert len(state[key]) <= limit, key
    assert len(orjson.dumps(state)) < 10_000


def test_state_stays_bounded_with_out_of_order_events():
    merchant = MerchantActivity()
    for i in range(5_000):
        ts = i * 600.0 - (i % 7) * 3_000.0
        merchant.add_transaction(ts, 1.0)
        merchant.add_label(ts - (i % 5) * DAY, i % 3 == 0)
    state = merchant.to_state()
    for key, keep in BUCKETS_KEPT.items():
        assert len(state[key]) <= keep + 1, key


def test_new_merchant_state_has_every_granularity():
    state = MerchantActivity().to_state()
    assert state == {"minutes": [], "hours": [], "days": [], "label_days": []}
    assert MerchantActivity(state).to_state() == state


@settings(max_examples=200, deadline=None)
@given(
    events(),
    st.sampled_from([30 * DAY, 31 * DAY - 1, 31 * DAY, 31 * DAY + 1, 32 * DAY - 1, 32 * DAY, 32 * DAY + 1]),
    st.lists(st.sampled_from([0, 1, HOUR, DAY]), min_size=1, max_size=4),
)
def test_a_merchant_idle_at_the_watermark_gives_later_events_the_features_of_a_new_merchant(
    evs, lag, later_offsets
):
    merchant = MerchantActivity()
    for event in sorted(evs, key=lambda e: e.ts):
        apply(merchant, event)
    watermark = max(e.ts for e in evs) + lag
    if not merchant.is_idle(watermark):
        return
    dropped = MerchantActivity()
    for offset in sorted(later_offsets):
        ts = watermark + offset
        assert merchant.add_transaction(ts, 7.0) == dropped.add_transaction(ts, 7.0)
        merchant.add_label(ts, True)
        dropped.add_label(ts, True)


def test_a_merchant_is_idle_only_once_its_newest_day_is_31_days_behind_the_watermark():
    merchant = MerchantActivity()
    merchant.add_transaction(10 * DAY + 5.0, 1.0)  # newest day bucket ends at 11 days
    assert not merchant.is_idle(42 * DAY - 1)
    assert merchant.is_idle(42 * DAY)
    merchant.add_label(20 * DAY, False)  # a label is newer activity too
    assert not merchant.is_idle(42 * DAY)


def test_fraud_labels_are_the_counts_behind_the_smoothed_rate():
    merchant = MerchantActivity()
    for day, is_fraud in enumerate([True, False, True, True, False, True]):
        merchant.add_label(day * DAY, is_fraud)
    features = merchant.features_at(6 * DAY, 10.0)
    assert features["merchant_labels_7d"] == 6
    assert fraud_labels(features["merchant_fraud_rate_7d"], features["merchant_labels_7d"]) == 4
    assert fraud_labels(features["merchant_fraud_rate_30d"], features["merchant_labels_30d"]) == 4
    assert fraud_labels(0.01, 0) == 0

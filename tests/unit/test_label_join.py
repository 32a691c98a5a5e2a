"""Tests of the pure label join: decisions and labels matched by tx_id whatever their order."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.label_join import MATCHED_RETENTION, on_decision, on_expiry, on_label
from tables.windows import DAY

TTL = 10 * DAY


def decision(event_ts: float = 100.0, score: float = 0.25, **features: float) -> dict:
    return {
        "features": features or {"card_count_1h": 2, "amount": 12.5},
        "score": score,
        "event_ts": event_ts,
        "merchant_id": "m1",
    }


def label(is_fraud: bool = False, ts: float = 500.0) -> dict:
    return {"is_fraud": is_fraud, "ts": ts}


def json_round_trip(entry):
    """What a table stores and gives back."""
    return None if entry is None else orjson.loads(orjson.dumps(entry))


# --- decision first ----------------------------------------------------------------------


def test_decision_without_label_is_held_with_its_learn_flag():
    held = decision()
    entry, out = on_decision(None, "t1", held, learn=False)
    assert out == []
    assert entry == {"decision": {**held, "learn": False}}


def test_label_after_decision_emits_one_labelled_record_and_leaves_a_matched_tombstone():
    held = decision(event_ts=100.0, score=0.7)
    entry, _ = on_decision(None, "t1", held, learn=True)
    entry, out = on_label(json_round_trip(entry), "t1", label(is_fraud=False, ts=900.0))
    assert entry == {"matched": 900.0}
    assert out == [
        {
            "kind": "labelled",
            "tx_id": "t1",
            "merchant_id": "m1",
            "features": held["features"],
            "score": 0.7,
            "event_ts": 100.0,
            "label_ts": 900.0,
            "is_fraud": False,
            "learn": True,
        }
    ]


# --- label first -------------------------------------------------------------------------


def test_label_without_decision_is_held():
    entry, out = on_label(None, "t1", label(is_fraud=True, ts=50.0))
    assert out == []
    assert entry == {"label": {"is_fraud": True, "ts": 50.0}}


def test_early_label_is_joined_when_its_decision_arrives():
    entry, _ = on_label(None, "t1", label(is_fraud=False, ts=50.0))
    held = decision(event_ts=40.0)
    entry, out = on_decision(json_round_trip(entry), "t1", held, learn=True)
    assert entry == {"matched": 50.0}
    assert len(out) == 1
    record = out[0]
    assert record["kind"] == "labelled"
    assert record["tx_id"] == "t1"
    assert record["features"] == held["features"]
    assert record["score"] == held["score"]
    assert record["event_ts"] == 40.0
    assert record["label_ts"] == 50.0
    assert record["is_fraud"] is False
    assert record["learn"] is True


def test_early_label_join_uses_learn_flag_given_with_the_decision():
    entry, _ = on_label(None, "t1", label(is_fraud=False))
    _, out = on_decision(entry, "t1", decision(), learn=False)
    assert out[0]["learn"] is False


# --- learn flag --------------------------------------------------------------------------


@pytest.mark.parametrize("label_first", [False, True])
@pytest.mark.parametrize(
    ("sampled", "is_fraud", "expected"),
    [(False, True, True), (True, True, True), (True, False, True), (False, False, False)],
)
def test_learn_is_true_for_every_fraud_and_for_sampled_legitimate_transactions(
    label_first, sampled, is_fraud, expected
):
    if label_first:
        entry, _ = on_label(None, "t1", label(is_fraud=is_fraud))
        _, out = on_decision(json_round_trip(entry), "t1", decision(), learn=sampled)
    else:
        entry, _ = on_decision(None, "t1", decision(), learn=sampled)
        _, out = on_label(json_round_trip(entry), "t1", label(is_fraud=is_fraud))
    assert out[0]["learn"] is expected
    assert out[0]["is_fraud"] is is_fraud


# --- duplicates --------------------------------------------------------------------------


def test_second_label_before_decision_is_counted_and_the_first_label_wins():
    entry, _ = on_label(None, "t1", label(is_fraud=True, ts=10.0))
    entry, out = on_label(entry, "t1", label(is_fraud=False, ts=20.0))
    assert out == [{"kind": "duplicate_label", "tx_id": "t1", "is_fraud": False}]
    assert entry == {"label": {"is_fraud": True, "ts": 10.0}}
    _, out = on_decision(entry, "t1", decision(), learn=False)
    assert out[0]["is_fraud"] is True
    assert out[0]["label_ts"] == 10.0


def test_label_after_match_is_counted_as_duplicate_and_emits_no_training_record():
    entry, _ = on_decision(None, "t1", decision(), learn=True)
    entry, _ = on_label(entry, "t1", label(is_fraud=False, ts=30.0))
    new_entry, out = on_label(json_round_trip(entry), "t1", label(is_fraud=True, ts=40.0))
    assert out == [{"kind": "duplicate_label", "tx_id": "t1", "is_fraud": True}]
    assert new_entry == {"matched": 30.0}


def test_duplicate_decision_while_waiting_for_label_keeps_the_first_decision():
    first = decision(score=0.1, amount=1.0)
    entry, _ = on_decision(None, "t1", first, learn=True)
    entry, out = on_decision(entry, "t1", decision(score=0.9, amount=2.0), learn=False)
    assert out == [{"kind": "duplicate_decision", "tx_id": "t1"}]
    _, out = on_label(entry, "t1", label())
    assert out[0]["score"] == 0.1
    assert out[0]["features"] == {"amount": 1.0}
    assert out[0]["learn"] is True


def test_decision_after_match_is_counted_as_duplicate():
    entry, _ = on_label(None, "t1", label(ts=30.0))
    entry, _ = on_decision(entry, "t1", decision(), learn=True)
    new_entry, out = on_decision(entry, "t1", decision(), learn=True)
    assert out == [{"kind": "duplicate_decision", "tx_id": "t1"}]
    assert new_entry == {"matched": 30.0}


def test_a_tx_id_reused_on_another_card_conflicts_and_the_label_joins_the_first_card_only():
    first = {**decision(score=0.1), "card_id": "c1"}
    entry, _ = on_decision(None, "t1", first, learn=True)
    entry2, out = on_decision(
        json_round_trip(entry), "t1", {**decision(score=0.9), "card_id": "c2"}, learn=True
    )
    assert out == [{"kind": "conflicting_decision", "tx_id": "t1", "card_id": "c2", "first_card_id": "c1"}]
    assert entry2 == entry
    matched, out = on_label(entry2, "t1", label(ts=30.0))
    assert out[0]["score"] == 0.1
    assert matched == {"matched": 30.0, "card_id": "c1"}
    # After the match too, and a redelivery of the first card's decision stays a duplicate.
    _, out = on_decision(json_round_trip(matched), "t1", {**decision(), "card_id": "c2"}, learn=True)
    assert out[0]["kind"] == "conflicting_decision"
    _, out = on_decision(json_round_trip(matched), "t1", first, learn=True)
    assert out == [{"kind": "duplicate_decision", "tx_id": "t1"}]


# --- features held at decision time ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.one_of(st.integers(-1_000, 1_000), st.floats(-1e6, 1e6, allow_nan=False)),
        max_size=8,
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_emitted_features_are_exactly_the_ones_held_at_decision_time(features, label_first, is_fraud, learn):
    held = {"features": features, "score": 0.5, "event_ts": 10.0, "merchant_id": "m7"}
    snapshot = copy.deepcopy(held)
    if label_first:
        entry, _ = on_label(None, "tx", label(is_fraud=is_fraud))
        _, out = on_decision(json_round_trip(entry), "tx", held, learn)
    else:
        entry, _ = on_decision(None, "tx", held, learn)
        _, out = on_label(json_round_trip(entry), "tx", label(is_fraud=is_fraud))
    assert len(out) == 1
    assert out[0]["features"] == snapshot["features"]
    assert out[0]["merchant_id"] == "m7"
    assert out[0]["learn"] == (learn or is_fraud)


# --- expiry ------------------------------------------------------------------------------


def test_decision_without_label_expires_after_ttl_behind_watermark():
    entry, _ = on_decision(None, "t1", decision(event_ts=1_000.0), learn=True)
    assert on_expiry(entry, "t1", watermark=1_000.0 + TTL, ttl=TTL) == (entry, [])  # exactly at ttl: kept
    assert on_expiry(entry, "t1", watermark=1_000.0 + TTL + 1, ttl=TTL) == (
        None,
        [{"kind": "expired_decision", "tx_id": "t1"}],
    )


def test_label_without_decision_expires_after_ttl_behind_watermark():
    entry, _ = on_label(None, "t1", label(is_fraud=True, ts=1_000.0))
    assert on_expiry(entry, "t1", watermark=1_000.0 + TTL, ttl=TTL) == (entry, [])
    assert on_expiry(entry, "t1", watermark=1_000.0 + TTL + 0.5, ttl=TTL) == (
        None,
        [{"kind": "expired_label", "tx_id": "t1", "is_fraud": True}],
    )


def test_matched_tombstone_expires_silently_after_the_shorter_of_ttl_and_matched_retention():
    entry = {"matched": 1_000.0}
    assert on_expiry(entry, "t1", watermark=1_000.0 + MATCHED_RETENTION, ttl=TTL) == (entry, [])
    assert on_expiry(entry, "t1", watermark=1_000.0 + MATCHED_RETENTION + 1, ttl=TTL) == (None, [])
    short_ttl = DAY
    assert on_expiry(entry, "t1", watermark=1_000.0 + short_ttl, ttl=short_ttl) == (entry, [])
    assert on_expiry(entry, "t1", watermark=1_000.0 + short_ttl + 1, ttl=short_ttl) == (None, [])


def test_nothing_expires_while_the_watermark_is_behind_the_entry():
    for entry in (
        {"decision": {**decision(event_ts=5_000.0), "learn": True}},
        {"label": label(ts=5_000.0)},
        {"matched": 5_000.0},
    ):
        assert on_expiry(entry, "t1", watermark=0.0, ttl=TTL) == (entry, [])


def test_label_arriving_after_its_tombstone_expired_is_held_as_a_new_early_label():
    entry, _ = on_decision(None, "t1", decision(), learn=True)
    entry, _ = on_label(entry, "t1", label(ts=100.0))
    entry, _ = on_expiry(entry, "t1", watermark=100.0 + MATCHED_RETENTION + 1, ttl=TTL)
    assert entry is None
    entry, out = on_label(entry, "t1", label(ts=200.0))
    assert entry == {"label": label(ts=200.0)}
    assert out == []

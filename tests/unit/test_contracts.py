"""Tests of the input contracts: every bad record raises InvalidRecord naming what is wrong."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest

from app.contracts import (
    MAX_AMOUNT,
    MAX_FUTURE_SECONDS,
    MAX_METRIC_LENGTH,
    MAX_SENSOR_VALUE,
    Alert,
    Click,
    FraudLabel,
    InvalidRecord,
    MerchantEvents,
    Recommendations,
    ScoredItem,
    SensorReading,
    Transaction,
    parse_click,
    parse_fraud_label,
    parse_sensor_reading,
    parse_timestamp,
    parse_transaction,
)

JAN_1_2026 = 1_767_225_600.0

VALID_TX = {
    "tx_id": "t1",
    "card_id": "c1",
    "merchant_id": "m1",
    "amount": 12.5,
    "ts": JAN_1_2026,
    "currency": "EUR",
    "country": "FR",
    "channel": "web",
}
VALID_LABEL = {"tx_id": "t1", "is_fraud": True, "ts": JAN_1_2026}
MISSING = object()


def tx_bytes(**changes) -> bytes:
    payload = {**VALID_TX, **changes}
    return orjson.dumps({k: v for k, v in payload.items() if v is not MISSING})


def label_bytes(**changes) -> bytes:
    payload = {**VALID_LABEL, **changes}
    return orjson.dumps({k: v for k, v in payload.items() if v is not MISSING})


# --- valid records -----------------------------------------------------------------------


def test_valid_transaction_parses_every_field():
    assert parse_transaction(b"c1", tx_bytes()) == Transaction(
        tx_id="t1",
        card_id="c1",
        merchant_id="m1",
        amount=12.5,
        ts=JAN_1_2026,
        currency="EUR",
        country="FR",
        channel="web",
    )


def test_transaction_optional_fields_may_be_missing_or_null_and_extra_fields_are_ignored():
    value = tx_bytes(currency=MISSING, country=None, channel=MISSING, note="x", nested={"a": [1]})
    tx = parse_transaction(b"c1", value)
    assert (tx.currency, tx.country, tx.channel) == (None, None, None)
    assert not hasattr(tx, "note")


def test_transaction_integer_and_zero_amounts_become_floats():
    tx = parse_transaction(b"c1", tx_bytes(amount=0))
    assert tx.amount == 0.0
    assert isinstance(tx.amount, float)
    assert parse_transaction(b"c1", tx_bytes(amount=7)).amount == 7.0


def test_valid_label_parses_and_ignores_extra_fields():
    assert parse_fraud_label(b"t1", label_bytes(source="chargeback")) == FraudLabel(
        tx_id="t1", is_fraud=True, ts=JAN_1_2026
    )
    assert parse_fraud_label(b"t1", label_bytes(is_fraud=False)).is_fraud is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", JAN_1_2026),
        ("2026-01-01T00:00:00+00:00", JAN_1_2026),
        ("2026-01-01T02:00:00+02:00", JAN_1_2026),
        ("2025-12-31T19:00:00-05:00", JAN_1_2026),
        ("2026-01-01T00:00:00", JAN_1_2026),  # naive means UTC
        ("2026-01-01 00:00:00", JAN_1_2026),
        ("2026-01-01T00:00:01.5Z", JAN_1_2026 + 1.5),
        ("2026-01-01", JAN_1_2026),
        (JAN_1_2026, JAN_1_2026),
        (1_767_225_600, JAN_1_2026),
        (1_767_225_600.25, JAN_1_2026 + 0.25),
        (0, 0.0),
        (0.0, 0.0),
    ],
)
def test_parse_timestamp_gives_epoch_seconds(value, expected):
    got = parse_timestamp(value)
    assert isinstance(got, float)
    assert got == expected


def test_naive_iso_timestamp_is_utc_whatever_the_local_timezone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_timestamp("2026-01-01T00:00:00") == JAN_1_2026
    finally:
        monkeypatch.undo()
        time.tzset()


def test_iso_and_epoch_timestamps_in_a_record_agree():
    iso = parse_transaction(b"c1", tx_bytes(ts="2026-01-01T00:00:00Z")).ts
    epoch = parse_transaction(b"c1", tx_bytes(ts=1_767_225_600)).ts
    assert iso == epoch == datetime(2026, 1, 1, tzinfo=UTC).timestamp()


# --- invalid records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (b"c1", None, "value"),
        (b"c1", b"{oops", "value"),
        (b"c1", b"", "value"),
        (b"c1", b"\xff\xfe", "value"),
        (b"c1", b"[1, 2]", "value"),
        (b"c1", b'"a string"', "value"),
        (b"c1", b"null", "value"),
        (b"c1", b"42", "value"),
        (b"c1", tx_bytes(card_id=MISSING), "card_id"),
        (b"c1", tx_bytes(card_id=""), "card_id"),
        (b"c1", tx_bytes(card_id=1), "card_id"),
        (b"c1", tx_bytes(card_id=None), "card_id"),
        (b"c1", tx_bytes(tx_id=MISSING), "tx_id"),
        (b"c1", tx_bytes(tx_id=""), "tx_id"),
        (b"c1", tx_bytes(tx_id=17), "tx_id"),
        (b"c1", tx_bytes(tx_id=["t1"]), "tx_id"),
        (b"c1", tx_bytes(merchant_id=MISSING), "merchant_id"),
        (b"c1", tx_bytes(merchant_id=""), "merchant_id"),
        (b"c1", tx_bytes(merchant_id=3.5), "merchant_id"),
        (b"c1", tx_bytes(amount=MISSING), "amount"),
        (b"c1", tx_bytes(amount=None), "amount"),
        (b"c1", tx_bytes(amount="12.5"), "amount"),
        (b"c1", tx_bytes(amount=True), "amount"),
        (b"c1", tx_bytes(amount=False), "amount"),
        (b"c1", tx_bytes(amount=-0.01), "amount"),
        (b"c1", tx_bytes(amount=-1), "amount"),
        (b"c1", tx_bytes(amount=[1]), "amount"),
        (b"c1", tx_bytes(ts=MISSING), "ts"),
        (b"c1", tx_bytes(ts=None), "ts"),
        (b"c1", tx_bytes(ts="yesterday"), "ts"),
        (b"c1", tx_bytes(ts="2026-13-01T00:00:00Z"), "ts"),
        (b"c1", tx_bytes(ts=""), "ts"),
        (b"c1", tx_bytes(ts=True), "ts"),
        (b"c1", tx_bytes(ts=False), "ts"),
        (b"c1", tx_bytes(ts=-1), "ts"),
        (b"c1", tx_bytes(ts=-0.5), "ts"),
        (b"c1", tx_bytes(ts=1_767_225_600_000), "ts"),  # milliseconds
        (b"c1", tx_bytes(ts=[JAN_1_2026]), "ts"),
        (b"c1", tx_bytes(ts={"s": 1}), "ts"),
        (b"c1", tx_bytes(currency=1), "currency"),
        (b"c1", tx_bytes(country=["FR"]), "country"),
        (b"c1", tx_bytes(channel=True), "channel"),
        (b"c2", tx_bytes(), "key"),
        (None, tx_bytes(), "key"),
        (b"", tx_bytes(), "key"),
    ],
)
def test_invalid_transaction_raises_invalid_record_naming_the_field(key, value, field):
    with pytest.raises(InvalidRecord) as raised:
        parse_transaction(key, value)
    assert str(raised.value).startswith(f"{field}:"), str(raised.value)


@pytest.mark.parametrize(
    "raw_amount",
    [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"],
)
def test_nan_or_infinite_amount_is_rejected_as_invalid_record(raw_amount):
    # JSON has no NaN/Infinity; whatever the decoder does with them the record must be rejected.
    value = b'{"tx_id":"t1","card_id":"c1","merchant_id":"m1","ts":0,"amount":' + raw_amount + b"}"
    with pytest.raises(InvalidRecord) as raised:
        parse_transaction(b"c1", value)
    assert str(raised.value).split(":")[0] in {"value", "amount"}


@pytest.mark.parametrize("amount", [9e307, MAX_AMOUNT * 1.000001])
def test_an_amount_whose_window_sums_could_overflow_is_rejected(amount):
    with pytest.raises(InvalidRecord, match=r"^amount: must be finite, >= 0 and <= 1e"):
        parse_transaction(b"c1", tx_bytes(amount=amount))
    assert parse_transaction(b"c1", tx_bytes(amount=MAX_AMOUNT)).amount == MAX_AMOUNT


def test_a_transaction_stamped_more_than_a_day_ahead_of_the_clock_is_rejected():
    now = datetime.now(tz=UTC).timestamp()
    with pytest.raises(InvalidRecord, match=r"^ts: .* days ahead of this worker's clock"):
        parse_transaction(b"c1", tx_bytes(ts=now + MAX_FUTURE_SECONDS + 3_600))
    assert parse_transaction(b"c1", tx_bytes(ts=now + MAX_FUTURE_SECONDS - 3_600)).ts > now


def test_a_label_from_year_5000_is_rejected_not_taken_as_a_watermark():
    with pytest.raises(InvalidRecord, match=r"^ts: .* days ahead"):
        parse_fraud_label(b"t1", label_bytes(ts="5000-01-01T00:00:00Z"))


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (b"t1", None, "value"),
        (b"t1", b"not json", "value"),
        (b"t1", b"[]", "value"),
        (b"t1", label_bytes(tx_id=MISSING), "tx_id"),
        (b"t1", label_bytes(tx_id=""), "tx_id"),
        (b"t1", label_bytes(tx_id=1), "tx_id"),
        (b"t1", label_bytes(is_fraud=MISSING), "is_fraud"),
        (b"t1", label_bytes(is_fraud=None), "is_fraud"),
        (b"t1", label_bytes(is_fraud=1), "is_fraud"),
        (b"t1", label_bytes(is_fraud=0), "is_fraud"),
        (b"t1", label_bytes(is_fraud="true"), "is_fraud"),
        (b"t1", label_bytes(ts=MISSING), "ts"),
        (b"t1", label_bytes(ts="soon"), "ts"),
        (b"t1", label_bytes(ts=True), "ts"),
        (b"t1", label_bytes(ts=-5), "ts"),
        (b"t1", label_bytes(ts=1_767_225_600_000.0), "ts"),
        (b"t2", label_bytes(), "key"),
        (None, label_bytes(), "key"),
    ],
)
def test_invalid_label_raises_invalid_record_naming_the_field(key, value, field):
    with pytest.raises(InvalidRecord) as raised:
        parse_fraud_label(key, value)
    assert str(raised.value).startswith(f"{field}:"), str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        -1,
        -1e-9,
        math.nan,
        math.inf,
        -math.inf,
        1e12,
        "",
        "yesterday",
        "12:00",
        [],
        {},
        b"0",
    ],
)
def test_parse_timestamp_rejects_non_timestamps_with_a_ts_message(value):
    with pytest.raises(InvalidRecord, match=r"^ts: "):
        parse_timestamp(value)


def test_parse_timestamp_rejects_an_integer_too_large_for_a_float_as_invalid_record():
    with pytest.raises(InvalidRecord, match=r"^ts: "):
        parse_timestamp(10**400)


def test_parse_timestamp_rejects_iso_timestamp_before_the_epoch_like_a_negative_number():
    with pytest.raises(InvalidRecord, match=r"^ts: "):
        parse_timestamp("1969-12-31T23:59:59Z")


def test_invalid_record_message_quotes_the_offending_value():
    with pytest.raises(InvalidRecord, match="-3"):
        parse_transaction(b"c1", tx_bytes(amount=-3))
    with pytest.raises(InvalidRecord, match="missing"):
        parse_transaction(b"c1", tx_bytes(merchant_id=MISSING))
    with pytest.raises(InvalidRecord, match=r"b'c2'"):
        parse_transaction(b"c2", tx_bytes())


# --- clicks and recommendations ------------------------------------------------------------

VALID_CLICK = {"user_id": "u1", "item_id": "i1", "action": "click", "ts": JAN_1_2026}


def click_bytes(**changes):
    payload = {**VALID_CLICK, **changes}
    return orjson.dumps({k: v for k, v in payload.items() if v is not MISSING})


@pytest.mark.parametrize("action", ["view", "click", "add_to_cart", "purchase"])
def test_a_valid_click_of_each_action_parses_and_ignores_extra_fields(action):
    value = click_bytes(action=action, ts="2026-01-01T00:00:00Z", session_id="s-1", event_id="e")
    assert parse_click(b"u1", value) == Click("u1", "i1", action, JAN_1_2026)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (b"u1", None, "value"),
        (b"u1", b"not json", "value"),
        (b"u1", b'["u1"]', "value"),
        (b"u1", click_bytes(user_id=MISSING), "user_id"),
        (b"u1", click_bytes(user_id=""), "user_id"),
        (b"u1", click_bytes(user_id=7), "user_id"),
        (b"u1", click_bytes(item_id=MISSING), "item_id"),
        (b"u1", click_bytes(item_id=""), "item_id"),
        (b"u1", click_bytes(item_id=["i1"]), "item_id"),
        (b"u1", click_bytes(item_id="i" * 257), "item_id"),
        (b"u" * 257, click_bytes(user_id="u" * 257), "user_id"),
        (b"u1", click_bytes(action=MISSING), "action"),
        (b"u1", click_bytes(action="VIEW"), "action"),
        (b"u1", click_bytes(action="like"), "action"),
        (b"u1", click_bytes(action=1), "action"),
        (b"u1", click_bytes(ts=MISSING), "ts"),
        (b"u1", click_bytes(ts="soon"), "ts"),
        (b"u1", click_bytes(ts=True), "ts"),
        (b"u1", click_bytes(ts=-1), "ts"),
        (b"u1", click_bytes(ts=1_767_225_600_000), "ts"),
        (b"u1", click_bytes(ts="5000-01-01T00:00:00Z"), "ts"),
        (b"u2", click_bytes(), "key"),
        (None, click_bytes(), "key"),
        (b"", click_bytes(), "key"),
    ],
)
def test_invalid_click_raises_invalid_record_naming_the_field(key, value, field):
    with pytest.raises(InvalidRecord) as raised:
        parse_click(key, value)
    assert str(raised.value).startswith(f"{field}:"), str(raised.value)


def test_invalid_click_messages_are_exact():
    with pytest.raises(InvalidRecord) as raised:
        parse_click(b"u1", click_bytes(action=None))
    assert str(raised.value) == (
        "action: expected one of view, click, add_to_cart, purchase, got nothing (missing)"
    )
    with pytest.raises(InvalidRecord) as raised:
        parse_click(b"u2", click_bytes())
    assert str(raised.value) == "key: expected the record's user_id 'u1', got b'u2'"
    with pytest.raises(InvalidRecord) as raised:
        parse_click(b"u1", click_bytes(item_id="i" * 300))
    assert str(raised.value) == "item_id: longer than 256 characters (300)"


def test_ids_of_the_longest_length_taken_parse():
    assert parse_click(b"u1", click_bytes(item_id="\u00e9" * 256)).item_id == "\u00e9" * 256


def test_recommendations_encode_to_the_topic_contract_and_back():
    recs = Recommendations(
        "u1", (ScoredItem("i2", 0.75), ScoredItem("i9", -1.5)), model_version=12, ts=JAN_1_2026
    )
    assert orjson.loads(recs.encode()) == {
        "user_id": "u1",
        "items": [{"item_id": "i2", "score": 0.75}, {"item_id": "i9", "score": -1.5}],
        "model_version": 12,
        "ts": JAN_1_2026,
    }
    assert Recommendations.decode(recs.encode()) == recs


def test_empty_recommendations_encode_an_empty_list():
    recs = Recommendations("u1", (), model_version=0, ts=0.0)
    assert orjson.loads(recs.encode())["items"] == []
    assert Recommendations.decode(recs.encode()) == recs


# --- sensor readings and alerts (the alerts pipeline) ------------------------------------

VALID_READING = {"device_id": "dev-1", "metric": "temperature", "value": 21.5, "ts": JAN_1_2026}


def reading_bytes(**changes) -> bytes:
    payload = {**VALID_READING, **changes}
    return orjson.dumps({k: v for k, v in payload.items() if v is not MISSING})


def test_valid_sensor_reading_parses_every_field_and_ignores_extra_ones():
    assert parse_sensor_reading(b"dev-1", reading_bytes(reading_id="r-1", unit="C")) == SensorReading(
        device_id="dev-1", metric="temperature", value=21.5, ts=JAN_1_2026
    )


def test_sensor_reading_integer_value_and_iso_timestamp_are_taken():
    reading = parse_sensor_reading(b"dev-1", reading_bytes(value=-3, ts="2026-01-01T00:00:00Z"))
    assert (reading.value, reading.ts) == (-3.0, JAN_1_2026)
    assert isinstance(reading.value, float)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (b"dev-1", None, "value"),
        (b"dev-1", b"not json", "value"),
        (b"dev-1", b"[1, 2]", "value"),
        (b"dev-1", reading_bytes(device_id=MISSING), "device_id"),
        (b"dev-1", reading_bytes(device_id=""), "device_id"),
        (b"dev-1", reading_bytes(device_id=7), "device_id"),
        (b"dev-1", reading_bytes(metric=MISSING), "metric"),
        (b"dev-1", reading_bytes(metric=""), "metric"),
        (b"dev-1", reading_bytes(metric=["t"]), "metric"),
        (b"dev-1", reading_bytes(metric="m" * (MAX_METRIC_LENGTH + 1)), "metric"),
        (b"dev-1", reading_bytes(value=MISSING), "value"),
        (b"dev-1", reading_bytes(value=None), "value"),
        (b"dev-1", reading_bytes(value="21.5"), "value"),
        (b"dev-1", reading_bytes(value=True), "value"),
        (b"dev-1", reading_bytes(value=MAX_SENSOR_VALUE * 2), "value"),
        (b"dev-1", reading_bytes(value=-MAX_SENSOR_VALUE * 2), "value"),
        (b"dev-1", reading_bytes(ts=MISSING), "ts"),
        (b"dev-1", reading_bytes(ts="yesterday"), "ts"),
        (b"dev-1", reading_bytes(ts=-1), "ts"),
        (b"dev-1", reading_bytes(ts=1_767_225_600_000), "ts"),  # milliseconds
        (b"dev-2", reading_bytes(), "key"),
        (None, reading_bytes(), "key"),
        (b"", reading_bytes(), "key"),
    ],
)
def test_invalid_sensor_reading_raises_invalid_record_naming_the_field(key, value, field):
    with pytest.raises(InvalidRecord) as raised:
        parse_sensor_reading(key, value)
    assert str(raised.value).startswith(f"{field}:"), str(raised.value)


@pytest.mark.parametrize("raw_value", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_nan_or_infinite_sensor_value_is_rejected_as_invalid_record(raw_value):
    value = b'{"device_id":"dev-1","metric":"t","ts":0,"value":' + raw_value + b"}"
    with pytest.raises(InvalidRecord) as raised:
        parse_sensor_reading(b"dev-1", value)
    assert str(raised.value).split(":")[0] == "value"


def test_a_sensor_reading_stamped_more_than_a_day_ahead_of_the_clock_is_rejected():
    now = datetime.now(tz=UTC).timestamp()
    with pytest.raises(InvalidRecord, match=r"^ts: .* days ahead of this worker's clock"):
        parse_sensor_reading(b"dev-1", reading_bytes(ts=now + MAX_FUTURE_SECONDS + 3_600))


def test_sensor_value_bound_is_inclusive():
    assert parse_sensor_reading(b"dev-1", reading_bytes(value=-MAX_SENSOR_VALUE)).value == -MAX_SENSOR_VALUE


def test_alert_encodes_the_topic_fields_in_order_and_decodes_back_equal():
    alert = Alert("dev-1", "temperature", "resolved", 0.5, 21.0, (20.0, 23.0), "level_shift", JAN_1_2026)
    payload = orjson.loads(alert.encode())
    assert list(payload) == ["device_id", "metric", "severity", "score", "value", "expected", "reason", "ts"]
    assert payload["expected"] == [20.0, 23.0]
    assert alert.to_json() == alert.encode()
    assert Alert.decode(alert.encode()) == alert


def test_alert_decode_rejects_a_payload_missing_a_field():
    with pytest.raises(KeyError):
        Alert.decode(b'{"device_id":"dev-1"}')


def test_merchant_events_are_read_from_batches_and_from_single_merchant_records():
    batch = {"m1": MerchantEvents([(5.0, 9.5)], []), "m2": MerchantEvents([], [(7.0, True)])}
    assert MerchantEvents.decode_batch(None, MerchantEvents.encode_batch(batch)) == batch
    # A record of one merchant, keyed by it, as versions before batches wrote them.
    assert MerchantEvents.decode_batch(b"m3", b"[[[1.0,2.0]],[[3.0,false]]]") == {
        "m3": MerchantEvents([(1.0, 2.0)], [(3.0, False)])
    }
    with pytest.raises(InvalidRecord, match="key: missing"):
        MerchantEvents.decode_batch(None, b"[[],[]]")
    with pytest.raises(InvalidRecord, match="expected a JSON object"):
        MerchantEvents.decode_batch(None, b"3")

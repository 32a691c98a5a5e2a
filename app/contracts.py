"""Event contracts of the input topics: parse raw Kafka records or say exactly why not.

Parsers take the record's key and value bytes and return a typed event, or
raise :class:`~app.dead_letters.InvalidRecord` with a reason fit for the
``dead-letters`` topic.  Unknown extra fields are ignored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson


class InvalidRecord(ValueError):
    """A record that breaks its topic's contract; the message says how."""


# Epoch seconds beyond this (year 5138) are almost surely milliseconds.
_MAX_EPOCH_SECONDS = 1e11
#: How far ahead of this machine's clock an event may be stamped.  One far-future event would
#: expire its card's history and lift its partition's watermark past everything else.
MAX_FUTURE_SECONDS = 86_400.0
#: The largest amount taken.  Sums over a window of bounded count then stay finite (near
#: 1.8e308 a float overflows to infinity, which JSON cannot carry).
MAX_AMOUNT = 1e12


@dataclass(frozen=True, slots=True)
class Transaction:
    tx_id: str
    card_id: str
    merchant_id: str
    amount: float
    ts: float
    currency: str | None = None
    country: str | None = None
    channel: str | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Transaction:
        """A transaction from an already valid payload (simulators, replays); no checks.

        >>> Transaction.from_payload({"tx_id": "t1", "card_id": "c1", "merchant_id": "m1",
        ...                           "amount": 5, "ts": 0}).amount
        5.0
        """
        return cls(
            tx_id=payload["tx_id"],
            card_id=payload["card_id"],
            merchant_id=payload["merchant_id"],
            amount=float(payload["amount"]),
            ts=float(payload["ts"]),
            currency=payload.get("currency"),
            country=payload.get("country"),
            channel=payload.get("channel"),
        )


@dataclass(frozen=True, slots=True)
class FraudLabel:
    tx_id: str
    is_fraud: bool
    ts: float


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from epoch seconds or an ISO-8601 string (naive means UTC).

    >>> parse_timestamp("2026-01-01T00:00:00Z"), parse_timestamp(1767225600)
    (1767225600.0, 1767225600.0)
    >>> parse_timestamp("yesterday")
    Traceback (most recent call last):
    ...
    app.contracts.InvalidRecord: ts: not an ISO-8601 timestamp: 'yesterday'
    """
    if isinstance(value, bool):
        raise InvalidRecord(f"ts: expected epoch seconds or ISO-8601 string, got {value!r}")
    if isinstance(value, int | float):
        try:
            return _epoch_in_range(float(value), value)
        except OverflowError:
            raise InvalidRecord(f"ts: {value!r} is too large for epoch seconds") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRecord(f"ts: not an ISO-8601 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _epoch_in_range(parsed.timestamp(), value)
    raise InvalidRecord(f"ts: expected epoch seconds or ISO-8601 string, got {type(value).__name__}")


def _epoch_in_range(ts: float, original: Any) -> float:
    if not math.isfinite(ts) or ts < 0:
        raise InvalidRecord(f"ts: must be finite and not before 1970, got {original!r}")
    if ts > _MAX_EPOCH_SECONDS:
        raise InvalidRecord(f"ts: {original!r} is too large for epoch seconds (milliseconds?)")
    return ts


def parse_transaction(key: bytes | None, value: bytes | None) -> Transaction:
    """A :class:`Transaction` from a ``transactions`` record keyed by its ``card_id``.

    >>> tx = parse_transaction(b"c1", b'{"tx_id":"t1","card_id":"c1","merchant_id":"m1",'
    ...                        b'"amount":12.5,"ts":0,"note":"ignored"}')
    >>> tx.tx_id, tx.amount, tx.ts, tx.country
    ('t1', 12.5, 0.0, None)
    """
    payload = _json_object(value)
    card_id = _required_str(payload, "card_id")
    _check_key(key, card_id, "card_id")
    amount = payload.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidRecord(f"amount: expected a number, got {_describe(amount)}")
    if not math.isfinite(amount) or not 0 <= amount <= MAX_AMOUNT:
        raise InvalidRecord(f"amount: must be finite, >= 0 and <= {MAX_AMOUNT:g}, got {amount!r}")
    return Transaction(
        tx_id=_required_str(payload, "tx_id"),
        card_id=card_id,
        merchant_id=_required_str(payload, "merchant_id"),
        amount=float(amount),
        ts=_not_in_the_future(parse_timestamp(payload.get("ts"))),
        currency=_optional_str(payload, "currency"),
        country=_optional_str(payload, "country"),
        channel=_optional_str(payload, "channel"),
    )


def parse_fraud_label(key: bytes | None, value: bytes | None) -> FraudLabel:
    """A :class:`FraudLabel` from a ``fraud-labels`` record keyed by its ``tx_id``.

    >>> parse_fraud_label(b"t1", b'{"tx_id":"t1","is_fraud":true,"ts":"2026-01-08T00:00:00+00:00"}')
    FraudLabel(tx_id='t1', is_fraud=True, ts=1767830400.0)
    """
    payload = _json_object(value)
    tx_id = _required_str(payload, "tx_id")
    _check_key(key, tx_id, "tx_id")
    is_fraud = payload.get("is_fraud")
    if not isinstance(is_fraud, bool):
        raise InvalidRecord(f"is_fraud: expected true or false, got {_describe(is_fraud)}")
    return FraudLabel(
        tx_id=tx_id, is_fraud=is_fraud, ts=_not_in_the_future(parse_timestamp(payload.get("ts")))
    )


def _not_in_the_future(ts: float, now: float | None = None) -> float:
    """``ts``, unless it is more than :data:`MAX_FUTURE_SECONDS` ahead of the clock.

    >>> _not_in_the_future(1_000.0, now=0.0)
    1000.0
    >>> _not_in_the_future(200_000.0, now=0.0)
    Traceback (most recent call last):
    ...
    app.contracts.InvalidRecord: ts: 200000.0 is 2.3 days ahead of this worker's clock (at most 1 taken)
    """
    now = time.time() if now is None else now
    if ts - now > MAX_FUTURE_SECONDS:
        raise InvalidRecord(
            f"ts: {ts!r} is {(ts - now) / 86_400:.1f} days ahead of this worker's clock "
            f"(at most {MAX_FUTURE_SECONDS / 86_400:g} taken)"
        )
    return ts


def _json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidRecord("value: missing (null record)")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidRecord(f"value: expected a JSON object, got {type(payload).__name__}")
    return payload


def _required_str(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRecord(f"{field}: expected a non-empty string, got {_describe(value)}")
    return value


def _optional_str(payload: dict[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidRecord(f"{field}: expected a string, got {_describe(value)}")
    return value


def _check_key(key: bytes | None, expected: str, field: str) -> None:
    if key is None or key.decode("utf-8", errors="replace") != expected:
        raise InvalidRecord(f"key: expected the record's {field} {expected!r}, got {key!r}")


def _describe(value: Any) -> str:
    return "nothing (missing)" if value is None else f"{type(value).__name__} {value!r}"


# --- messages between the fraud pipeline's stages ------------------------------------------


@dataclass(frozen=True, slots=True)
class FraudDecision:
    """A transaction's decision, as published on ``fraud-decisions`` (key ``tx_id``).

    ``features`` are exactly what the model saw, so that the label join learns from
    the features as they were at decision time.
    """

    tx_id: str
    card_id: str
    merchant_id: str
    score: float
    decision: str
    reasons: list[str]
    model_version: int
    p_fraud: float
    anomaly: float
    features: dict[str, float]
    event_ts: float
    decided_at: float
    latency_ms: float

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, data: bytes) -> FraudDecision:
        """The decision in ``data``; raises ``ValueError``/``TypeError`` when it is not one."""
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            raise InvalidRecord("value: expected a JSON object")
        return cls(**{name: payload[name] for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class MerchantEvents:
    """What happened at one merchant during one flush of a stage (``fraud-merchant-events``).

    ``transactions`` are ``(ts, amount)`` pairs; ``labels`` are ``(label_ts, is_fraud)``
    pairs counted at the event time at which each label arrived.
    """

    transactions: list[tuple[float, float]]
    labels: list[tuple[float, bool]]

    @staticmethod
    def encode_batch(events: Mapping[str, MerchantEvents]) -> bytes:
        """Several merchants' events in one record: an object by ``merchant_id``.

        >>> data = MerchantEvents.encode_batch({"m1": MerchantEvents([(5.0, 9.5)], [])})
        >>> data
        b'{"m1":[[[5.0,9.5]],[]]}'
        >>> MerchantEvents.decode_batch(None, data)
        {'m1': MerchantEvents(transactions=[(5.0, 9.5)], labels=[])}
        """
        return orjson.dumps({merchant: [e.transactions, e.labels] for merchant, e in events.items()})

    @classmethod
    def decode_batch(cls, key: bytes | None, data: bytes) -> dict[str, MerchantEvents]:
        """The events by merchant of one ``fraud-merchant-events`` record: a batch, or one
        merchant's (the key's) as records were before batches."""
        payload = orjson.loads(data)
        if isinstance(payload, list):
            if key is None:
                raise InvalidRecord("key: missing (a single merchant's events are keyed by merchant_id)")
            return {key.decode(): cls._from_json(payload)}
        if not isinstance(payload, dict):
            raise InvalidRecord(f"value: expected a JSON object, got {type(payload).__name__}")
        return {str(merchant): cls._from_json(events) for merchant, events in payload.items()}

    @classmethod
    def _from_json(cls, payload: Any) -> MerchantEvents:
        transactions, labels = payload
        return cls(
            transactions=[(float(ts), float(amount)) for ts, amount in transactions],
            labels=[(float(ts), bool(is_fraud)) for ts, is_fraud in labels],
        )


# --- the recommendations pipeline: clicks in, recommendations out ---------------------------

#: The interactions a ``clicks`` record may report, weakest first.
CLICK_ACTIONS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
#: The longest user or item id taken: ids are stored in users' state, which encodes their length
#: in two bytes, and a very long id would bloat every state and message that names it.
MAX_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Click:
    """One interaction of a user with an item, as read from ``clicks`` (key ``user_id``)."""

    user_id: str
    item_id: str
    action: str
    ts: float


def parse_click(key: bytes | None, value: bytes | None) -> Click:
    """A :class:`Click` from a ``clicks`` record keyed by its ``user_id``.

    >>> parse_click(b"u1", b'{"user_id":"u1","item_id":"i7","action":"purchase","ts":0,"session_id":"s"}')
    Click(user_id='u1', item_id='i7', action='purchase', ts=0.0)
    >>> parse_click(b"u1", b'{"user_id":"u1","item_id":"i7","action":"like","ts":0}')
    Traceback (most recent call last):
    ...
    app.contracts.InvalidRecord: action: expected one of view, click, add_to_cart, purchase, got str 'like'
    """
    payload = _json_object(value)
    user_id = _bounded_id(payload, "user_id")
    _check_key(key, user_id, "user_id")
    item_id = _bounded_id(payload, "item_id")
    action = payload.get("action")
    if action not in CLICK_ACTIONS:
        raise InvalidRecord(f"action: expected one of {', '.join(CLICK_ACTIONS)}, got {_describe(action)}")
    return Click(
        user_id=user_id,
        item_id=item_id,
        action=action,
        ts=_not_in_the_future(parse_timestamp(payload.get("ts"))),
    )


def _bounded_id(payload: dict[str, Any], field: str) -> str:
    value = _required_str(payload, field)
    if len(value) > MAX_ID_CHARS:
        raise InvalidRecord(f"{field}: longer than {MAX_ID_CHARS} characters ({len(value)})")
    return value


class ScoredItem(NamedTuple):
    """An item recommended with its score (higher: recommended first).

    A named tuple: a click ranks and publishes ten of them, and a tuple is built several
    times faster than a frozen dataclass.  Like any tuple it equals ``(item_id, score)`` and
    serialises as a JSON array: messages spell out ``{"item_id", "score"}`` themselves.
    """

    item_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A user's recommendations, as published on ``recommendations`` (key ``user_id``).

    ``ts`` is the event time they answer: the interaction's, or the request's when asked
    for over HTTP.

    >>> recs = Recommendations("u1", (ScoredItem("i2", 0.5),), model_version=3, ts=10.0)
    >>> recs.encode()
    b'{"user_id":"u1","items":[{"item_id":"i2","score":0.5}],"model_version":3,"ts":10.0}'
    >>> Recommendations.decode(recs.encode()) == recs
    True
    """

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: int
    ts: float

    def encode(self) -> bytes:
        # Spelled out: orjson serialises a slotted dataclass field by field, three times slower.
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "items": [{"item_id": item_id, "score": score} for item_id, score in self.items],
                "model_version": self.model_version,
                "ts": self.ts,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Recommendations:
        """The recommendations in ``data``; raises ``ValueError``/``TypeError``/``KeyError`` when not."""
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            raise InvalidRecord("value: expected a JSON object")
        return cls(
            user_id=payload["user_id"],
            items=tuple(ScoredItem(item["item_id"], item["score"]) for item in payload["items"]),
            model_version=payload["model_version"],
            ts=payload["ts"],
        )


# --- the alerts pipeline: sensor readings in, alerts out ------------------------------------

#: The largest magnitude of a reading taken.  Window sums of squares of bounded count then stay
#: finite (1e12 squared is 1e24, far from the 1.8e308 where a float overflows).
MAX_SENSOR_VALUE = 1e12
#: Longest metric name taken: metrics name entries of the device's table value.
MAX_METRIC_LENGTH = 64


@dataclass(frozen=True, slots=True)
class SensorReading:
    """One reading of one metric of a device, from ``sensor-readings`` (key ``device_id``)."""

    device_id: str
    metric: str
    value: float
    ts: float


def parse_sensor_reading(key: bytes | None, value: bytes | None) -> SensorReading:
    """A :class:`SensorReading` from a ``sensor-readings`` record keyed by its ``device_id``.

    >>> parse_sensor_reading(b"dev-1", b'{"device_id":"dev-1","metric":"temperature",'
    ...                      b'"value":21,"ts":0,"reading_id":"ignored"}')
    SensorReading(device_id='dev-1', metric='temperature', value=21.0, ts=0.0)
    >>> parse_sensor_reading(b"dev-2", b'{"device_id":"dev-1","metric":"t","value":1,"ts":0}')
    Traceback (most recent call last):
    ...
    app.contracts.InvalidRecord: key: expected the record's device_id 'dev-1', got b'dev-2'
    """
    payload = _json_object(value)
    device_id = _required_str(payload, "device_id")
    _check_key(key, device_id, "device_id")
    metric = _required_str(payload, "metric")
    if len(metric) > MAX_METRIC_LENGTH:
        raise InvalidRecord(f"metric: at most {MAX_METRIC_LENGTH} characters, got {len(metric)}")
    reading = payload.get("value")
    if isinstance(reading, bool) or not isinstance(reading, int | float):
        raise InvalidRecord(f"value: expected a number, got {_describe(reading)}")
    if not math.isfinite(reading) or abs(reading) > MAX_SENSOR_VALUE:
        raise InvalidRecord(f"value: must be finite and within +-{MAX_SENSOR_VALUE:g}, got {reading!r}")
    return SensorReading(
        device_id=device_id,
        metric=metric,
        value=float(reading),
        ts=_not_in_the_future(parse_timestamp(payload.get("ts"))),
    )


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert, or the end of one, as published on ``alerts`` (key ``device_id``).

    ``severity`` is ``warning``, ``critical`` or ``resolved``; ``expected`` is the
    ``[low, high]`` range the reading was expected in; ``reason`` says which rule fired
    (``spike``, ``level_shift``, ``drift``, ``stuck``).

    >>> alert = Alert("dev-1", "temperature", "critical", 12.5, 35.0, (20.0, 22.0), "spike", 60.0)
    >>> alert.encode()
    b'{"device_id":"dev-1","metric":"temperature","severity":"critical","score":12.5,"value":35.0,"expected":[20.0,22.0],"reason":"spike","ts":60.0}'
    >>> Alert.decode(alert.encode()) == alert
    True
    """

    device_id: str
    metric: str
    severity: str
    score: float
    value: float
    expected: tuple[float, float]
    reason: str
    ts: float

    def encode(self) -> bytes:
        return orjson.dumps(self)

    def to_json(self) -> bytes:
        """The same bytes as :meth:`encode`."""
        return self.encode()

    @classmethod
    def decode(cls, data: bytes) -> Alert:
        """The alert in ``data``; raises ``ValueError``/``TypeError``/``KeyError`` when it is not one."""
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            raise InvalidRecord("value: expected a JSON object")
        fields = {name: payload[name] for name in cls.__slots__}
        low, high = fields["expected"]
        fields["expected"] = (float(low), float(high))
        return cls(**fields)

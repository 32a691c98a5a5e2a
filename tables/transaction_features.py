"""The full feature vector of a transaction: its own fields, time of day, card and merchant features."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tables.card_features import add_transaction, card_log
from tables.merchant_features import MerchantActivity
from tables.windows import EventLog


def time_features(ts: float) -> dict[str, float]:
    """Hour of day (UTC, fractional) and weekend flag of an event time.

    >>> time_features(1767268800.0)  # Thursday 2026-01-01 12:00 UTC
    {'hour': 12.0, 'weekend': 0.0}
    """
    hour, weekend = _hour_and_weekend(ts)
    return {"hour": hour, "weekend": weekend}


def _hour_and_weekend(ts: float) -> tuple[float, float]:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.hour + moment.minute / 60.0, 1.0 if moment.weekday() >= 5 else 0.0


def transaction_features(
    *,
    amount: float,
    ts: float,
    channel: str | None,
    card_features: dict[str, float],
    merchant_features: dict[str, float],
) -> dict[str, float]:
    """Everything the models see about one transaction: its fields, :func:`time_features`, card, merchant."""
    hour, weekend = _hour_and_weekend(ts)
    return {
        "amount": amount,
        "online": 1.0 if channel == "online" else 0.0,
        "hour": hour,
        "weekend": weekend,
        **card_features,
        **merchant_features,
    }


class InMemoryActivity:
    """Card logs and merchant activity in plain dicts, for in-process replays (the agents use tables).

    >>> activity = InMemoryActivity()
    >>> card, merchant = activity.add_transaction(
    ...     {"tx_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 5.0, "ts": 0.0})
    >>> card["card_count_1h"], merchant["merchant_count_1h"]
    (1, 1)
    """

    def __init__(self) -> None:
        self.cards: dict[str, EventLog] = {}
        self.merchants: dict[str, MerchantActivity] = {}

    def add_transaction(self, tx: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        """Card and merchant features of a transaction payload, counting it.

        Raises :class:`~tables.card_features.DuplicateTransaction` (and counts nothing)
        when the card already holds its ``tx_id``.
        """
        log = self.cards.get(tx["card_id"])
        if log is None:
            log = self.cards[tx["card_id"]] = card_log(None)
        card = add_transaction(
            log,
            tx_id=tx["tx_id"],
            ts=tx["ts"],
            amount=tx["amount"],
            merchant_id=tx["merchant_id"],
            country=tx.get("country"),
        )
        merchant = self.merchants.get(tx["merchant_id"])
        if merchant is None:
            merchant = self.merchants[tx["merchant_id"]] = MerchantActivity()
        return card, merchant.add_transaction(tx["ts"], tx["amount"])

"""The full feature vector of a transaction: its own fields, time of day, card and merchant features."""

from __future__ import annotations

from datetime import UTC, datetime


def time_features(ts: float) -> dict[str, float]:
    """Hour of day (UTC, fractional) and weekend flag of an event time.

    >>> time_features(1767268800.0)  # Thursday 2026-01-01 12:00 UTC
    {'hour': 12.0, 'weekend': 0.0}
    """
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return {
        "hour": moment.hour + moment.minute / 60.0,
        "weekend": 1.0 if moment.weekday() >= 5 else 0.0,
    }


def transaction_features(
    *,
    amount: float,
    ts: float,
    channel: str | None,
    card_features: dict[str, float],
    merchant_features: dict[str, float],
) -> dict[str, float]:
    """Everything the models see about one transaction."""
    return {
        "amount": amount,
        "online": 1.0 if channel == "online" else 0.0,
        **time_features(ts),
        **card_features,
        **merchant_features,
    }

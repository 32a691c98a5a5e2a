"""Live features of a payment card, over exact event-time sliding windows.

A transaction's features cover every transaction of the card processed so far
(itself included) whose event time lies in ``(ts - horizon, ts]``.  Replaying
the same stream gives the same features; out-of-order transactions land in the
windows their timestamps say.  A card's log keeps 31 days behind its newest
transaction, so a transaction more than a day older than the card's newest one
sees its 30-day window partly expired.
"""

from __future__ import annotations

import math
from typing import Any

from tables.windows import DAY, HOUR, MINUTE, EventLog

COLUMNS = ("amount", "merchant", "tx", "country")
RETENTION = 31 * DAY
NO_PREVIOUS_SECONDS = 30 * DAY

COUNT_HORIZONS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
AMOUNT_HORIZONS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
MERCHANT_HORIZONS = {"24h": DAY, "7d": 7 * DAY}


class DuplicateTransaction(ValueError):
    """The card already holds a transaction with this id."""


class ConflictingTransaction(DuplicateTransaction):
    """The card holds a transaction with this id but other time, amount or merchant."""


def card_log(state: dict[str, Any] | None) -> EventLog:
    """The card's event log from its table value (``None`` for a new card)."""
    return EventLog.from_state(state, COLUMNS, RETENTION)


def card_is_idle(state: dict[str, Any], watermark: float) -> bool:
    """Whether no transaction at or after ``watermark`` can see anything in the card's log.

    Such a card is dropped: its next transaction gets the same features from an
    empty log, since the log keeps only :data:`RETENTION` behind its newest.

    >>> log = card_log(None)
    >>> _ = add_transaction(log, tx_id="t1", ts=0.0, amount=5.0, merchant_id="m1", country=None)
    >>> card_is_idle(log.to_state(), RETENTION), card_is_idle(log.to_state(), RETENTION + 1.0)
    (False, True)
    """
    return card_log(state).newest < watermark - RETENTION


def add_transaction(
    log: EventLog, *, tx_id: str, ts: float, amount: float, merchant_id: str, country: str | None
) -> dict[str, float]:
    """Record a transaction in the card's log and return its features.

    Raises :class:`DuplicateTransaction` when ``tx_id`` is already in the log.

    >>> log = card_log(None)
    >>> f = add_transaction(log, tx_id="t1", ts=0.0, amount=10.0, merchant_id="m1", country="FR")
    >>> f["card_count_1h"], f["card_no_prior_30d"]
    (1, 1.0)
    >>> f = add_transaction(log, tx_id="t2", ts=60.0, amount=30.0, merchant_id="m2", country="FR")
    >>> f["card_count_5m"], f["card_amount_max_1h"], f["card_seconds_since_prev"]
    (2, 30.0, 60.0)
    """
    if tx_id in log.column("tx"):
        raise DuplicateTransaction(f"duplicate tx_id {tx_id!r} for this card")
    index = log.insert(ts, (amount, merchant_id, tx_id, country))
    features = card_features_at(log, index)
    log.expire()
    return features


def redelivered_features(
    log: EventLog, *, tx_id: str, ts: float, amount: float, merchant_id: str
) -> dict[str, float]:
    """Features of a transaction the card already holds, for an identical second delivery.

    Kafka delivers at least once: a transaction seen again after a rebalance or a
    restart is answered from the log, without counting it twice.  Raises
    :class:`ConflictingTransaction` when the stored one differs.

    >>> log = card_log(None)
    >>> first = add_transaction(log, tx_id="t1", ts=0.0, amount=10.0, merchant_id="m1", country=None)
    >>> redelivered_features(log, tx_id="t1", ts=0.0, amount=10.0, merchant_id="m1") == first
    True
    """
    index = log.column("tx").index(tx_id)
    stored = (log.ts[index], log.column("amount")[index], log.column("merchant")[index])
    if stored != (ts, amount, merchant_id):
        raise ConflictingTransaction(
            f"tx_id {tx_id!r} already seen for this card with ts, amount, merchant {stored}"
        )
    return card_features_at(log, index)


def card_features_at(log: EventLog, index: int) -> dict[str, float]:
    """Features of the event at ``index``, from the events up to and including it."""
    ts = log.ts[index]
    amounts = log.column("amount")
    merchants = log.column("merchant")
    countries = log.column("country")
    features: dict[str, float] = {}

    for name, horizon in COUNT_HORIZONS.items():
        features[f"card_count_{name}"] = len(log.window(index, horizon))
    for name, horizon in AMOUNT_HORIZONS.items():
        window = log.window(index, horizon)
        in_window = amounts[window.start : window.stop]
        features[f"card_amount_sum_{name}"] = math.fsum(in_window)
        features[f"card_amount_max_{name}"] = max(in_window)
    for name, horizon in MERCHANT_HORIZONS.items():
        window = log.window(index, horizon)
        features[f"card_distinct_merchants_{name}"] = len(set(merchants[window.start : window.stop]))

    month = log.window(index, 30 * DAY)
    previous = range(month.start, index)  # the month before this transaction, itself excluded
    amount = amounts[index]
    n_previous = len(previous)
    features["card_amount_mean_30d"] = features["card_amount_sum_30d"] / len(month)
    if n_previous:
        usual = math.fsum(amounts[previous.start : previous.stop]) / n_previous
        features["card_seconds_since_prev"] = ts - log.ts[index - 1]
        features["card_no_prior_30d"] = 0.0
    else:
        usual = amount
        features["card_seconds_since_prev"] = NO_PREVIOUS_SECONDS
        features["card_no_prior_30d"] = 1.0
    features["card_amount_log_ratio"] = math.log((amount + 1.0) / (usual + 1.0))
    merchant, country = merchants[index], countries[index]
    features["card_merchant_prev_30d"] = sum(1 for i in previous if merchants[i] == merchant)
    same_country = sum(1 for i in previous if countries[i] == country)
    # Laplace smoothing: a new card is neither home nor abroad.
    features["card_country_share_30d"] = (same_country + 1.0) / (n_previous + 2.0)
    return features

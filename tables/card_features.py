"""Live features of a payment card, over exact event-time sliding windows.

A transaction's features cover every transaction of the card processed so far
(itself included) whose event time lies in ``(ts - horizon, ts]`` and that its
log still holds.  Replaying the same stream gives the same features;
out-of-order transactions land in the windows their timestamps say.

A card's log keeps 31 days behind its newest transaction, so a transaction
more than a day older than the card's newest one sees its 30-day window partly
expired.  It also keeps at most :data:`MAX_EVENTS` transactions, the newest by
event time, so that no card's table value nears Kafka's 1 MB record limit (a
log of 1,000 transactions is about 80 KB of JSON; 31 days of a busy card's
transactions passed 1 MB at about 11,000).  A card past that many
transactions in a month (over 32 a day) is out of the ordinary anyway: its
windows then hold its last :data:`MAX_EVENTS` transactions only, so its counts,
sums, means and histories cover less than their horizon (``card_count_30d`` is
at most :data:`MAX_EVENTS`), while its short windows are exact as long as they
hold fewer transactions than that.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from tables.windows import DAY, HOUR, MINUTE, EventLog

COLUMNS = ("amount", "merchant", "tx", "country")
RETENTION = 31 * DAY
NO_PREVIOUS_SECONDS = 30 * DAY

# card_features_at spells the windows out, shortest first: each holds the shorter ones.
_5M, _1H, _24H, _7D, _30D = 5 * MINUTE, HOUR, DAY, 7 * DAY, 30 * DAY
COUNT_HORIZONS = {"5m": _5M, "1h": _1H, "24h": _24H, "7d": _7D, "30d": _30D}
AMOUNT_HORIZONS = {"1h": _1H, "24h": _24H, "7d": _7D, "30d": _30D}
MERCHANT_HORIZONS = {"24h": _24H, "7d": _7D}
MAX_EVENTS = 1_000

FEATURE_NAMES = (
    *(f"card_count_{name}" for name in COUNT_HORIZONS),
    *(f"card_amount_{kind}_{name}" for name in AMOUNT_HORIZONS for kind in ("sum", "max")),
    *(f"card_distinct_merchants_{name}" for name in MERCHANT_HORIZONS),
    "card_amount_mean_30d",
    "card_seconds_since_prev",
    "card_no_prior_30d",
    "card_amount_log_ratio",
    "card_merchant_prev_30d",
    "card_country_share_30d",
)


class DuplicateTransaction(ValueError):
    """The card already holds a transaction with this id."""


class ConflictingTransaction(DuplicateTransaction):
    """The card holds a transaction with this id but other time, amount or merchant."""


def card_log(state: dict[str, Any] | None) -> EventLog:
    """The card's event log from its table value (``None`` for a new card)."""
    return EventLog.from_state(state, COLUMNS, RETENTION, max_events=MAX_EVENTS)


def card_is_idle(state: dict[str, Any], watermark: float) -> bool:
    """Whether no transaction at or after ``watermark`` can see anything in the card's log.

    Such a card is dropped: its next transaction gets the same features from an
    empty log, since the log keeps only :data:`RETENTION` behind its newest (the
    count limit only ever drops the oldest, so the newest tells).

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
    """Features of the event at ``index``, from the events up to and including it.

    >>> log = card_log(None)
    >>> for i, (ts, amount) in enumerate([(0.0, 4.0), (HOUR, 1.0), (HOUR + 60.0, 2.0)]):
    ...     _ = log.insert(ts, (amount, f"m{i % 2}", f"t{i}", "FR"))
    >>> f = card_features_at(log, 2)
    >>> f["card_count_5m"], f["card_count_1h"], f["card_amount_sum_24h"], f["card_amount_max_1h"]
    (2, 2, 7.0, 2.0)
    >>> f["card_distinct_merchants_24h"], f["card_merchant_prev_30d"], f["card_seconds_since_prev"]
    (2, 1, 60.0)
    """
    times = log.ts
    amounts, merchants, _, countries = log.columns()
    ts = times[index]
    end = index + 1
    # The windows are nested: each search ends where the shorter window starts.
    start_5m = bisect_right(times, ts - _5M, 0, end)
    start_1h = bisect_right(times, ts - _1H, 0, start_5m)
    start_24h = bisect_right(times, ts - _24H, 0, start_1h)
    start_7d = bisect_right(times, ts - _7D, 0, start_24h)
    start_30d = bisect_right(times, ts - _30D, 0, start_7d)
    amounts_1h = amounts[start_1h:end]
    amounts_24h = amounts[start_24h:end]
    amounts_7d = amounts[start_7d:end]
    amounts_30d = amounts[start_30d:end]
    sum_30d = math.fsum(amounts_30d)
    features: dict[str, float] = {
        "card_count_5m": end - start_5m,
        "card_count_1h": end - start_1h,
        "card_count_24h": end - start_24h,
        "card_count_7d": end - start_7d,
        "card_count_30d": end - start_30d,
        "card_amount_sum_1h": math.fsum(amounts_1h),
        "card_amount_max_1h": max(amounts_1h),
        "card_amount_sum_24h": math.fsum(amounts_24h),
        "card_amount_max_24h": max(amounts_24h),
        "card_amount_sum_7d": math.fsum(amounts_7d),
        "card_amount_max_7d": max(amounts_7d),
        "card_amount_sum_30d": sum_30d,
        "card_amount_max_30d": max(amounts_30d),
        "card_distinct_merchants_24h": len(set(merchants[start_24h:end])),
        "card_distinct_merchants_7d": len(set(merchants[start_7d:end])),
        "card_amount_mean_30d": sum_30d / (end - start_30d),
    }
    # History: the month's transactions before this one, start_30d..index-1.
    amount = amounts[index]
    n_previous = index - start_30d
    if n_previous:
        usual = math.fsum(amounts[start_30d:index]) / n_previous
        features["card_seconds_since_prev"] = ts - times[index - 1]
        features["card_no_prior_30d"] = 0.0
    else:
        usual = amount
        features["card_seconds_since_prev"] = NO_PREVIOUS_SECONDS
        features["card_no_prior_30d"] = 1.0
    features["card_amount_log_ratio"] = math.log((amount + 1.0) / (usual + 1.0))
    features["card_merchant_prev_30d"] = merchants[start_30d:index].count(merchants[index])
    same_country = countries[start_30d:index].count(countries[index])
    # Laplace smoothing: a new card is neither home nor abroad.
    features["card_country_share_30d"] = (same_country + 1.0) / (n_previous + 2.0)
    return features

"""Live features of a merchant, over aligned event-time buckets.

Merchants see many transactions, so they are counted per bucket (minutes for
the last hour, hours for the last day, days for the last month) instead of one
entry per transaction.  A window of ``n`` buckets at time ``ts`` holds the
buckets ``(bucket(ts) - n, bucket(ts)]``.

Fraud rates count labels by the event time at which the label arrived, so a
transaction only sees truth that was known when it happened.
"""

from __future__ import annotations

from typing import Any

from tables.windows import DAY, HOUR, MINUTE, BucketCounts

# (state key, bucket width, buckets kept); the feature horizons below use these.  Each keeps
# more than its longest window, so that a late event still finds its whole window: up to an
# hour late for the 1-hour window, a day for the 24-hour one, 7 days for the monthly ones.
_MINUTES = ("minutes", MINUTE, 120)
_HOURS = ("hours", HOUR, 48)
_DAYS = ("days", DAY, 37)
_LABEL_DAYS = ("label_days", DAY, 37)
BUCKETS_KEPT = {key: keep for key, _, keep in (_MINUTES, _HOURS, _DAYS, _LABEL_DAYS)}
BUCKET_WIDTHS = {key: width for key, width, _ in (_MINUTES, _HOURS, _DAYS, _LABEL_DAYS)}

# feature suffix -> (granularity, buckets in the window); features_at reads them by suffix
ACTIVITY_HORIZONS = {
    "1h": (_MINUTES, 60),
    "24h": (_HOURS, 24),
    "7d": (_DAYS, 7),
    "30d": (_DAYS, 30),
}
FRAUD_RATE_HORIZONS = {"7d": 7, "30d": 30}

# Prior for the smoothed fraud rate: as if every merchant had PRIOR_LABELS labels at PRIOR_RATE.
PRIOR_RATE = 0.01
PRIOR_LABELS = 20.0


RETENTION = 31 * DAY  # behind the newest event: more than any window reaches

# Sums kept as typed arrays (counts as integers, amounts as floats): table bytes decode into
# them without a Python object per number (tables.merchant_codec).
ACTIVITY_TYPECODES = ("q", "d")  # transactions, amount
LABEL_TYPECODES = ("q", "q")  # labels, frauds


class MerchantActivity:
    """Transaction counts and amounts, and received labels, of one merchant."""

    __slots__ = ("_activity", "labels")

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self._activity = {
            key: BucketCounts.from_state(state.get(key), width, keep, 2, typecodes=ACTIVITY_TYPECODES)
            for key, width, keep in (_MINUTES, _HOURS, _DAYS)
        }
        key, width, keep = _LABEL_DAYS
        self.labels = BucketCounts.from_state(state.get(key), width, keep, 2, typecodes=LABEL_TYPECODES)

    @classmethod
    def from_series(cls, series: dict[str, BucketCounts]) -> MerchantActivity:
        """Rebuild from :meth:`series` output (the counts are taken as they are, not copied)."""
        merchant = cls.__new__(cls)
        merchant._activity = {key: series[key] for key, _, _ in (_MINUTES, _HOURS, _DAYS)}
        merchant.labels = series[_LABEL_DAYS[0]]
        return merchant

    def series(self) -> dict[str, BucketCounts]:
        """Each granularity's counts by its state key, the received labels' last (read only)."""
        return {**self._activity, _LABEL_DAYS[0]: self.labels}

    def to_state(self) -> dict[str, Any]:
        state = {key: counts.to_state() for key, counts in self._activity.items()}
        state[_LABEL_DAYS[0]] = self.labels.to_state()
        return state

    def is_idle(self, watermark: float) -> bool:
        """Whether no window at or after ``watermark`` reaches any of its buckets.

        >>> merchant = MerchantActivity()
        >>> _ = merchant.add_transaction(0.0, 10.0)
        >>> merchant.is_idle(RETENTION), merchant.is_idle(RETENTION + DAY)
        (False, True)
        """
        series = (self._activity[_DAYS[0]], self.labels)
        newest_day = max((counts.newest for counts in series if counts.newest is not None), default=None)
        return newest_day is None or (newest_day + 1) * DAY <= watermark - RETENTION

    def add_transaction(self, ts: float, amount: float) -> dict[str, float]:
        """Count a transaction and return the merchant's features including it.

        >>> merchant = MerchantActivity()
        >>> _ = merchant.add_transaction(0.0, 10.0)
        >>> features = merchant.add_transaction(30.0, 20.0)
        >>> features["merchant_count_1h"], features["merchant_amount_mean_30d"]
        (2, 15.0)
        """
        self.count_transaction(ts, amount)
        return self.features_at(ts, amount)

    def count_transaction(self, ts: float, amount: float) -> None:
        """Count a transaction, without computing features (for a stage that reads them elsewhere).

        >>> merchant = MerchantActivity()
        >>> merchant.count_transaction(0.0, 10.0)
        >>> merchant.features_at(0.0, 10.0)["merchant_count_1h"]
        1
        """
        values = (1, amount)
        for counts in self._activity.values():
            counts.add(ts, values)

    def add_label(self, label_ts: float, is_fraud: bool) -> None:
        """Count a label that arrived at event time ``label_ts``."""
        self.labels.add(label_ts, (1, 1 if is_fraud else 0))

    def features_at(self, ts: float, amount: float) -> dict[str, float]:
        """The merchant's features for a transaction of ``amount`` at ``ts`` (counted or not)."""
        minutes, hours, days = self._activity.values()
        count_1h = minutes.window_sums(ts, ACTIVITY_HORIZONS["1h"][1])[0]
        count_24h = hours.window_sums(ts, ACTIVITY_HORIZONS["24h"][1])[0]
        (count_7d, _), (count_30d, total_30d) = days.nested_window_sums(ts, _DAY_WINDOWS)
        (labels_7d, frauds_7d), (labels_30d, frauds_30d) = self.labels.nested_window_sums(ts, _LABEL_WINDOWS)
        mean = total_30d / count_30d if count_30d else amount
        hourly_rate = count_30d / (30 * 24)
        return {
            "merchant_count_1h": count_1h,
            "merchant_count_24h": count_24h,
            "merchant_count_7d": count_7d,
            "merchant_count_30d": count_30d,
            "merchant_amount_mean_30d": mean,
            "merchant_amount_ratio": (amount + 1.0) / (mean + 1.0),
            "merchant_burst_1h": count_1h / (hourly_rate + 1.0),
            "merchant_labels_7d": labels_7d,
            "merchant_fraud_rate_7d": _smoothed_rate(frauds_7d, labels_7d),
            "merchant_labels_30d": labels_30d,
            "merchant_fraud_rate_30d": _smoothed_rate(frauds_30d, labels_30d),
        }


def _smoothed_rate(frauds: float, labels: float) -> float:
    return (frauds + PRIOR_RATE * PRIOR_LABELS) / (labels + PRIOR_LABELS)


def fraud_labels(smoothed_rate: float, labels: float) -> float:
    """The fraud labels behind a smoothed fraud rate of ``labels`` labels (the inverse of the smoothing).

    >>> fraud_labels(_smoothed_rate(7, 7), 7), fraud_labels(_smoothed_rate(0, 12), 12), fraud_labels(0.0, 0)
    (7, 0, 0)
    """
    return max(0, round(smoothed_rate * (labels + PRIOR_LABELS) - PRIOR_RATE * PRIOR_LABELS))


_DAY_WINDOWS = (ACTIVITY_HORIZONS["7d"][1], ACTIVITY_HORIZONS["30d"][1])
_LABEL_WINDOWS = (FRAUD_RATE_HORIZONS["7d"], FRAUD_RATE_HORIZONS["30d"])

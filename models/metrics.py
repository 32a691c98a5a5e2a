"""Progressive (predict-then-learn) quality metrics of a binary scorer."""

from __future__ import annotations

from dataclasses import dataclass, field

from river import drift, metrics


class BinnedAveragePrecision:
    """Average precision over scores binned into ``n_thresholds`` equal bins of [0, 1].

    River has an approximate ROC AUC over thresholds but no average precision;
    this is its counterpart.  Ties inside a bin are ranked together.

    >>> ap = BinnedAveragePrecision()
    >>> for y, p in [(True, 0.9), (False, 0.8), (True, 0.7), (False, 0.1)]:
    ...     ap.update(y, p)
    >>> round(ap.get(), 4)  # (1/1 + 2/3) / 2
    0.8333
    """

    def __init__(self, n_thresholds: int = 1_000) -> None:
        self.n_thresholds = n_thresholds
        self._positives = [0] * n_thresholds
        self._negatives = [0] * n_thresholds

    def update(self, y_true: bool, y_pred: float) -> None:
        index = min(int(max(y_pred, 0.0) * self.n_thresholds), self.n_thresholds - 1)
        if y_true:
            self._positives[index] += 1
        else:
            self._negatives[index] += 1

    def get(self) -> float:
        total_positives = sum(self._positives)
        if not total_positives:
            return 0.0
        ap = 0.0
        true_positives = predicted = 0
        for index in reversed(range(self.n_thresholds)):
            positives, negatives = self._positives[index], self._negatives[index]
            if not positives and not negatives:
                continue
            true_positives += positives
            predicted += positives + negatives
            ap += positives / total_positives * (true_positives / predicted)
        return ap


@dataclass
class ScorerMetrics:
    """What the learner keeps about the scores it sees labelled, updated per label."""

    rolling_window: int = 5_000
    roc_auc: metrics.ROCAUC = field(default_factory=lambda: metrics.ROCAUC(n_thresholds=1_000))
    average_precision: BinnedAveragePrecision = field(default_factory=BinnedAveragePrecision)
    rolling_roc_auc: metrics.RollingROCAUC = field(init=False)
    rolling_pr_auc: metrics.RollingPRAUC = field(init=False)
    error_drift: drift.ADWIN = field(default_factory=lambda: drift.ADWIN(delta=0.002))
    labels: int = 0
    frauds: int = 0
    drifts: int = 0
    last_drift_at_label: int | None = None

    def __post_init__(self) -> None:
        self.rolling_roc_auc = metrics.RollingROCAUC(window_size=self.rolling_window)
        self.rolling_pr_auc = metrics.RollingPRAUC(window_size=self.rolling_window)

    def update(self, is_fraud: bool, score: float) -> None:
        """Account for one label of a transaction that was scored ``score``."""
        self.labels += 1
        self.frauds += int(is_fraud)
        self.roc_auc.update(is_fraud, score)
        self.average_precision.update(is_fraud, score)
        self.rolling_roc_auc.update(is_fraud, score)
        self.rolling_pr_auc.update(is_fraud, score)
        self.error_drift.update(abs(float(is_fraud) - score))
        if self.error_drift.drift_detected:
            self.drifts += 1
            self.last_drift_at_label = self.labels

    def report(self) -> dict[str, float | int | None]:
        return {
            "labels": self.labels,
            "frauds": self.frauds,
            "roc_auc": self.roc_auc.get(),
            "average_precision": self.average_precision.get(),
            "rolling_window": self.rolling_window,
            "rolling_roc_auc": self.rolling_roc_auc.get(),
            "rolling_pr_auc": self.rolling_pr_auc.get(),
            "mean_abs_error": self.error_drift.estimation,
            "drifts_detected": self.drifts,
            "last_drift_at_label": self.last_drift_at_label,
        }

"""Progressive (predict-then-learn) quality metrics of a binary scorer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from river import drift, metrics


def roc_auc(y_true: Sequence[bool], scores: Sequence[float]) -> float:
    """Exact ROC AUC (ties count one half), by ranks.

    >>> roc_auc([False, True, False, True], [0.1, 0.9, 0.8, 0.3])
    0.75
    """
    y = np.asarray(y_true, dtype=bool)
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return float("nan")
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y_true: Sequence[bool], scores: Sequence[float]) -> float:
    """Exact average precision: mean precision at each positive, tied scores taken together.

    >>> round(average_precision([True, False, True, False], [0.9, 0.8, 0.7, 0.1]), 4)
    0.8333
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    true_positives = np.cumsum(y)[last_of_tie]
    predicted = np.arange(1, len(y) + 1)[last_of_tie]
    new_positives = np.diff(np.r_[0, true_positives])
    return float((new_positives * true_positives / predicted).sum() / y.sum())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


class ScoreHistogram:
    """Positives and negatives counted per score bin: ROC AUC and average precision in O(bins).

    River's ``ROCAUC`` updates one confusion matrix per threshold on every label
    (about 1 ms with 1,000 thresholds); a histogram update is O(1) and gives the
    same approximation.  Ties inside a bin are ranked together.

    >>> histogram = ScoreHistogram()
    >>> for y, p in [(True, 0.9), (False, 0.8), (True, 0.7), (False, 0.1)]:
    ...     histogram.update(y, p)
    >>> histogram.roc_auc(), round(histogram.average_precision(), 4)  # (1/1 + 2/3) / 2
    (0.75, 0.8333)
    """

    def __init__(self, n_bins: int = 1_000) -> None:
        self.n_bins = n_bins
        self._positives = [0] * n_bins
        self._negatives = [0] * n_bins

    def update(self, y_true: bool, y_pred: float) -> None:
        index = min(int(max(y_pred, 0.0) * self.n_bins), self.n_bins - 1)
        if y_true:
            self._positives[index] += 1
        else:
            self._negatives[index] += 1

    def roc_auc(self) -> float:
        total_positives, total_negatives = sum(self._positives), sum(self._negatives)
        if not total_positives or not total_negatives:
            return float("nan")
        area = 0.0
        negatives_below = 0
        for positives, negatives in zip(self._positives, self._negatives, strict=True):
            area += positives * (negatives_below + negatives / 2.0)
            negatives_below += negatives
        return area / (total_positives * total_negatives)

    def average_precision(self) -> float:
        total_positives = sum(self._positives)
        if not total_positives:
            return float("nan")
        ap = 0.0
        true_positives = predicted = 0
        for index in reversed(range(self.n_bins)):
            positives, negatives = self._positives[index], self._negatives[index]
            true_positives += positives
            predicted += positives + negatives
            if positives:
                ap += positives / total_positives * (true_positives / predicted)
        return ap


@dataclass
class ScorerMetrics:
    """What the learner keeps about the scores it sees labelled, updated per label."""

    rolling_window: int = 5_000
    histogram: ScoreHistogram = field(default_factory=ScoreHistogram)
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
        self.histogram.update(is_fraud, score)
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
            "roc_auc": self.histogram.roc_auc(),
            "average_precision": self.histogram.average_precision(),
            "rolling_window": self.rolling_window,
            "rolling_roc_auc": self.rolling_roc_auc.get(),
            "rolling_pr_auc": self.rolling_pr_auc.get(),
            "mean_abs_error": self.error_drift.estimation,
            "drifts_detected": self.drifts,
            "last_drift_at_label": self.last_drift_at_label,
        }

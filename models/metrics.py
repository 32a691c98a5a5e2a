"""Progressive (predict-then-learn) quality metrics of a binary scorer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift


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
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
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


class RollingScores:
    """The last ``window_size`` labels and scores, in a ring buffer: exact rolling ROC AUC and AP.

    Memory is fixed when created (one bool and one float64 per slot), whatever the
    length of the stream; the metrics are computed from the buffer when asked for,
    in O(window_size log window_size), by :func:`roc_auc` and :func:`average_precision`.

    >>> rolling = RollingScores(window_size=4)
    >>> for y, p in [(True, 0.1), (True, 0.9), (False, 0.8), (False, 0.2), (True, 0.7)]:
    ...     rolling.update(y, p)
    >>> len(rolling)  # (True, 0.1) has left the window
    4
    >>> rolling.roc_auc(), round(rolling.average_precision(), 4)  # (1/1 + 2/3) / 2
    (0.75, 0.8333)
    """

    def __init__(self, window_size: int = 5_000) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self.window_size = window_size
        self._labels = np.zeros(window_size, dtype=bool)
        self._scores = np.zeros(window_size, dtype=np.float64)
        self._seen = 0  # pairs ever added; the next one goes to slot _seen % window_size

    def __len__(self) -> int:
        return min(self._seen, self.window_size)

    def update(self, y_true: bool, y_pred: float) -> None:
        """Add one pair, replacing the oldest when the window is full."""
        slot = self._seen % self.window_size
        self._labels[slot] = y_true
        self._scores[slot] = y_pred
        self._seen += 1

    def roc_auc(self) -> float:
        """Exact ROC AUC over the window; NaN without both classes."""
        n = len(self)
        return roc_auc(self._labels[:n], self._scores[:n])

    def average_precision(self) -> float:
        """Exact average precision over the window; NaN without a positive."""
        n = len(self)
        return average_precision(self._labels[:n], self._scores[:n])


class BoundedADWIN:
    """River's ``drift.ADWIN`` with a window of fewer than ``max_width`` values.

    ADWIN's window grows for as long as no change is detected, and its memory
    with the logarithm of the window.  Here a successor ADWIN starts once the
    current one holds ``max_width / 2`` values and replaces it when it reaches
    ``max_width``: at most two ADWINs of at most ``max_width`` values each, so the
    memory is bounded whatever the length of the stream.  Until its window first
    reaches ``max_width`` values this is exactly ``drift.ADWIN`` (which starts over
    after each drift it detects); from then on the window holds the last
    ``max_width / 2`` to ``max_width`` values, fewer after a detected drift.

    >>> detector = BoundedADWIN(delta=0.002, max_width=1_000)
    >>> widths = []
    >>> for i in range(5_000):
    ...     detector.update(0.2 if i < 4_000 else 0.8)
    ...     widths.append(detector.width)
    >>> max(widths), detector.n_detections, round(detector.estimation, 2)
    (999, 1, 0.8)
    """

    def __init__(self, delta: float = 0.002, max_width: int = 20_000) -> None:
        if max_width < 2:
            raise ValueError("max_width must be >= 2")
        self.delta = delta
        self.max_width = max_width
        self.n_detections = 0
        self._current = drift.ADWIN(delta=delta)
        self._successor: drift.ADWIN | None = None

    @property
    def drift_detected(self) -> bool:
        return self._current.drift_detected

    @property
    def width(self) -> int:
        """Values in the current window."""
        return int(self._current.width)

    @property
    def estimation(self) -> float:
        """Mean of the values in the current window."""
        return self._current.estimation

    def update(self, x: float) -> None:
        current, successor = self._current, self._successor
        current.update(x)
        if successor is not None:
            successor.update(x)
            if successor.drift_detected:
                self._successor = successor = None  # it would start over: it starts again later
        if current.drift_detected:
            self.n_detections += 1
            self._successor = None  # River's ADWIN starts over on its next update
            return
        width = current.width
        if width >= self.max_width:
            self._current, self._successor = successor or drift.ADWIN(delta=self.delta), None
        elif successor is None and width >= self.max_width // 2:
            self._successor = drift.ADWIN(delta=self.delta)


def _error_drift() -> BoundedADWIN:
    """The learner's drift detector on the absolute error of its scores."""
    return BoundedADWIN(delta=0.002, max_width=20_000)


@dataclass
class ScorerMetrics:
    """What the learner keeps about the scores it sees labelled, updated per label.

    Its memory does not grow with the number of labels: a fixed histogram for the
    metrics over all labels, a ring buffer of the last ``rolling_window`` labels and
    scores for the exact rolling ROC AUC and average precision (reported as
    ``rolling_pr_auc``: the step-wise area under the precision-recall curve), and an
    ADWIN on the absolute error whose window is capped (:class:`BoundedADWIN`).

    >>> scorer_metrics = ScorerMetrics(rolling_window=3)
    >>> for y, p in [(True, 0.1), (True, 0.9), (False, 0.8), (False, 0.2)]:
    ...     scorer_metrics.update(y, p)
    >>> report = scorer_metrics.report()
    >>> report["labels"], report["roc_auc"], report["rolling_roc_auc"], report["rolling_pr_auc"]
    (4, 0.5, 1.0, 1.0)
    """

    rolling_window: int = 5_000
    histogram: ScoreHistogram = field(default_factory=ScoreHistogram)
    rolling: RollingScores = field(init=False)
    error_drift: BoundedADWIN = field(default_factory=_error_drift)
    labels: int = 0
    frauds: int = 0
    drifts: int = 0
    last_drift_at_label: int | None = None

    def __post_init__(self) -> None:
        self.rolling = RollingScores(window_size=self.rolling_window)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "rolling_roc_auc" in state:
            state = _without_river_rolling_metrics(state)
        self.__dict__.update(state)

    def update(self, is_fraud: bool, score: float) -> None:
        """Account for one label of a transaction that was scored ``score``."""
        self.labels += 1
        self.frauds += int(is_fraud)
        self.histogram.update(is_fraud, score)
        self.rolling.update(is_fraud, score)
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
            "rolling_roc_auc": self.rolling.roc_auc(),
            "rolling_pr_auc": self.rolling.average_precision(),
            "mean_abs_error": self.error_drift.estimation,
            "drifts_detected": self.drifts,
            "last_drift_at_label": self.last_drift_at_label,
        }


def _without_river_rolling_metrics(state: dict[str, Any]) -> dict[str, Any]:
    """A ``ScorerMetrics`` pickled with River's RollingROCAUC/RollingPRAUC, made bounded.

    The rolling window is refilled from the pairs River still held in its Python
    buffer (all of them when the metric was never read, as in the learner); the
    error drift detector starts over, its count of drifts is kept.
    """
    state = dict(state)
    old = state.pop("rolling_roc_auc")
    state.pop("rolling_pr_auc", None)
    rolling = RollingScores(window_size=state["rolling_window"])
    pairs = list(zip(old.__dict__.get("_buf_labels", []), old.__dict__.get("_buf_scores", []), strict=True))
    for y, p in pairs[-rolling.window_size :]:
        rolling.update(bool(y), float(p))
    state["rolling"] = rolling
    state["error_drift"] = _error_drift()
    return state

"""Exact ROC AUC / average precision against their definitions, and the binned approximations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import ScoreHistogram, average_precision, roc_auc


def brute_force_roc_auc(y: list[bool], s: list[float]) -> float:
    """Probability that a random positive outscores a random negative, ties counting one half."""
    positives = [p for p, label in zip(s, y, strict=True) if label]
    negatives = [n for n, label in zip(s, y, strict=True) if not label]
    if not positives or not negatives:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def brute_force_average_precision(y: list[bool], s: list[float]) -> float:
    """Mean over positives of the precision among everything scored at least as high."""
    positives = [i for i, label in enumerate(y) if label]
    if not positives:
        return math.nan
    precisions = []
    for i in positives:
        above = [j for j in range(len(s)) if s[j] >= s[i]]
        precisions.append(sum(1 for j in above if y[j]) / len(above))
    return sum(precisions) / len(precisions)


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=tol, abs_tol=tol)


scores_with_ties = st.one_of(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]),
    st.floats(0.0, 1.0, allow_nan=False),
)
labelled_scores = st.lists(st.tuples(st.booleans(), scores_with_ties), min_size=1, max_size=60)


# --- exact metrics -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(labelled_scores)
def test_roc_auc_matches_pairwise_definition_with_ties_counting_half(pairs):
    y = [label for label, _ in pairs]
    s = [score for _, score in pairs]
    assert same(roc_auc(y, s), brute_force_roc_auc(y, s))


@settings(max_examples=400, deadline=None)
@given(labelled_scores)
def test_average_precision_matches_definition_with_tied_scores_taken_together(pairs):
    y = [label for label, _ in pairs]
    s = [score for _, score in pairs]
    assert same(average_precision(y, s), brute_force_average_precision(y, s))


@settings(max_examples=100, deadline=None)
@given(labelled_scores, st.randoms(use_true_random=False))
def test_exact_metrics_do_not_depend_on_input_order(pairs, rng):
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    for metric in (roc_auc, average_precision):
        a = metric([p[0] for p in pairs], [p[1] for p in pairs])
        b = metric([p[0] for p in shuffled], [p[1] for p in shuffled])
        assert same(a, b)


def test_roc_auc_is_nan_with_a_single_class_and_average_precision_nan_without_positives():
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))
    assert math.isnan(roc_auc([False, False], [0.1, 0.2]))
    assert math.isnan(average_precision([False, False], [0.1, 0.2]))
    assert average_precision([True, True], [0.1, 0.2]) == 1.0


def test_perfect_inverted_and_all_tied_rankings():
    y = [False, False, True, True]
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5] * 4) == 0.5
    assert average_precision(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert average_precision(y, [0.5] * 4) == 0.5
    assert math.isclose(average_precision(y, [0.9, 0.8, 0.2, 0.1]), (1 / 3 + 2 / 4) / 2)


# --- ScoreHistogram ----------------------------------------------------------------------


def histogram_of(y, s, n_bins: int = 1_000) -> ScoreHistogram:
    histogram = ScoreHistogram(n_bins)
    for label, score in zip(y, s, strict=True):
        histogram.update(bool(label), float(score))
    return histogram


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 499)), min_size=1, max_size=80))
def test_histogram_equals_exact_metrics_when_distinct_scores_fall_in_distinct_bins(pairs):
    y = [label for label, _ in pairs]
    s = [(2 * k + 1) / 1_000 for _, k in pairs]  # bin centres two bins apart; equal scores share a bin
    histogram = histogram_of(y, s)
    assert same(histogram.roc_auc(), roc_auc(y, s))
    assert same(histogram.average_precision(), average_precision(y, s))


@pytest.mark.parametrize("seed", range(5))
def test_histogram_is_within_a_hundredth_of_exact_when_scores_are_spread(seed):
    rng = np.random.default_rng(seed)
    n = 5_000
    y = rng.random(n) < 0.1
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0.0, 1.0)
    histogram = histogram_of(y, s)
    assert abs(histogram.roc_auc() - roc_auc(y, s)) <= 0.01
    assert abs(histogram.average_precision() - average_precision(y, s)) <= 0.01


def test_histogram_clamps_scores_outside_zero_one_to_the_end_bins():
    histogram = ScoreHistogram(n_bins=10)
    histogram.update(True, 1.5)
    histogram.update(True, 1.0)
    histogram.update(False, -0.5)
    histogram.update(False, 0.0)
    assert histogram.roc_auc() == 1.0
    assert histogram.average_precision() == 1.0


def test_histogram_metrics_are_nan_without_both_classes():
    histogram = ScoreHistogram()
    assert math.isnan(histogram.roc_auc())
    assert math.isnan(histogram.average_precision())
    histogram.update(True, 0.5)
    assert math.isnan(histogram.roc_auc())
    assert histogram.average_precision() == 1.0
    histogram.update(False, 0.5)
    assert histogram.roc_auc() == 0.5
    assert histogram.average_precision() == 0.5

"""Exact ROC AUC / average precision against their definitions, the binned approximations,
the rolling window, the bounded drift detector, and the learner's metrics staying bounded."""

from __future__ import annotations

import base64
import math
import pickle
import random
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from models.metrics import (
    BoundedADWIN,
    RollingScores,
    ScoreHistogram,
    ScorerMetrics,
    average_precision,
    roc_auc,
)


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


# --- RollingScores -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.lists(st.tuples(st.booleans(), scores_with_ties), min_size=1, max_size=60))
def test_rolling_metrics_equal_the_definitions_over_the_last_window_size_pairs_after_every_update(
    window_size, pairs
):
    rolling = RollingScores(window_size)
    for seen, (label, score) in enumerate(pairs, start=1):
        rolling.update(label, score)
        last = pairs[max(0, seen - window_size) : seen]
        y, s = [p[0] for p in last], [p[1] for p in last]
        assert len(rolling) == len(last)
        assert same(rolling.roc_auc(), brute_force_roc_auc(y, s))
        assert same(rolling.average_precision(), brute_force_average_precision(y, s))


def pairwise_roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """The pairwise definition, vectorised: every positive against every negative."""
    positives, negatives = s[y][:, None], s[~y][None, :]
    return float(((positives > negatives) + 0.5 * (positives == negatives)).mean())


def pairwise_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over positives of the precision among everything scored at least as high, vectorised."""
    at_least = s[None, :] >= s[y][:, None]  # one row per positive
    return float(((at_least & y[None, :]).sum(axis=1) / at_least.sum(axis=1)).mean())


@pytest.mark.parametrize("seed", range(3))
def test_scorer_metrics_rolling_report_equals_a_recomputation_over_the_last_5000_labels(seed):
    rng = np.random.default_rng(seed)
    n = 17_321  # more than three windows, ending mid-way through the ring
    y = rng.random(n) < 0.05
    s = np.clip(rng.normal(0.3 + 0.2 * y, 0.2), 0.0, 1.0)
    s[rng.random(n) < 0.2] = 0.5  # plenty of ties
    scorer_metrics = ScorerMetrics()
    for label, score in zip(y.tolist(), s.tolist(), strict=True):
        scorer_metrics.update(label, score)
    report = scorer_metrics.report()
    assert report["rolling_window"] == 5_000
    last_y, last_s = y[-5_000:], s[-5_000:]
    assert math.isclose(report["rolling_roc_auc"], pairwise_roc_auc(last_y, last_s), rel_tol=1e-12)
    assert math.isclose(report["rolling_pr_auc"], pairwise_average_precision(last_y, last_s), rel_tol=1e-12)


def test_rolling_scores_pickle_is_as_large_after_fifty_windows_as_after_one():
    rolling = RollingScores(window_size=1_000)
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(50):
        for label, score in zip((rng.random(1_000) < 0.1).tolist(), rng.random(1_000).tolist(), strict=True):
            rolling.update(label, score)
        sizes.append(len(pickle.dumps(rolling, protocol=pickle.HIGHEST_PROTOCOL)))
    assert max(sizes) - sizes[0] <= 8  # the count of pairs seen, an int, is all that can lengthen


def test_rolling_metrics_are_nan_until_both_classes_are_in_the_window():
    rolling = RollingScores(window_size=2)
    assert math.isnan(rolling.roc_auc()) and math.isnan(rolling.average_precision())
    rolling.update(True, 0.4)
    rolling.update(False, 0.6)
    assert (rolling.roc_auc(), rolling.average_precision()) == (0.0, 0.5)
    rolling.update(False, 0.1)  # the positive leaves the window
    assert math.isnan(rolling.roc_auc()) and math.isnan(rolling.average_precision())


def test_rolling_scores_refuses_an_empty_window():
    with pytest.raises(ValueError, match="window_size"):
        RollingScores(window_size=0)


# --- BoundedADWIN ------------------------------------------------------------------------


def shifting_stream(n: int, seed: int, every: int) -> list[float]:
    """Absolute errors whose mean jumps every ``every`` values."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.05, 0.6, size=n // every + 1)
    return np.clip(rng.normal(np.repeat(means, every)[:n], 0.1), 0.0, 1.0).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_bounded_adwin_is_river_adwin_until_its_window_first_reaches_max_width(seed):
    bounded, river_adwin = BoundedADWIN(delta=0.002, max_width=3_000), drift.ADWIN(delta=0.002)
    river_detections = 0  # River's own n_detections starts over with the window after each drift
    for x in shifting_stream(2_999, seed, every=700):
        bounded.update(x)
        river_adwin.update(x)
        river_detections += river_adwin.drift_detected
        assert bounded.drift_detected == river_adwin.drift_detected
        assert bounded.width == river_adwin.width
        assert bounded.estimation == river_adwin.estimation
    assert bounded.n_detections == river_detections > 0


def test_bounded_adwin_window_stays_below_max_width_and_its_pickle_stops_growing():
    bounded, river_adwin = BoundedADWIN(delta=0.002, max_width=2_000), drift.ADWIN(delta=0.002)
    rng = np.random.default_rng(0)
    sizes = {}
    for i, x in enumerate(np.clip(rng.normal(0.3, 0.1, 100_000), 0.0, 1.0).tolist(), start=1):
        bounded.update(x)
        river_adwin.update(x)
        assert bounded.width < 2_000
        if i % 250 == 0:
            sizes[i] = len(pickle.dumps(bounded, protocol=pickle.HIGHEST_PROTOCOL))
    assert bounded.n_detections == 0
    assert river_adwin.width == 100_000  # what grows without the cap
    # Every state of a rotation cycle is seen in the first few max_widths: never larger later.
    assert max(v for i, v in sizes.items() if i > 10_000) <= max(v for i, v in sizes.items() if i <= 10_000)
    assert math.isclose(bounded.estimation, 0.3, abs_tol=0.01)


def test_bounded_adwin_still_detects_a_shift_after_many_rotations():
    detector = BoundedADWIN(delta=0.002, max_width=2_000)
    rng = np.random.default_rng(1)
    for x in np.clip(rng.normal(0.2, 0.1, 50_000), 0.0, 1.0).tolist():
        detector.update(x)
    assert detector.n_detections == 0
    detected_after = None
    for i, x in enumerate(np.clip(rng.normal(0.5, 0.1, 2_000), 0.0, 1.0).tolist(), start=1):
        detector.update(x)
        if detector.drift_detected and detected_after is None:
            detected_after = i
    assert detected_after is not None and detected_after <= 200
    assert math.isclose(detector.estimation, 0.5, abs_tol=0.02)


def test_bounded_adwin_refuses_a_max_width_below_two():
    with pytest.raises(ValueError, match="max_width"):
        BoundedADWIN(max_width=1)


# --- ScorerMetrics -----------------------------------------------------------------------


def test_scorer_metrics_pickle_does_not_grow_from_25k_to_250k_labels():
    scorer_metrics = ScorerMetrics()
    rng = np.random.default_rng(0)
    y = rng.random(250_000) < 0.02
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0.0, 1.0)
    sizes = {}
    for i, (label, score) in enumerate(zip(y.tolist(), s.tolist(), strict=True), start=1):
        scorer_metrics.update(label, score)
        if i in (25_000, 250_000):
            sizes[i] = len(zlib.compress(pickle.dumps(scorer_metrics, protocol=pickle.HIGHEST_PROTOCOL), 1))
    # Past its windows only the compression of 5,000 fresh scores, ADWIN's buckets (two capped
    # windows) and the histogram's counts (pickled in at most 5 bytes each below 2**31) vary.
    assert sizes[250_000] <= sizes[25_000] + 2_048, sizes
    assert sizes[250_000] < 64 * 1024, sizes


def test_scorer_metrics_survive_a_pickle_round_trip():
    scorer_metrics = ScorerMetrics(rolling_window=50)
    rng = np.random.default_rng(3)
    for label, score in zip((rng.random(400) < 0.2).tolist(), rng.random(400).tolist(), strict=True):
        scorer_metrics.update(label, score)
    restored = pickle.loads(pickle.dumps(scorer_metrics))
    assert str(restored.report()) == str(scorer_metrics.report())
    restored.update(True, 0.9)
    scorer_metrics.update(True, 0.9)
    assert str(restored.report()) == str(scorer_metrics.report())


# ScorerMetrics(rolling_window=8) pickled (zlib, base64) by eddy 82861f7, which kept River's
# RollingROCAUC / RollingPRAUC and an unbounded ADWIN, after 30 labels and never read:
# random.Random(7), is_fraud = rng.random() < 0.3, score = round(rng.random(), 3).
LEGACY_SCORER_METRICS = """
eNrtWGtoHFUUnjHZ7Zpt86ilrRBLfvhILNlSippSzNntFicybCOptiVUZ2d2JjtjZ2fizGxSJUVDxTZ0Sq25oT9UrIJopUoI9QWh
hCoaQgmaVCS0kBKJSa21Bh/1UcE7r01I1mek3Zq9h+HMvfecc88597t3hvOUr6tvBWE3szil8oKsh1KCoUkJHZlLtiRUTdBibr8T
VbWj3ajSLNZUWZaUJNMqKbzaiuiAeaMo6Yaa1NgUErElW7EuM5TR9CsMJyk6ik0WmEVMs6pLhtQi6OhhVEkT1yWRV1Erl6Mkr9P9
W1hE5txqZE7mhczvaZ7yNB8S8AdeEZLs1frAk/94nszpQ5k/1tkyQuZopsh5+UPmkXKN7gZyAcf+f/slIa+JL+RC3XEhzZlBQdNU
jeE1qclAZpmGv/VayO6FWL5VUpDpi2zadv/m6QpAiSPM8IIhJAyBRx2mjxdkg0UUxLnY0NTRK6YvIauJnYiuMIMpdhfDpRM7BUNH
tM8sS0mKW3VgZEFJGqI1ujipsQmBaRY0SeURXWQuYkRBxl1krnBcYmzGaGndCHnORni22fo52Wabk5QkdrIy4wRdQfswFRmoHW38
iSSIK0enhmJcHCoIgvARM9uysMNvDb/33W+nd1WFwtWjm2p/fpt0x2sdXro7vAazEH5WuZoFLvfsFbrc7/LhGFe6ff0k3LE2cKy8
8Rxo4qGLbfAZ9BqdKwu3jgExq/mJf9d8s7hnx9/eFd0vXwDHj2/hzr3LRwYvX4Kajkh8/JPvwZqd+HUEZq+/Iyze23bzp7BxXf1b
Vc92wHP9tf098ePw+CsXTpYMvg+nJx5d/ePhA0D8RfzljfyG0fopUJfu6Rt4ORB+x8rv+V/AdmuiIPxH8ZeNBxvr+nphsO7p+7of
6wZ5sunJI2fPwJFlb54NnhqYk7dse2vxIvwgDuPcL7OcIGMIrjL9TRqb5nULZn4bSviVMG+SWd1woc0ajC2ONpslXqVMUxMMm04g
8xYHkG6NLTRnfkmDM9JQH408FJ0+N0EX9br0hGAV3BY1qzrTwspoH0a7Yy0r2nWDxR6aJQ36bMP4ngg8g9EdrcHoJgJ/EyozZRG+
APDpbGLc7Ez/5JM2zbyKpntklovKlhZca7pVPLStUfDBlsuDI8v3UtCjHD5QP7qBgs/l/dGudj8F59ZvL+ViwxSc+ei1Sy/2VFPw
Lm2/UfBVS/9xPEvBKVv2Ngq+2Vq4stPopWBE1LorPnyBgtdLrYP+BgVDB3dU/nDyIAUn7oK2i4dErF5+LLD29vMUjL10wrKEF7Wc
WH0DBVj3+Ve/eJCCgUdsabw632iJY+G+PUuxkxQMr7MbBV96MmPey9dO4vCiXjiZRSe9cEa9KMbjkY576I+xuuO8deFmSq/NmoOX
8ux48qYXu7v+QMNMNInVdEAM7RPX/AliijOI8XT/C8CId88XJGJNHhhzgZHmQr8DfcX5Gw==
"""


def test_a_legacy_pickle_with_river_rolling_metrics_loads_bounded_with_its_last_window_kept():
    legacy = pickle.loads(zlib.decompress(base64.b64decode(LEGACY_SCORER_METRICS)))
    assert isinstance(legacy, ScorerMetrics)
    assert not hasattr(legacy, "rolling_roc_auc") and not hasattr(legacy, "rolling_pr_auc")
    assert isinstance(legacy.rolling, RollingScores) and isinstance(legacy.error_drift, BoundedADWIN)
    rng = random.Random(7)
    pairs = []
    for _ in range(30):
        label = rng.random() < 0.3
        pairs.append((label, round(rng.random(), 3)))
    last_y, last_s = [p[0] for p in pairs[-8:]], [p[1] for p in pairs[-8:]]
    report = legacy.report()
    assert (report["labels"], report["frauds"], report["rolling_window"]) == (30, 10, 8)
    assert report["roc_auc"] == 0.4625  # the histogram is kept as it was
    assert report["rolling_roc_auc"] == roc_auc(last_y, last_s) == pytest.approx(0.5333333333333333)
    assert report["rolling_pr_auc"] == average_precision(last_y, last_s)
    legacy.update(True, 0.99)
    assert legacy.report()["labels"] == 31
    assert legacy.report()["rolling_roc_auc"] == roc_auc([*last_y[1:], True], [*last_s[1:], 0.99])

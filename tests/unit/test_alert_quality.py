"""Tests of the alert quality measures on hand-made episodes (values worked out by hand)."""

from __future__ import annotations

from models.alert_quality import Episode, Fired, episodes_from_truth, evaluate, roc_auc

EPISODES = [
    Episode("a", "spike", 100.0, 100.0),
    Episode("a", "level_shift", 1_000.0, 2_000.0),
    Episode("b", "spike", 500.0, 500.0),
    Episode("b", "stuck", 3_000.0, 3_600.0),
]


def test_recall_precision_and_time_to_detect_per_kind_as_worked_out_by_hand():
    fired = [
        Fired("a", "spike", 100.0, 160.0),  # detects a's spike, 60 s
        Fired("b", "spike", 100.0, 160.0),  # b has no episode then: false
        Fired("a", "level_shift", 1_060.0, 1_060.0),  # detects a's shift, 60 s
        Fired("a", "level_shift", 1_500.0, 1_500.0),  # true again, detects nothing new
        Fired("a", "level_shift", 2_060.0, 2_060.0),  # after the shift: false
        Fired("b", "stuck", 3_300.0, 3_300.0),  # detects b's stuck, 300 s
    ]
    quality = evaluate(EPISODES, fired)
    assert (quality["spike"].episodes, quality["spike"].detected, quality["spike"].recall) == (2, 1, 0.5)
    assert (quality["spike"].alerts, quality["spike"].precision) == (2, 0.5)
    assert quality["spike"].median_seconds_to_detect == 60.0
    assert (quality["level_shift"].recall, quality["level_shift"].precision) == (1.0, 2 / 3)
    assert (quality["stuck"].recall, quality["stuck"].median_seconds_to_detect) == (1.0, 300.0)
    assert (quality["drift"].recall, quality["drift"].precision) == (None, None)
    assert (quality["all"].recall, quality["all"].precision) == (3 / 4, 4 / 6)
    assert quality["all"].median_seconds_to_detect == 60.0  # median of 60, 60, 300


def test_a_grace_after_an_episode_counts_an_alert_true_without_detecting_anything():
    fired = [Fired("a", "level_shift", 2_060.0, 2_060.0)]
    assert evaluate(EPISODES, fired)["level_shift"].precision == 0.0
    graced = evaluate(EPISODES, fired, grace_seconds=120.0)["level_shift"]
    assert (graced.precision, graced.detected) == (1.0, 0)


def test_an_alert_on_another_device_detects_nothing():
    quality = evaluate(EPISODES, [Fired("c", "spike", 100.0, 100.0)])
    assert (quality["all"].detected, quality["all"].precision) == (0, 0.0)


def test_episodes_are_runs_of_one_kind_per_device_even_interleaved():
    labelled = [
        ("a", 0.0, "stuck"),
        ("b", 1.0, "stuck"),
        ("a", 60.0, "stuck"),
        ("b", 61.0, None),
        ("a", 120.0, "spike"),
        ("a", 180.0, None),
        ("b", 181.0, "drift"),
    ]
    assert episodes_from_truth(labelled) == [
        Episode("b", "stuck", 1.0, 1.0),
        Episode("a", "stuck", 0.0, 60.0),
        Episode("a", "spike", 120.0, 120.0),
        Episode("b", "drift", 181.0, 181.0),
    ]


def test_roc_auc_counts_ties_as_half_and_is_one_for_a_perfect_ranking():
    assert roc_auc([False, True], [0.0, 1.0]) == 1.0
    assert roc_auc([False, True, False, True], [0.1, 0.9, 0.5, 0.5]) == 0.875  # 3.5 of 4 pairs

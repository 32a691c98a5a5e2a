import math

from app.simulation.transactions import SimulatedEvent
from benchmarks.soak_reco import (
    RecoCompletion,
    click_latencies,
    hit_rate,
    next_views,
    reco_completion,
    reco_probe,
    reco_rows,
)


def test_completion_matches_answers_to_clicks_by_user_and_ts():
    fed = [("u1", 1.0), ("u1", 2.0), ("u2", 1.0), ("u2", 1.0)]  # u2 clicked twice at the same ts
    answers = [("u1", 1.0), ("u1", 1.0), ("u2", 1.0), ("u3", 9.0)]  # a repeat, one of two, an unknown
    done = reco_completion(fed, answers)
    assert done == RecoCompletion(clicks=4, answered=2, repeated=2)
    assert done.lost == 2


def test_completion_of_a_clean_run():
    done = reco_completion([("a", 1.0), ("b", 2.0)], [("b", 2.0), ("a", 1.0)])
    assert (done.answered, done.lost, done.repeated) == (2, 0, 0)


def test_latencies_pair_the_nth_click_with_the_nth_answer_in_timestamp_order():
    clicks = [("u", 1.0, 1_000), ("u", 1.0, 1_010), ("v", 2.0, 1_005)]
    answers = [("u", 1.0, 1_050), ("v", 2.0, 1_020), ("u", 1.0, 1_030), ("w", 3.0, 1_100), ("u", 1.0, 1_200)]
    # in answer order: v 15; u (1st click) 30; u (2nd click) 40; w has no click; u's third answer neither
    assert click_latencies(clicks, answers) == [15.0, 30.0, 40.0]


def _click(user: str, item: str, action: str, ts: float) -> SimulatedEvent:
    value = {"user_id": user, "item_id": item, "action": action, "ts": ts}
    return SimulatedEvent("clicks", user, value, ts, None)


def test_hit_rate_scores_each_recommendation_against_the_users_next_view():
    events = [
        _click("u", "i1", "view", 1.0),
        _click("u", "i1", "click", 2.0),  # not a view: not a next choice
        _click("u", "i2", "view", 3.0),
        _click("v", "i9", "view", 1.0),
    ]
    views = next_views(events)
    assert views == {"u": ([1.0, 3.0], ["i1", "i2"]), "v": ([1.0], ["i9"])}
    answers = [
        {"user_id": "u", "ts": 1.0, "items": [{"item_id": "i2"}]},  # next view i2: a hit
        {"user_id": "u", "ts": 2.0, "items": [{"item_id": "i7"}]},  # next view i2: a miss
        {"user_id": "u", "ts": 3.0, "items": [{"item_id": "i2"}]},  # no later view: not scored
        {"user_id": "v", "ts": 0.5, "items": [{"item_id": "i9"}]},  # before ``since``: not scored
        {"user_id": "x", "ts": 5.0, "items": []},  # a user without views
    ]
    assert hit_rate(answers, views, since=1.0) == (2, 1)


STATE = {
    "watermarks": {"users": 10.0, "items": 9.0},
    "counts": {"clicks": 100, "idle_users_swept": 7},
    "stages": {
        "recommend_for_users": {
            "counts": {"events": 100, "dead_letters": 1},
            "cached_keys": {"reco-user-history": 40},
        },
        "count_item_events": {"counts": {"events": 80}, "cached_keys": {"reco-item-activity": 30}},
    },
    "items_in_popularity_view": 25,
    "model_version": 3,
    "learner": {"messages_behind": 2, "process": {"running": True, "rss_mb": 80.5}},
    "ranking_helper": {"running": True, "rss_mb": 95.0},
}


def test_probe_keeps_cached_keys_sweeps_popularity_learner_lag_and_childrens_memory():
    assert reco_probe(STATE) == {
        "users_cached": 40,
        "items_cached": 30,
        "popularity": 25,
        "users_swept": 7,
        "items_swept": 0,
        "behind": 2,
        "helper_rss": 95.0,
        "learner_rss": 80.5,
        "dead_letters": 1,
    }
    assert reco_probe(None) is None


def test_report_rows():
    report = {
        "alive": True,
        "completion": RecoCompletion(clicks=10, answered=9, repeated=1),
        "sustained": 499.6,
        "fed_seconds": 700.2,
        "latency": {0.5: 12.4, 0.95: 40.0, 0.99: 80.6, "max": 300.0},
        "p99_by_tenth": [10.0, 20.4],
        "learner_catch_up_seconds": math.nan,
    }
    assert reco_rows(report) == [
        "| measure | value |",
        "|---|---|",
        "| worker alive at the end | True |",
        "| clicks answered / lost / repeated | 9 / **1** / 1 |",
        "| rate sustained (recommendations' timestamps) | 500/s (feed took 700 s) |",
        "| click to recommendation (Kafka timestamps) | p50 12 ms, p95 40 ms, **p99 81 ms**, max 300 ms |",
        "| p99 latency per tenth of the run (ms) | 10, 20 |",
        "| learner caught up after the last recommendation | nan s |",
    ]

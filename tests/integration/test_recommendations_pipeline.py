"""The recommendations pipeline end to end: a real worker process, a real broker."""

from __future__ import annotations

import time
from collections import defaultdict

import orjson

from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.simulation.producer import ensure_topics, produce_events
from tests.integration.kafka_helpers import read_topic, run, send_raw

STREAM = ClickStreamConfig(seed=2, n_users=60, n_items=80, days=2.0, sessions_per_user_per_day=3.0)

BAD_CLICKS = [
    (b"u-x", b"{not json", "not valid UTF-8 JSON"),
    (b"u-x", b'{"user_id":"u-x","item_id":"i1","action":"like","ts":0}', "action"),
    (b"u-x", b'{"user_id":"u-x","action":"view","ts":0}', "item_id"),
    (b"u-y", b'{"user_id":"u-x","item_id":"i1","action":"view","ts":0}', "key"),
    (b"u-x", orjson.dumps({"user_id": "u-x", "item_id": "i" * 300, "action": "view", "ts": 0}), "256"),
]


def test_every_click_gets_its_recommendations_without_bought_items_and_bad_clicks_are_dead_lettered(
    worker_factory,
):
    worker = worker_factory()
    worker.wait_ready()
    clicks = list(generate_click_stream(STREAM))
    per_user: dict[str, list[dict]] = defaultdict(list)
    for click in clicks:
        per_user[click.key].append(click.value)

    run(ensure_topics(worker.bootstrap, [worker.topic("clicks")], 4))
    run(produce_events(clicks, worker.bootstrap, topic_prefix=worker.prefix))
    run(send_raw(worker.bootstrap, worker.topic("clicks"), [(k, v) for k, v, _ in BAD_CLICKS]))

    published = run(
        read_topic(
            worker.bootstrap,
            worker.topic("recommendations"),
            until=lambda records: len(records) >= len(clicks),
            timeout=180,
            settle=3.0,
        )
    )
    received: dict[str, list[dict]] = defaultdict(list)
    for key, value in published:
        assert key.decode() == value["user_id"]
        received[value["user_id"]].append(value)
    # One record per click, in the user's order, none lost or repeated.
    assert {u: [r["ts"] for r in recs] for u, recs in received.items()} == {
        u: [c["ts"] for c in cs] for u, cs in per_user.items()
    }, worker.log_tail()
    # Never an item the user bought before (the click itself included).
    for user, user_clicks in per_user.items():
        bought: set[str] = set()
        for click, recommendation in zip(user_clicks, received[user], strict=True):
            if click["action"] == "purchase":
                bought.add(click["item_id"])
            items = [item["item_id"] for item in recommendation["items"]]
            assert len(items) == len(set(items)) <= 10
            assert not bought & set(items), (user, click, items)

    letters = run(
        read_topic(
            worker.bootstrap,
            worker.topic("dead-letters"),
            until=lambda records: len(records) >= len(BAD_CLICKS),
            timeout=60,
            settle=2.0,
        )
    )
    errors = [value["error"] for _, value in letters]
    assert len(errors) == len(BAD_CLICKS), errors
    for _, _, reason in BAD_CLICKS:
        assert any(reason in error for error in errors), (reason, errors)

    # The one learner publishes snapshots that every worker scores with.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = worker.get_json("/reco/state/")[1]
        if state["model_version"] > 0:
            break
        time.sleep(0.5)
    assert state["model_version"] > 0, state

    # Once every item's activity has flowed to the popularity view (through the item stage's
    # changelog, asynchronously: on a fast backlog the last clicks can be answered before it has),
    # users get full lists.  Asked on demand, so the check does not depend on that timing.
    items = {click.value["item_id"] for click in clicks}
    deadline = time.monotonic() + 60
    while state["items_in_popularity_view"] < len(items) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = worker.get_json("/reco/state/")[1]
    assert state["items_in_popularity_view"] == len(items), state
    for user in {click.key for click in clicks[-50:]}:
        status, answer = worker.get_json(f"/recommendations/{user}/?k=10")
        bought = {c["item_id"] for c in per_user[user] if c["action"] == "purchase"}
        listed = [item["item_id"] for item in answer["items"]]
        assert status == 200 and len(set(listed)) == 10 and not bought & set(listed), (user, answer)

    # On demand, from the worker that owns the user.
    user = clicks[-1].key
    status, answer = worker.get_json(f"/recommendations/{user}/?k=5")
    assert status == 200 and answer["user_id"] == user and len(answer["items"]) == 5
    bought = {c["item_id"] for c in per_user[user] if c["action"] == "purchase"}
    assert not bought & {item["item_id"] for item in answer["items"]}
    status, cold = worker.get_json("/recommendations/someone-new/?k=3")
    assert status == 200 and len(cold["items"]) == 3  # trending
    assert worker.get_json(f"/recommendations/{user}/?k=0")[0] == 400
    assert worker.get_json(f"/recommendations/{user}/?k=many")[0] == 400

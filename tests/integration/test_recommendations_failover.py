"""The recommendations learner, in a child process, when its worker is killed: real workers, a real broker."""

from __future__ import annotations

import signal
import time

from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.simulation.producer import ensure_topics, produce_events
from tests.integration.kafka_helpers import read_topic, run, wait_for_stable_group

STREAM = ClickStreamConfig(seed=4, n_users=80, n_items=60, days=3.0, sessions_per_user_per_day=3.0)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone, or gone while being read
        return False


def test_when_the_learners_worker_is_killed_its_child_ends_and_another_worker_learns_each_message_once(
    worker_factory,
):
    clicks = list(generate_click_stream(STREAM))
    first, second = clicks[: len(clicks) // 2], clicks[len(clicks) // 2 :]
    # Snapshots by the 5 s timer only: the kill most likely lands after offsets the last snapshot
    # does not cover were committed, which the survivor then replays from the training log (the
    # replay itself is tested in tests/unit/test_learning.py; here, that nothing is learned twice
    # or skipped across the processes, whichever way the kill falls).
    fast = {
        "EDDY_SESSION_TIMEOUT_S": "6",
        "EDDY_RECO_SNAPSHOT_EVERY": "100000",
        "EDDY_LEARNER_PROCESS": "1",
    }
    a = worker_factory(extra_env=fast)
    b = worker_factory(prefix=a.prefix, extra_env=fast)
    a.wait_ready()
    b.wait_ready()
    run(ensure_topics(a.bootstrap, [a.topic("clicks")], 4))
    run(wait_for_stable_group(a.bootstrap, a.group_id, members=2))
    run(produce_events(first, a.bootstrap, topic_prefix=a.prefix))
    a.view_when("/reco/state/", lambda state: (state["model"] or {}).get("version", 0) > 0, timeout=120)

    def learner_of(worker) -> dict:
        return worker.get_json("/reco/state/")[1]["learner"]

    learner, survivor = (a, b) if "training_offset" in learner_of(a) else (b, a)
    child = learner_of(learner)["process"]
    assert child["running"] and child["learning"], child  # the learner runs in its child
    learner.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(child["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child["pid"]), "the learner's child outlived its worker"

    run(produce_events(second, survivor.bootstrap, topic_prefix=survivor.prefix))
    answered_clicks = {(c.key, c.value["ts"]) for c in clicks}
    run(
        read_topic(
            survivor.bootstrap,
            survivor.topic("recommendations"),
            until=lambda records: {(v["user_id"], v["ts"]) for _, v in records} >= answered_clicks,
            timeout=180,
        )
    )
    # Every training message in the log, learned once: the survivor took the learner over from
    # the newest snapshot that made it and replayed the rest, in its own child.
    training = run(
        read_topic(survivor.bootstrap, survivor.topic("reco-training"), until=lambda _: False, timeout=5.0)
    )
    examples = sum(len(value) for _, value in training)
    state = survivor.view_when(
        "/reco/state/",
        lambda state: (state["model"] or {}).get("training_offset") == len(training) - 1,
        timeout=60,
    )
    assert state["model"]["counts"]["examples"] == examples, state
    assert state["model"]["version"] == len(training)
    assert state["learner"]["process"]["learning"], state["learner"]

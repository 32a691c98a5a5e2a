"""Scaling out and surviving crashes: real worker processes on a real broker."""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from collections import Counter

import orjson

from app.contracts import Transaction
from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from models.fraud_steps import count_in_card
from tables.card_features import card_features_at
from tables.card_state import CardState
from tests.integration.kafka_helpers import (
    assert_decided_once_or_repeated_identically,
    read_decisions,
    run,
    wait_for_stable_group,
)

STREAM = TransactionStreamConfig(seed=5, n_cards=150, n_merchants=40, days=24.0)


def _stream():
    events = list(generate_transaction_stream(STREAM))
    return events, {e.value["tx_id"] for e in events if e.topic == "transactions"}


def _stream_halves():
    events, transactions = _stream()
    middle = len(events) // 2
    return events[:middle], events[middle:], transactions


def _every_transaction_decided_once_or_repeated_identically(a, b, transactions):
    """The decisions, once they cover ``transactions``: none lost, and a decision repeated by a
    rebalance (only those in flight when partitions moved) repeated byte for byte."""
    decisions = read_decisions(a, len(transactions))
    logs = f"{a.log_tail()}\n---\n{b.log_tail()}"
    per_tx = assert_decided_once_or_repeated_identically(decisions, transactions, logs)
    repeated = {tx for tx, n in per_tx.items() if n > 1}
    # Zero is the target: four whole suites on 2026-11-30 repeated none in any rebalance test,
    # but earlier versions repeated 0-2 a run and once about 150 (6 %). This bounds it loosely.
    assert len(repeated) <= 0.15 * len(transactions), f"{sorted(repeated)}\n{logs}"
    return decisions


def _wait_for_model(worker, predicate, timeout=60.0):
    return worker.view_when("/fraud/model/", predicate, timeout)


def _wait_for_same_model(a, b, predicate, timeout=60.0):
    """Both workers' newest model snapshots, once they are the same version and satisfy ``predicate``."""
    deadline = time.monotonic() + timeout
    models: tuple[dict, dict] = ({}, {})
    while time.monotonic() < deadline:
        (status_a, model_a), (status_b, model_b) = a.get_json("/fraud/model/"), b.get_json("/fraud/model/")
        models = (model_a, model_b)
        same = status_a == status_b == 200 and model_a.get("model_version") == model_b.get("model_version")
        if same and predicate(model_a):
            return models
        time.sleep(0.5)
    raise AssertionError(f"the workers never agreed on a model: {models}\n{a.log_tail()}\n{b.log_tail()}")


def test_a_killed_worker_restarts_from_its_tables_and_model_snapshot_losing_nothing(worker_factory):
    first, second, transactions = _stream_halves()
    worker = worker_factory()
    worker.wait_ready()
    run(ensure_topics(worker.bootstrap, [worker.topic("transactions"), worker.topic("fraud-labels")], 4))
    run(produce_events(first, worker.bootstrap, topic_prefix=worker.prefix))
    first_tx = {e.value["tx_id"] for e in first if e.topic == "transactions"}
    read_decisions(worker, len(first_tx))
    before = _wait_for_model(worker, lambda m: m.get("counts", {}).get("labelled", 0) > 0)

    worker.stop(signal.SIGKILL)  # no goodbye: what was in memory or in flight is gone
    restarted = worker_factory(prefix=worker.prefix, workdir_of=worker)
    restarted.wait_ready()
    # The model comes back from its compacted snapshot topic, not from scratch.
    after = _wait_for_model(restarted, lambda m: m.get("model_version", 0) >= before["model_version"])
    assert after["metrics"]["labels"] >= before["metrics"]["labels"]

    run(produce_events(second, restarted.bootstrap, topic_prefix=restarted.prefix))
    decisions = read_decisions(restarted, len(transactions))
    per_tx = Counter(value["tx_id"] for _, value in decisions)
    assert set(per_tx) == transactions, restarted.log_tail()  # nothing accepted was lost
    # Records in flight at the kill may be answered again, only those before it, and only with
    # the very decision they had (same score, model version, time); the label join recognises
    # every repeat instead of learning from it twice.
    extra = {tx: n - 1 for tx, n in per_tx.items() if n > 1}
    assert set(extra) <= first_tx
    for tx_id in extra:
        assert len({orjson.dumps(value) for _, value in decisions if value["tx_id"] == tx_id}) == 1
    labels = sum(1 for e in first + second if e.topic == "fraud-labels")
    model = _wait_for_model(restarted, lambda m: m["metrics"]["labels"] >= labels)
    assert model["counts"].get("duplicate_decision", 0) == sum(extra.values())
    assert model["metrics"]["labels"] == labels
    # Card state survived the kill: its table was restored from the changelog.
    busiest = Counter(v["card_id"] for _, v in decisions).most_common(1)[0][0]
    status, card = restarted.get_json(f"/fraud/cards/{busiest}/")
    assert status == 200 and card["transactions_kept"] > 0


def test_two_workers_share_the_partitions_and_one_logical_model(worker_factory):
    events, transactions = _stream()
    a = worker_factory()
    b = worker_factory(prefix=a.prefix)
    a.wait_ready()
    b.wait_ready()
    # This test is about how two workers in one group share the work (joining while traffic
    # flows is the next test).
    run(wait_for_stable_group(a.bootstrap, a.group_id, members=2))
    # Produced at once, while the workers may still be recovering their first assignment:
    # nothing is committed yet, and faust alone would skip what it fetched meanwhile.
    run(ensure_topics(a.bootstrap, [a.topic("transactions"), a.topic("fraud-labels")], 4))
    run(produce_events(events, a.bootstrap, topic_prefix=a.prefix))
    decisions = _every_transaction_decided_once_or_repeated_identically(a, b, transactions)

    # One learner: both workers converge on the same snapshot, which has seen every label.
    labels = sum(1 for e in events if e.topic == "fraud-labels")
    # The learner may publish again later (traffic samples, swept join entries): compare the
    # two workers' views at one moment, not against a version seen earlier.
    model_a, model_b = _wait_for_same_model(a, b, lambda m: m.get("metrics", {}).get("labels", 0) >= labels)
    assert model_b["metrics"]["labels"] == model_a["metrics"]["labels"] == labels

    # Table views answer from either worker (routed to the owner of the key).
    card_id = decisions[-1][1]["card_id"]
    status_a, view_a = a.get_json(f"/fraud/cards/{card_id}/")
    status_b, view_b = b.get_json(f"/fraud/cards/{card_id}/")
    assert status_a == status_b == 200
    assert view_a == view_b
    assert b.get_json("/fraud/cards/no-such-card/")[0] == 404


def _second_worker_joining_mid_stream(worker_factory, events, rate: float, extra_env=None):
    """Worker a fed ``events`` at ``rate`` (in a thread, returned running) and worker b, which joins
    once a has state and commits: b restores tables from their changelogs and takes partitions
    over mid-stream, while transactions keep coming."""
    extra_env = extra_env or {}
    a = worker_factory(extra_env=extra_env)
    a.wait_ready()
    run(ensure_topics(a.bootstrap, [a.topic("transactions"), a.topic("fraud-labels")], 4))
    feed = threading.Thread(
        target=run, args=(produce_events(events, a.bootstrap, topic_prefix=a.prefix, rate=rate),)
    )
    feed.start()
    time.sleep(2.0)
    b = worker_factory(prefix=a.prefix, extra_env=extra_env)
    b.wait_ready()
    return a, b, feed


def test_a_worker_joining_while_transactions_flow_loses_nothing(worker_factory):
    events, transactions = _stream()
    a, b, feed = _second_worker_joining_mid_stream(worker_factory, events, rate=400)
    feed.join()
    _every_transaction_decided_once_or_repeated_identically(a, b, transactions)


def _card_features_recomputed(events, card_id: str) -> dict[str, float]:
    """The card's features after all its transactions, computed from the input alone."""
    card = CardState.decode(None)
    for event in events:
        if event.topic == "transactions" and event.value["card_id"] == card_id:
            count_in_card(card, Transaction.from_payload(event.value))
    return card_features_at(card.log, len(card.log.ts) - 1)


def test_a_worker_whose_rocksdb_was_deleted_rebuilds_its_cards_from_the_changelog(worker_factory):
    first, second, transactions = _stream_halves()
    worker = worker_factory()
    worker.wait_ready()
    run(ensure_topics(worker.bootstrap, [worker.topic("transactions"), worker.topic("fraud-labels")], 4))
    run(produce_events(first, worker.bootstrap, topic_prefix=worker.prefix))
    read_decisions(worker, len({e.value["tx_id"] for e in first if e.topic == "transactions"}))

    worker.stop()
    shutil.rmtree(worker.workdir / "data")  # the disk is gone; the changelogs are not
    restarted = worker_factory(prefix=worker.prefix, workdir_of=worker)
    restarted.wait_ready()
    run(produce_events(second, restarted.bootstrap, topic_prefix=restarted.prefix))
    decisions = read_decisions(restarted, len(transactions))
    assert {value["tx_id"] for _, value in decisions} == transactions, restarted.log_tail()

    # Every card's features equal a recomputation from the input: none was lost or doubled.
    _busiest_cards_match_a_recomputation(restarted, first + second)


def _busiest_cards_match_a_recomputation(worker, events, n: int = 5) -> None:
    cards = Counter(e.value["card_id"] for e in events if e.topic == "transactions")
    for card_id, _ in cards.most_common(n):
        status, view = worker.get_json(f"/fraud/cards/{card_id}/")
        assert status == 200, view
        assert view["features"] == _card_features_recomputed(events, card_id), card_id


def test_scaling_from_one_to_three_workers_and_back_mid_stream_loses_nothing(worker_factory):
    events, transactions = _stream()
    a = worker_factory()
    a.wait_ready()
    run(ensure_topics(a.bootstrap, [a.topic("transactions"), a.topic("fraud-labels")], 4))
    feed = threading.Thread(
        target=run, args=(produce_events(events, a.bootstrap, topic_prefix=a.prefix, rate=120),)
    )
    feed.start()
    time.sleep(4)
    b, c = worker_factory(prefix=a.prefix), worker_factory(prefix=a.prefix)
    b.wait_ready()
    c.wait_ready()
    run(wait_for_stable_group(a.bootstrap, a.group_id, members=3))
    time.sleep(3)
    b.stop()  # both leave the group while transactions flow
    c.stop()
    feed.join()
    _every_transaction_decided_once_or_repeated_identically(a, b, transactions)
    _busiest_cards_match_a_recomputation(a, events)


def test_a_worker_killed_three_times_at_random_moments_loses_nothing(worker_factory):
    events, transactions = _stream()
    moments = random.Random(7)
    first = worker_factory(extra_env={"EDDY_SESSION_TIMEOUT_S": "6"})
    first.wait_ready()
    run(ensure_topics(first.bootstrap, [first.topic("transactions"), first.topic("fraud-labels")], 4))
    feed = threading.Thread(
        target=run, args=(produce_events(events, first.bootstrap, topic_prefix=first.prefix, rate=150),)
    )
    feed.start()
    worker = first
    for _ in range(3):
        time.sleep(moments.uniform(1.0, 5.0))
        worker.stop(signal.SIGKILL)
        worker = worker_factory(prefix=first.prefix, workdir_of=worker, extra_env=first.extra_env)
        worker.wait_ready()
    feed.join()
    decisions = read_decisions(worker, len(transactions), isolation="read_committed")
    assert_decided_once_or_repeated_identically(decisions, transactions, worker.log_tail())
    _busiest_cards_match_a_recomputation(worker, events)


def test_when_the_learners_worker_dies_mid_publish_learning_goes_on_elsewhere_learning_each_label_once(
    worker_factory,
):
    first, second, transactions = _stream_halves()
    # Snapshots every few training messages: the kill lands while one is being published.
    fast = {"EDDY_SESSION_TIMEOUT_S": "6", "EDDY_FRAUD_SNAPSHOT_EVERY": "3"}
    a = worker_factory(extra_env=fast)
    b = worker_factory(prefix=a.prefix, extra_env=fast)
    a.wait_ready()
    b.wait_ready()
    run(ensure_topics(a.bootstrap, [a.topic("transactions"), a.topic("fraud-labels")], 4))
    run(wait_for_stable_group(a.bootstrap, a.group_id, members=2))
    run(produce_events(first, a.bootstrap, topic_prefix=a.prefix))
    _wait_for_model(a, lambda m: m.get("counts", {}).get("labelled", 0) > 0)

    learner, survivor = (a, b) if "training_offset" in a.get_json("/fraud/state/")[1]["learner"] else (b, a)
    learner.stop(signal.SIGKILL)
    run(produce_events(second, survivor.bootstrap, topic_prefix=survivor.prefix))
    decisions = read_decisions(survivor, len(transactions))
    assert {value["tx_id"] for _, value in decisions} == transactions, survivor.log_tail()

    # The survivor took the training partition over from the last snapshot that made it and
    # replayed the rest: every label learned exactly once, none twice, none lost.
    labels = sum(1 for e in first + second if e.topic == "fraud-labels")
    model = _wait_for_model(survivor, lambda m: m["metrics"]["labels"] >= labels, timeout=120)
    assert model["metrics"]["labels"] == labels, model
    assert "training_offset" in survivor.get_json("/fraud/state/")[1]["learner"]


def test_with_standby_replicas_a_killed_workers_cards_come_back_complete_from_the_standbys(worker_factory):
    events, transactions = _stream()
    standby = {"EDDY_STANDBY_REPLICAS": "1", "EDDY_SESSION_TIMEOUT_S": "6"}
    # Each worker then mirrors the other's partitions as standbys, which start reading the
    # changelogs as the rebalance's recovery ends and follow them while the traffic goes on
    # (the feed lasts about 16 s).
    a, b, feed = _second_worker_joining_mid_stream(worker_factory, events, rate=120, extra_env=standby)
    run(wait_for_stable_group(a.bootstrap, a.group_id, members=2))
    time.sleep(3.0)
    assert feed.is_alive(), "the feed ended before b was killed: the standbys mirrored no traffic"
    b.stop(signal.SIGKILL)  # a promotes its standbys of b's partitions and replays only their tail
    feed.join()
    _every_transaction_decided_once_or_repeated_identically(a, b, transactions)
    # Every card, b's included, equals a recomputation from the input: no changelog event the
    # standbys skipped, none applied twice.
    cards = {e.value["card_id"] for e in events if e.topic == "transactions"}
    _busiest_cards_match_a_recomputation(a, events, n=len(cards))

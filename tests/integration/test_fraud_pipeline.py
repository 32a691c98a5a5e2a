"""The fraud pipeline end to end: a real worker process, a real broker."""

from __future__ import annotations

import time
from collections import Counter

import orjson

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.stages.outputs import key_partition
from tests.integration.kafka_helpers import read_topic, run, send_raw

SMALL_STREAM = TransactionStreamConfig(seed=3, n_cards=120, n_merchants=40, days=20.0)

BAD_TRANSACTIONS = [
    (b"card-x", b"{not json", "not valid UTF-8 JSON"),
    (b"card-x", b'{"tx_id":"b1","card_id":"card-x","amount":3,"ts":0}', "merchant_id"),
    (
        b"card-x",
        b'{"tx_id":"b2","card_id":"card-x","merchant_id":"m","amount":-1,"ts":0}',
        "amount",
    ),
    (
        b"card-x",
        b'{"tx_id":"b3","card_id":"card-x","merchant_id":"m","amount":"5","ts":0}',
        "amount",
    ),
    (
        b"card-x",
        b'{"tx_id":"b4","card_id":"card-x","merchant_id":"m","amount":5,"ts":"soon"}',
        "ts",
    ),
    (b"card-y", b'{"tx_id":"b5","card_id":"card-x","merchant_id":"m","amount":5,"ts":0}', "key"),
    (b"card-x", b"[1,2]", "JSON object"),
    (b"card-x", b'{"tx_id":"b6","card_id":"card-x","merchant_id":"m","amount":9e307,"ts":0}', "<= 1e+12"),
    (
        b"card-x",
        b'{"tx_id":"b7","card_id":"card-x","merchant_id":"m","amount":5,"ts":"3000-01-01T00:00:00Z"}',
        "ahead of this worker's clock",
    ),
    (b"card-x", None, "missing"),
]
BAD_LABELS = [
    (b"t-1", b'{"tx_id":"t-1","is_fraud":"yes","ts":0}', "is_fraud"),
    (b"t-2", b"\xff\xfe", "JSON"),
]


def test_every_transaction_gets_exactly_one_decision_and_bad_records_are_dead_lettered(
    worker_factory,
):
    worker = worker_factory()
    worker.wait_ready()
    events = list(generate_transaction_stream(SMALL_STREAM))
    transactions = [e for e in events if e.topic == "transactions"]
    duplicate = transactions[5]

    run(ensure_topics(worker.bootstrap, [worker.topic("transactions"), worker.topic("fraud-labels")], 4))
    run(produce_events(events, worker.bootstrap, topic_prefix=worker.prefix))
    run(
        send_raw(
            worker.bootstrap,
            worker.topic("transactions"),
            [(k, v) for k, v, _ in BAD_TRANSACTIONS]
            # The same transaction again is answered once; one with the same id but another
            # amount is a conflict and goes to the dead letters.
            + [(duplicate.key.encode(), orjson.dumps(duplicate.value))]
            + [(duplicate.key.encode(), orjson.dumps({**duplicate.value, "amount": 99_999.0}))]
            # The same tx_id on another card: decided there, then refused by the label join.
            + [(b"card-reuser", orjson.dumps({**duplicate.value, "card_id": "card-reuser"}))],
        )
    )
    run(send_raw(worker.bootstrap, worker.topic("fraud-labels"), [(k, v) for k, v, _ in BAD_LABELS]))
    # A label on another partition than murmur2 gives its tx_id could never meet its decision.
    stranded = transactions[7].value["tx_id"]
    wrong_partition = (key_partition(stranded.encode(), 4) + 1) % 4
    stranded_label = orjson.dumps({"tx_id": stranded, "is_fraud": False, "ts": transactions[7].value["ts"]})
    run(
        send_raw(
            worker.bootstrap,
            worker.topic("fraud-labels"),
            [(stranded.encode(), stranded_label)],
            wrong_partition,
        )
    )

    decisions = run(
        read_topic(
            worker.bootstrap,
            worker.topic("fraud-decisions"),
            until=lambda records: len(records) >= len(transactions) + 1,
            timeout=120,
            settle=3.0,
        )
    )
    per_tx = Counter(value["tx_id"] for _, value in decisions)
    assert set(per_tx) == {tx.value["tx_id"] for tx in transactions}, worker.log_tail()
    reused = duplicate.value["tx_id"]
    assert per_tx[reused] == 2  # once for each card
    assert max(n for tx_id, n in per_tx.items() if tx_id != reused) == 1
    for key, value in decisions:
        assert key.decode() == value["tx_id"]
        assert 0.0 <= value["score"] <= 1.0
        assert value["decision"] in {"approve", "review", "block"}
        assert {"card_count_1h", "merchant_count_24h", "hour"} <= set(value["features"])
        assert 0 <= value["latency_ms"] < 60_000  # from the append time, in milliseconds

    expected_letters = len(BAD_TRANSACTIONS) + 1 + len(BAD_LABELS) + 2
    letters = run(
        read_topic(
            worker.bootstrap,
            worker.topic("dead-letters"),
            until=lambda records: len(records) >= expected_letters,
            timeout=60,
            settle=2.0,
        )
    )
    assert len(letters) == expected_letters
    errors = sorted(value["error"] for _, value in letters)
    for _, _, reason in BAD_TRANSACTIONS + BAD_LABELS:
        assert any(reason in error for error in errors), (reason, errors)
    assert sum("already seen for this card" in error for error in errors) == 1
    assert sum(f"tx_id {reused!r} reused" in error and "card-reuser" in error for error in errors) == 1
    assert sum(f"label for {stranded!r} arrived on partition {wrong_partition}" in e for e in errors) == 1
    by_offset = {(v["source_topic"], v["offset"]): v for _, v in letters}
    first_bad = by_offset[
        (
            worker.topic("transactions"),
            min(
                v["offset"]
                for v in by_offset.values()
                if v["source_topic"] == worker.topic("transactions")
                and v["partition"] is not None
                and v["value_text"] == "{not json"
            ),
        )
    ]
    assert first_bad["value_base64"] == "e25vdCBqc29u"  # the original bytes, untouched

    # The worker kept going: the learner saw the labels and published a model.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, model = worker.get_json("/fraud/model/")
        if status == 200 and model.get("counts", {}).get("labelled", 0) > 0:
            break
        time.sleep(1)
    assert model["model_version"] >= 1, model
    assert model["metrics"]["labels"] > 0


def _wait_for_status(worker, path: str, status: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.get_json(path)[0] == status:
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} never answered {status}\n{worker.log_tail()}")


def _transaction(tx_id: str, card_id: str, merchant_id: str, ts: float) -> tuple[bytes, bytes]:
    value = {"tx_id": tx_id, "card_id": card_id, "merchant_id": merchant_id, "amount": 12.5, "ts": ts}
    return card_id.encode(), orjson.dumps(value)


def test_cards_and_merchants_idle_for_a_month_of_event_time_are_dropped_with_a_tombstone(
    worker_factory,
):
    worker = worker_factory(extra_env={"EDDY_SWEEP_INTERVAL_S": "1"})
    worker.wait_ready()
    topic = worker.topic("transactions")
    run(ensure_topics(worker.bootstrap, [topic, worker.topic("fraud-labels")], 4))
    start = 1_780_000_000.0
    run(send_raw(worker.bootstrap, topic, [_transaction("old-1", "card-old", "m-old", start)]))
    _wait_for_status(worker, "/fraud/cards/card-old/", 200)
    _wait_for_status(worker, "/fraud/merchants/m-old/", 200)  # its activity reached the view
    # Forty days later, on every partition: nothing can reach the old card's month any more.
    later = start + 40 * 86_400.0
    run(
        send_raw(
            worker.bootstrap,
            topic,
            [_transaction(f"new-{i}", f"card-{i}", f"m-{i % 20}", later + i) for i in range(60)],
        )
    )

    _wait_for_status(worker, "/fraud/cards/card-old/", 404)
    # The merchant view follows the merchant table's changelog: its tombstone comes a moment later.
    _wait_for_status(worker, "/fraud/merchants/m-old/", 404)
    assert worker.get_json("/fraud/cards/card-7/")[0] == 200  # active cards stay
    status, state = worker.get_json("/fraud/state/")
    assert status == 200 and state["swept"]["idle_cards"] == 1, state
    assert state["swept"].get("idle_merchants") == 1, state

    # The tombstone follows the card's value in its changelog partition, so a restore drops it too.
    changelog = f"{worker.group_id}-fraud-card-activity-changelog"
    records = run(
        read_topic(
            worker.bootstrap,
            changelog,
            until=lambda rs: sum(r.key == b"card-old" for r in rs) >= 2,
            timeout=30,
            decode=False,
        )
    )
    old = [r for r in records if r.key == b"card-old"]
    assert [r.value is None for r in old] == [False, True]
    assert old[0].partition == old[1].partition

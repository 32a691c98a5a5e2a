"""Drill: ten thousand poison records of every kind mixed into a valid stream, one real worker.

Every poison record must reach ``dead-letters`` with its reason (or, on the internal training
and snapshot topics, be refused and counted), every valid transaction must be decided exactly
once, and the worker must never restart.
"""

from __future__ import annotations

import base64
import time
from collections import Counter

import orjson

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.stages.outputs import key_partition
from models.snapshots import Snapshot
from tests.integration.kafka_helpers import read_decisions, read_topic, run, send_raw

STREAM = TransactionStreamConfig(seed=11, n_cards=80, n_merchants=30, days=10.0)
PARTITIONS = 4
ROUNDS = 904  # x 11 kinds of bad transactions: with the rest, 10,009 poison records


def _bad_transactions(i: int) -> list[tuple[bytes, bytes | None, str]]:
    """Eleven kinds of bad transaction, numbered ``i`` so that each record is unique."""
    card = f"card-p{i}"

    def tx(**fields) -> bytes:
        return orjson.dumps(
            {"tx_id": f"p{i}", "card_id": card, "merchant_id": "m", "amount": 5, "ts": 0, **fields}
        )

    return [
        (card.encode(), b"{not json %d" % i, "not valid UTF-8 JSON"),
        (
            card.encode(),
            orjson.dumps({"tx_id": f"p{i}", "card_id": card, "amount": 5, "ts": 0}),
            "merchant_id",
        ),
        (card.encode(), tx(amount=-1 - i), "amount: must be finite"),
        (card.encode(), tx(amount=str(i)), "amount: expected a number"),
        (card.encode(), tx(amount=9e307 - i), "<= 1e+12"),
        (card.encode(), tx(ts=f"{3000 + i % 900}-01-01T00:00:00Z"), "ahead of this worker's clock"),
        (card.encode(), tx(ts=1_767_225_600_000 + i), "too large for epoch seconds"),
        (b"someone-else", tx(), "key: expected the record's card_id"),
        (card.encode(), b"[%d]" % i, "expected a JSON object"),
        (card.encode(), None, "missing (null record)"),
        (card.encode(), tx(amount=True, note=i), "amount: expected a number"),
    ]


def test_ten_thousand_poison_records_are_dead_lettered_with_reasons_and_the_worker_keeps_deciding(
    worker_factory,
):
    worker = worker_factory()
    worker.wait_ready()
    transactions_topic, labels_topic = worker.topic("transactions"), worker.topic("fraud-labels")
    run(ensure_topics(worker.bootstrap, [transactions_topic, labels_topic], PARTITIONS))
    pid = worker.process.pid

    events = list(generate_transaction_stream(STREAM))
    valid = [e for e in events if e.topic == "transactions"]
    bad = [record for i in range(ROUNDS) for record in _bad_transactions(i)]
    oversized = [(f"card-big{i}".encode(), b"x" * 600_000, "not valid UTF-8 JSON") for i in range(3)]
    bad_labels = [(f"t-bad{i}".encode(), orjson.dumps({"tx_id": f"t-bad{i}", "is_fraud": "yes", "ts": 0}),
                   "is_fraud") for i in range(60)]  # fmt: skip
    stranded = valid[3].value["tx_id"]
    wrong = (key_partition(stranded.encode(), PARTITIONS) + 1) % PARTITIONS

    # Poison first, in the middle and last: the valid stream has to get through all of it.
    half = len(bad) // 2
    run(send_raw(worker.bootstrap, transactions_topic, [(k, v) for k, v, _ in bad[:half]]))
    run(produce_events(events, worker.bootstrap, topic_prefix=worker.prefix))
    run(send_raw(worker.bootstrap, transactions_topic, [(k, v) for k, v, _ in bad[half:] + oversized]))
    run(send_raw(worker.bootstrap, labels_topic, [(k, v) for k, v, _ in bad_labels]))
    label = orjson.dumps({"tx_id": stranded, "is_fraud": False, "ts": valid[3].value["ts"]})
    run(send_raw(worker.bootstrap, labels_topic, [(stranded.encode(), label)], partition=wrong))
    # Internal topics: an undecodable merchant delta, a training message that is not a list,
    # and a snapshot nobody signed (with a version high enough to pin the model if taken).
    run(send_raw(worker.bootstrap, worker.topic("fraud-merchant-events"), [(b"m-x", b"garbage")]))
    run(send_raw(worker.bootstrap, worker.topic("fraud-training"), [(b"fraud", b'{"not": "a list"}')]))
    forged = Snapshot("fraud", version=10**9, model=None).encode(key=b"not this deployment's key")
    run(send_raw(worker.bootstrap, worker.topic("fraud-model-snapshots"), [(b"fraud", forged)]))

    decisions = read_decisions(worker, len(valid))
    per_tx = Counter(value["tx_id"] for _, value in decisions)
    assert set(per_tx) == {e.value["tx_id"] for e in valid}, worker.log_tail()
    assert max(per_tx.values()) == 1

    expected = len(bad) + len(oversized) + len(bad_labels) + 1 + 1  # + stranded label + merchant delta
    letters = run(
        read_topic(
            worker.bootstrap,
            worker.topic("dead-letters"),
            until=lambda records: len(records) >= expected,
            timeout=120,
            settle=3.0,
        )
    )
    assert len(letters) == expected, worker.log_tail()
    reasons = {(transactions_topic, v): reason for _, v, reason in bad}
    reasons.update({(labels_topic, v): reason for _, v, reason in bad_labels})
    for _, letter in letters:
        original = None if letter["value_base64"] is None else base64.b64decode(letter["value_base64"])
        if letter.get("truncated"):
            assert letter["source_topic"] == transactions_topic and "not valid UTF-8 JSON" in letter["error"]
            assert len(orjson.dumps(letter)) < 1_000_000
        elif (letter["source_topic"], original) in reasons:
            assert reasons[(letter["source_topic"], original)] in letter["error"], letter
        elif letter["source_topic"] == labels_topic:
            assert f"label for {stranded!r} arrived on partition {wrong}" in letter["error"]
        else:
            assert letter["source_topic"] == worker.topic("fraud-merchant-events"), letter
            assert "merchant" in letter["error"]
    assert sum(1 for _, letter in letters if letter.get("truncated")) == len(oversized)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = worker.get_json("/fraud/state/")[1]["learner"]
        model = worker.get_json("/fraud/model/")[1]
        if (
            state["snapshots_refused"] >= 1
            and model.get("counts", {}).get("refused_training_records", 0) >= 1
        ):
            break
        time.sleep(1)
    assert state["snapshots_refused"] >= 1, state
    assert model["counts"]["refused_training_records"] >= 1, model
    assert model["model_version"] < 10**9  # the forged snapshot was not taken
    assert worker.process.poll() is None and worker.process.pid == pid  # never restarted

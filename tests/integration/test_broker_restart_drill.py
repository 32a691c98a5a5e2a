"""Drill: the broker stops for ten seconds while transactions flow; the worker resumes on its own."""

from __future__ import annotations

import os
import threading
import time

import pytest

from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from broker import LocalKafka
from tests.integration.kafka_helpers import assert_decided_once_or_repeated_identically, read_decisions, run

STREAM = TransactionStreamConfig(seed=5, n_cards=150, n_merchants=40, days=12.0)


@pytest.mark.skipif(bool(os.environ.get("KAFKA_BROKER")), reason="restarts the project's own local broker")
def test_after_a_broker_restart_mid_stream_every_transaction_is_decided_and_never_differently(worker_factory):
    kafka = LocalKafka.from_env()
    if not kafka.pid_file.exists():
        pytest.skip("the running broker was not started from this checkout: it is not ours to restart")
    worker = worker_factory()
    worker.wait_ready()
    run(ensure_topics(worker.bootstrap, [worker.topic("transactions"), worker.topic("fraud-labels")], 4))
    pid = worker.process.pid
    events = list(generate_transaction_stream(STREAM))
    transactions = {e.value["tx_id"] for e in events if e.topic == "transactions"}

    failures: list[BaseException] = []

    def feed() -> None:
        try:
            # Like many producers in the wild: at least once, so a resend may duplicate a record.
            # Sends are retried for as long as the broker may take to come back (below).
            feed_events = produce_events(
                events,
                worker.bootstrap,
                topic_prefix=worker.prefix,
                rate=300,
                idempotent=False,
                retry_for=330,
            )
            run(feed_events)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    feeding = threading.Thread(target=feed)
    feeding.start()
    time.sleep(4)  # the worker is deciding
    assert kafka.stop()
    time.sleep(10)
    kafka.start(timeout=300)  # it reloads every partition it has: slow on a broker used for long
    feeding.join(timeout=300)
    assert not failures and not feeding.is_alive(), failures

    decisions = read_decisions(worker, len(transactions))
    assert_decided_once_or_repeated_identically(decisions, transactions, worker.log_tail())
    assert worker.process.poll() is None and worker.process.pid == pid  # resumed, not restarted

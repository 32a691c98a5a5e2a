"""The batch baseline's point-in-time guarantees and the streaming vs batch report, on small streams."""

from __future__ import annotations

import math
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest

from app.comparison.__main__ import main
from app.comparison.batch import BatchFraudBaseline
from app.comparison.report import PLOTS, run_comparison, summarize
from app.simulation.transactions import (
    TRANSACTIONS_TOPIC,
    SimulatedEvent,
    TransactionStreamConfig,
    generate_transaction_stream,
)
from tables.card_features import add_transaction, card_log
from tables.merchant_features import MerchantActivity
from tables.transaction_features import transaction_features
from tables.windows import DAY, HOUR


def _events(**overrides: Any) -> list[SimulatedEvent]:
    config = {"seed": 5, "n_cards": 60, "n_merchants": 30, "days": 10, "label_delay_seconds": DAY}
    return list(generate_transaction_stream(TransactionStreamConfig(**{**config, **overrides})))


def _feed(baseline: BatchFraudBaseline, event: SimulatedEvent) -> dict[str, float] | None:
    """Give ``event`` to ``baseline``; the features a transaction was scored with."""
    if event.topic == TRANSACTIONS_TOPIC:
        return baseline.transaction(event.value)[1]
    baseline.label(event.value)
    return None


def _recomputed(events: list[SimulatedEvent], tx: dict[str, Any], job_time: float) -> dict[str, float]:
    """Features of ``tx`` from a fresh replay of the events before ``job_time``: rows of its latest
    card and merchant transactions, labels counted at the merchant of their transaction."""
    log, merchant = card_log(None), MerchantActivity()
    card_row: dict[str, float] = {}
    merchant_row: dict[str, float] = {}
    merchant_of: dict[str, str] = {}
    for event in events:
        if event.event_time >= job_time:
            break
        value = event.value
        if event.topic == TRANSACTIONS_TOPIC:
            merchant_of[value["tx_id"]] = value["merchant_id"]
            if value["card_id"] == tx["card_id"]:
                card_row = add_transaction(
                    log,
                    tx_id=value["tx_id"],
                    ts=value["ts"],
                    amount=value["amount"],
                    merchant_id=value["merchant_id"],
                    country=value["country"],
                )
            if value["merchant_id"] == tx["merchant_id"]:
                merchant_row = merchant.add_transaction(value["ts"], value["amount"])
        elif merchant_of[value["tx_id"]] == tx["merchant_id"]:
            merchant.add_label(value["ts"], value["is_fraud"])
    return transaction_features(
        amount=tx["amount"],
        ts=tx["ts"],
        channel=tx["channel"],
        card_features=card_row,
        merchant_features=merchant_row,
    )


def test_batch_features_between_jobs_are_those_of_the_last_job() -> None:
    events = _events(label_jitter_seconds=6 * HOUR)
    baseline = BatchFraudBaseline(every_hours=6)
    scored = []
    card_seen: dict[str, float] = {}
    for event in events:
        features = _feed(baseline, event)
        if features is None:
            continue
        tx = event.value
        stale = card_seen.get(tx["card_id"], -math.inf) >= baseline.last_job  # a card tx since the job
        scored.append((tx, features, baseline.last_job, stale))
        card_seen[tx["card_id"]] = tx["ts"]
    stale_ones = [item for item in scored if item[3]][:8]
    sample = scored[::25] + stale_ones
    assert len(stale_ones) == 8 and len(sample) > 15
    for tx, features, job_time, _ in sample:
        assert job_time <= tx["ts"] < job_time + 6 * HOUR
        assert features == _recomputed(events, tx, job_time)


def test_no_job_learns_from_a_label_received_after_it() -> None:
    events = _events(label_delay_seconds=2 * HOUR, label_jitter_seconds=3 * HOUR)
    label_ts = [e.event_time for e in events if e.topic != TRANSACTIONS_TOPIC]
    fraud_label_ts = [e.event_time for e in events if e.topic != TRANSACTIONS_TOPIC and e.value["is_fraud"]]
    baseline = BatchFraudBaseline(every_hours=1)
    for event in events:
        _feed(baseline, event)
        # The model scoring now has learned exactly the frauds labelled before the last job.
        assert baseline.learner.model.frauds_learned == bisect_left(fraud_label_ts, baseline.last_job)
    assert fraud_label_ts and baseline.learner.model.frauds_learned > 0
    learned = 0
    for job in baseline.jobs:
        learned += job.labels
        assert job.labels == 0 or job.latest_label_ts < job.time
        assert learned == bisect_left(label_ts, job.time)


def test_a_label_arriving_at_the_job_time_waits_for_the_next_job() -> None:
    job_time = 10 * HOUR
    baseline = BatchFraudBaseline(every_hours=1)
    tx = {"card_id": "c1", "merchant_id": "m1", "amount": 40.0, "country": "FR", "channel": "online"}
    baseline.transaction({**tx, "tx_id": "t1", "ts": job_time - 1_000.0})
    baseline.transaction({**tx, "tx_id": "t2", "ts": job_time - 500.0})
    baseline.label({"tx_id": "t1", "is_fraud": True, "ts": job_time - 0.001})
    baseline.label({"tx_id": "t2", "is_fraud": True, "ts": job_time})
    _, features = baseline.transaction({**tx, "tx_id": "t3", "ts": job_time + 100.0})
    job = baseline.jobs[-1]
    assert (job.time, job.transactions, job.labels, job.latest_label_ts) == (job_time, 2, 1, job_time - 0.001)
    assert baseline.learner.model.frauds_learned == 1
    assert features["card_count_1h"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_beats_daily_batch_on_average_precision(seed: int) -> None:
    config = TransactionStreamConfig(seed=seed, n_cards=400, days=21, label_delay_seconds=2 * DAY)
    comparison = run_comparison(config, every_hours=(24,))
    streaming, batch = summarize(comparison)
    for summary in (streaming, batch):
        numbers = [value for value in vars(summary).values() if isinstance(value, float)]
        numbers += [*summary.caught.values(), *summary.caught_before_next.values()]
        assert all(math.isfinite(value) for value in numbers)
    assert batch.jobs >= 21 and batch.staleness_hours_p95 < 24
    assert streaming.average_precision > batch.average_precision


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--seed", "3", "--cards", "120", "--days", "12"]
    assert main([*args, "--label-delay-days", "2", "--every-hours", "1", "24"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| | streaming | batch 1h | batch 24h |" in readme
    assert "--cards 120 --merchants 400 --days 12 --label-delay-days 2 --every-hours 1 24" in readme
    for name in PLOTS:
        assert f"]({name})" in readme
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert "streaming: AP" in capsys.readouterr().out

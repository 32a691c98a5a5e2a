"""A batch baseline for eddy's fraud pipeline: periodic jobs, precomputed features, lookup scoring.

Every ``every_hours`` of event time, at the multiples of that period since the
Unix epoch (midnight UTC for daily jobs), a job runs over everything that
arrived strictly before its time:

Features
    The job replays the transactions that arrived since the previous job, in
    arrival order, through the streaming feature functions (card logs,
    :class:`~tables.merchant_features.MerchantActivity`, labels counted where
    the streaming pipeline counts them) and stores, per card and per merchant,
    the feature row of its latest transaction (so a label shows in a merchant's
    row from the merchant's next transaction on).  Between jobs these rows do not
    change: a transaction is scored with the rows of the last job (no later
    transaction, not itself) plus its own amount, time of day and channel, the
    "precomputed features + lookup" pattern.  A card or merchant the last job
    had not seen has no row; its features are absent, which the model reads as
    average values.

Model
    The same :class:`~models.fraud.FraudModel` as streaming, fed the same kind of
    training records: each label joined (by :mod:`tables.label_join`) with the
    features its transaction was scored with, all frauds and a sample of the
    legitimate, plus a traffic sample for the scaler and the anomaly detector.
    Logged rather than recomputed point-in-time features: the model learns from
    the stale rows it is served, so there is no training/serving skew, and
    those rows only hold data from before the job that served them.  A job
    applies the records that arrived since the previous job in arrival
    order, so its model is the one-pass model of every record received before
    its time: the same model a from-scratch retrain in that order gives.
    Scores use the model as the last job left it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from app.contracts import MerchantEvents, Transaction
from models.fraud import FraudModel
from models.fraud_steps import (
    DecisionPolicy,
    Redelivered,
    apply_merchant_events,
    count_in_card,
    held_for_label,
    in_traffic_sample,
    learns_from,
    score_transaction,
    traffic_record,
)
from models.learner import FraudLearner
from tables import label_join as join
from tables.card_state import CardState
from tables.merchant_features import MerchantActivity
from tables.windows import HOUR


@dataclass(frozen=True, slots=True)
class BatchJob:
    """What one job did."""

    time: float
    transactions: int
    labels: int
    latest_label_ts: float
    seconds: float


class BatchFraudBaseline:
    """Scores each transaction on arrival with the features and model of the last periodic job.

    >>> baseline = BatchFraudBaseline(every_hours=24)
    >>> tx = {"tx_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 20.0,
    ...       "ts": 90_000.0, "country": "FR", "channel": "pos"}
    >>> score, features = baseline.transaction(tx)
    >>> baseline.last_job, "card_count_1h" in features
    (86400.0, False)
    >>> _, features = baseline.transaction({**tx, "tx_id": "t2", "ts": 200_000.0})
    >>> baseline.last_job, features["card_count_1h"]
    (172800.0, 1)
    """

    def __init__(
        self, every_hours: float, legit_sample_rate: float = 0.25, model: FraudModel | None = None
    ) -> None:
        if every_hours <= 0:
            raise ValueError("every_hours must be > 0")
        self.period = every_hours * HOUR
        self.legit_sample_rate = legit_sample_rate
        self.learner = FraudLearner(model or FraudModel(legit_sample_rate=legit_sample_rate))
        self.policy = DecisionPolicy()
        self.cards: dict[str, CardState] = {}
        self.merchants: dict[str, MerchantActivity] = {}
        self.card_rows: dict[str, dict[str, float]] = {}
        self.merchant_rows: dict[str, dict[str, float]] = {}
        self.pending = join.InMemoryJoin()
        self.jobs: list[BatchJob] = []
        self.last_job = -math.inf
        self._arrived: list[dict[str, Any]] = []

    def advance(self, now: float) -> None:
        """Run the job due at the latest job time at or before event time ``now``, if not yet run.

        One job stands for any empty ones skipped: they would have changed nothing.
        """
        due = math.floor(now / self.period) * self.period
        if due > self.last_job:
            self._run_job(due)

    def transaction(self, tx: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """Score one transaction payload with the last job's rows and model (tx_ids must be unique)."""
        self.advance(tx["ts"])
        transaction = Transaction.from_payload(tx)
        decision = score_transaction(
            transaction,
            self.card_rows.get(transaction.card_id, {}),
            self.merchant_rows.get(transaction.merchant_id, {}),
            self.learner.model,
            self.learner.version,
            self.policy,
            received_at=transaction.ts,
            now=transaction.ts,
        )
        self._arrived.append({"kind": "transaction", "tx": transaction})
        if in_traffic_sample(transaction.tx_id):
            self._arrived.append(traffic_record(decision.features))
        learn = learns_from(transaction.tx_id, self.legit_sample_rate)
        self._joined(self.pending.decision(transaction.tx_id, held_for_label(decision), learn))
        return decision.score, decision.features

    def label(self, label: dict[str, Any]) -> None:
        """Join one ``fraud-labels`` payload; the next job learns from it."""
        self.advance(label["ts"])
        tx_id = label["tx_id"]
        arrival = {"is_fraud": label["is_fraud"], "ts": label["ts"]}
        self._joined(self.pending.label(tx_id, arrival))

    def _joined(self, outputs: list[dict[str, Any]]) -> None:
        self._arrived.extend(outputs)

    def _run_job(self, at: float) -> None:
        started = time.perf_counter()
        transactions = labels = 0
        latest_label_ts = -math.inf
        for record in self._arrived:
            if record["kind"] == "transaction":
                self._replay(record["tx"])
                transactions += 1
                continue
            if record["kind"] == "labelled":
                label = MerchantEvents([], [(record["label_ts"], record["is_fraud"])])
                apply_merchant_events(self.merchants[record["merchant_id"]], label)
                labels += 1
                latest_label_ts = max(latest_label_ts, record["label_ts"])
            self.learner.apply(record)
        self._arrived = []
        self.last_job = at
        seconds = time.perf_counter() - started
        self.jobs.append(BatchJob(at, transactions, labels, latest_label_ts, seconds))

    def _replay(self, tx: Transaction) -> None:
        """Add a transaction to its card and merchant and store their new feature rows."""
        card = self.cards.get(tx.card_id)
        if card is None:
            card = self.cards[tx.card_id] = CardState.decode(None)
        card_row = count_in_card(card, tx)
        if isinstance(card_row, Redelivered):
            raise ValueError(f"duplicate tx_id {tx.tx_id!r}")
        self.card_rows[tx.card_id] = card_row
        merchant = self.merchants.get(tx.merchant_id)
        if merchant is None:
            merchant = self.merchants[tx.merchant_id] = MerchantActivity()
        apply_merchant_events(merchant, MerchantEvents([(tx.ts, tx.amount)], []))
        self.merchant_rows[tx.merchant_id] = merchant.features_at(tx.ts, tx.amount)

"""The fraud pipeline in one process, for evaluation and benchmarks.

:class:`InProcessFraudPipeline` calls the same step functions as the agents
(:mod:`models.fraud_steps`, the label join, the learner) without Kafka, in
stream order.  Three simplifications, all documented: the scorer uses the
learner's model as it is (no snapshot delay), merchant activity is published
to the decisions at once (no staleness), and expired join entries are not swept
(a finite stream needs no expiry).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.contracts import MerchantEvents, Transaction
from models.fraud import FraudModel
from models.fraud_steps import (
    Decided,
    DecisionPolicy,
    apply_merchant_events,
    decide_transaction,
    held_for_label,
    learns_from,
    traffic_record,
)
from models.learner import FraudLearner
from models.metrics import average_precision, roc_auc
from tables import label_join as join
from tables.card_state import CardState
from tables.merchant_features import MerchantActivity
from tables.windows import DAY


@dataclass(slots=True)
class ScoredTransaction:
    tx_id: str
    card_id: str
    ts: float
    score: float
    is_fraud: bool | None = None
    fraud_kind: str | None = None


class InProcessFraudPipeline:
    """Decides transactions and learns from labels with the agents' steps, in one process.

    >>> pipeline = InProcessFraudPipeline()
    >>> score, features = pipeline.transaction({"tx_id": "t1", "card_id": "c1", "merchant_id": "m1",
    ...                                         "amount": 5.0, "ts": 0.0})
    >>> features["card_count_1h"], features["merchant_count_1h"], pipeline.transaction(
    ...     {"tx_id": "t1", "card_id": "c1", "merchant_id": "m1", "amount": 5.0, "ts": 0.0})
    (1, 0, None)
    """

    def __init__(
        self,
        legit_sample_rate: float = 0.25,
        model: FraudModel | None = None,
        policy: DecisionPolicy | None = None,
    ) -> None:
        self.legit_sample_rate = legit_sample_rate
        self.policy = policy or DecisionPolicy()
        self.learner = FraudLearner(model or FraudModel(legit_sample_rate=legit_sample_rate))
        self.cards: dict[str, CardState] = {}
        self.merchants: dict[str, MerchantActivity] = {}
        self.pending = join.InMemoryJoin()

    def transaction(self, payload: dict[str, Any]) -> tuple[float, dict[str, float]] | None:
        """Decide one transaction payload; ``None`` for a duplicate ``tx_id``."""
        tx = Transaction.from_payload(payload)
        card = self.cards.get(tx.card_id)
        if card is None:
            card = self.cards[tx.card_id] = CardState.decode(None)
        outcome = decide_transaction(
            card,
            tx,
            self.merchants.get(tx.merchant_id),
            self.learner.model,
            self.learner.version,
            self.policy,
            received_at=tx.ts,
            now=tx.ts,
            offset=0,
            committed=1,  # nothing is delivered twice here: keep no earlier decision
        )
        if not isinstance(outcome, Decided):
            return None
        decision = outcome.decision
        self._merchant(tx.merchant_id, MerchantEvents([(tx.ts, tx.amount)], []))
        if outcome.traffic_sample:
            self.learner.apply(traffic_record(decision.features))
        learn = learns_from(tx.tx_id, self.legit_sample_rate)
        self._joined(self.pending.decision(tx.tx_id, held_for_label(decision), learn))
        return decision.score, decision.features

    def label(self, label: dict[str, Any]) -> None:
        """Apply one ``fraud-labels`` payload."""
        tx_id = label["tx_id"]
        arrival = {"is_fraud": label["is_fraud"], "ts": label["ts"]}
        self._joined(self.pending.label(tx_id, arrival))

    def _merchant(self, merchant_id: str, events: MerchantEvents) -> None:
        merchant = self.merchants.get(merchant_id)
        if merchant is None:
            merchant = self.merchants[merchant_id] = MerchantActivity()
        apply_merchant_events(merchant, events)

    def _joined(self, outputs: list[dict[str, Any]]) -> None:
        for output in outputs:
            if output["kind"] == "labelled":
                self._merchant(
                    output["merchant_id"], MerchantEvents([], [(output["label_ts"], output["is_fraud"])])
                )
            self.learner.apply(output)


@dataclass
class EvaluationReport:
    transactions: int
    frauds: int
    roc_auc: float
    average_precision: float
    tail_days: float
    tail_roc_auc: float
    tail_average_precision: float
    caught_by_kind: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def replay(events: Iterable[Any], pipeline: InProcessFraudPipeline) -> list[ScoredTransaction]:
    """Feed simulated events (``topic``, ``value``, ``truth``) to ``pipeline``; the scored transactions.

    Duplicate transactions are skipped, labels only applied: this loop is all the
    pipeline's work, and what ``benchmarks.in_process`` times.
    """
    scored: list[ScoredTransaction] = []
    for event in events:
        if event.topic == "transactions":
            result = pipeline.transaction(event.value)
            if result is not None:
                truth = event.truth or {}
                scored.append(
                    ScoredTransaction(
                        tx_id=event.value["tx_id"],
                        card_id=event.value["card_id"],
                        ts=event.value["ts"],
                        score=result[0],
                        is_fraud=truth.get("is_fraud"),
                        fraud_kind=truth.get("fraud_kind"),
                    )
                )
        else:
            pipeline.label(event.value)
    return scored


def report(
    scored: list[ScoredTransaction], *, tail_days: float = 14.0, review_threshold: float = 0.5
) -> EvaluationReport:
    """Quality of the decisions, overall and over the last ``tail_days`` of event time.

    ``caught_by_kind``: share of each fraud kind's transactions scored at or above
    ``review_threshold``.
    """
    y = [bool(s.is_fraud) for s in scored]
    p = [s.score for s in scored]
    end = max(s.ts for s in scored)
    tail = [s for s in scored if s.ts > end - tail_days * DAY]
    caught: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in scored:
        if s.is_fraud:
            caught[s.fraud_kind or "unknown"][0] += s.score >= review_threshold
            caught[s.fraud_kind or "unknown"][1] += 1
    return EvaluationReport(
        transactions=len(scored),
        frauds=sum(y),
        roc_auc=roc_auc(y, p),
        average_precision=average_precision(y, p),
        tail_days=tail_days,
        tail_roc_auc=roc_auc([bool(s.is_fraud) for s in tail], [s.score for s in tail]),
        tail_average_precision=average_precision([bool(s.is_fraud) for s in tail], [s.score for s in tail]),
        caught_by_kind={kind: hit / total for kind, (hit, total) in sorted(caught.items())},
    )


def evaluate_stream(
    events: Iterable[Any],
    pipeline: InProcessFraudPipeline | None = None,
    *,
    tail_days: float = 14.0,
    review_threshold: float = 0.5,
) -> EvaluationReport:
    """Replay simulated events (``topic``, ``value``, ``truth``); the decisions' quality (:func:`report`)."""
    scored = replay(events, pipeline or InProcessFraudPipeline())
    return report(scored, tail_days=tail_days, review_threshold=review_threshold)

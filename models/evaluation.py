"""The fraud pipeline's feature and model logic in one process: for evaluation and benchmarks.

:class:`InProcessFraudPipeline` composes the same functions the agents call
(card and merchant features, the label join, the learner) without Kafka, in
stream order.  Two simplifications, both documented: the scorer uses the
learner's model as it is (no snapshot delay), and expired join entries are not
swept (a finite stream needs no expiry).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from models.fraud import FraudModel
from models.learner import TRAFFIC_SAMPLE_RATE, FraudLearner, sampled
from models.metrics import average_precision, roc_auc
from tables import label_join as join
from tables.card_features import DuplicateTransaction
from tables.transaction_features import InMemoryActivity, transaction_features
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
    """Scores transactions and learns from labels exactly as the agents do, in one process."""

    def __init__(self, legit_sample_rate: float = 0.25, model: FraudModel | None = None) -> None:
        self.legit_sample_rate = legit_sample_rate
        self.learner = FraudLearner(model or FraudModel(legit_sample_rate=legit_sample_rate))
        self.activity = InMemoryActivity()
        self.pending = join.InMemoryJoin()

    def transaction(self, tx: dict[str, Any]) -> tuple[float, dict[str, float]] | None:
        """Score one transaction payload; ``None`` for a duplicate ``tx_id``."""
        try:
            card, merchant = self.activity.add_transaction(tx)
        except DuplicateTransaction:
            return None
        features = transaction_features(
            amount=tx["amount"],
            ts=tx["ts"],
            channel=tx.get("channel"),
            card_features=card,
            merchant_features=merchant,
        )
        score = self.learner.model.score(features).score
        if sampled(tx["tx_id"], TRAFFIC_SAMPLE_RATE):
            self.learner.apply({"kind": "traffic", "features": features})
        held = {
            "features": features,
            "score": score,
            "event_ts": tx["ts"],
            "merchant_id": tx["merchant_id"],
        }
        learn = sampled(tx["tx_id"], self.legit_sample_rate)
        self._joined(self.pending.decision(tx["tx_id"], held, learn))
        return score, features

    def label(self, label: dict[str, Any]) -> None:
        """Apply one ``fraud-labels`` payload."""
        tx_id = label["tx_id"]
        arrival = {"is_fraud": label["is_fraud"], "ts": label["ts"]}
        self._joined(self.pending.label(tx_id, arrival))

    def _joined(self, outputs: list[dict[str, Any]]) -> None:
        for output in outputs:
            if output["kind"] == "labelled":
                merchant = self.activity.merchants[output["merchant_id"]]
                merchant.add_label(output["label_ts"], output["is_fraud"])
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

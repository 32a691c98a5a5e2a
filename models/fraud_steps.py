"""The fraud pipeline's steps as pure functions over typed messages.

The agents (``agents/fraud.py``), the in-process evaluation
(``models/evaluation.py``) and the batch comparison (``app/comparison``) all
call these, so the pipeline's logic exists once:

* :func:`decide_transaction` - a transaction, its card's state and the
  merchant's published activity in; its :class:`~app.contracts.FraudDecision` out.
* :func:`held_for_label` / :func:`learns_from` - what the label join keeps of
  a decision (see :mod:`tables.label_join` for the join itself).
* :func:`apply_merchant_events` - a merchant's activity brought up to date.
* :class:`DecisionPolicy` - score to ``approve`` / ``review`` / ``block``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.contracts import FraudDecision, MerchantEvents, Transaction
from models.fraud import FraudModel
from models.learner import TRAFFIC_SAMPLE_RATE, sampled
from tables.card_features import add_transaction, redelivered_features
from tables.card_state import CardState
from tables.merchant_features import MerchantActivity
from tables.transaction_features import transaction_features

_NO_MERCHANT_ACTIVITY = MerchantActivity()


@dataclass(frozen=True, slots=True)
class DecisionPolicy:
    """Thresholds that turn a score into a decision.

    >>> policy = DecisionPolicy(review_threshold=0.5, block_threshold=0.85)
    >>> policy.decide(0.2), policy.decide(0.5), policy.decide(0.9)
    ('approve', 'review', 'block')
    """

    review_threshold: float = 0.5
    block_threshold: float = 0.85

    def decide(self, score: float) -> str:
        if score >= self.block_threshold:
            return "block"
        if score >= self.review_threshold:
            return "review"
        return "approve"


@dataclass(frozen=True, slots=True)
class Decided:
    """A new decision: publish ``encoded``; learn the traffic sample if ``traffic_sample``."""

    decision: FraudDecision
    encoded: bytes
    traffic_sample: bool


@dataclass(frozen=True, slots=True)
class Redelivered:
    """A transaction the card already holds.

    ``encoded`` is its stored decision when the same record came again (Kafka redelivers
    what was not committed), ``None`` when another record repeats the transaction or the
    decision is older than the card keeps: it was published before.
    """

    encoded: bytes | None


def decide_transaction(
    card: CardState,
    tx: Transaction,
    merchant: MerchantActivity | None,
    model: FraudModel,
    model_version: int,
    policy: DecisionPolicy,
    *,
    received_at: float,
    now: float,
    offset: int = -1,
) -> Decided | Redelivered:
    """Count ``tx`` in its card, score it, and decide; the card remembers the decision.

    Merchant features come from ``merchant``, the merchant's activity as last published
    (``None``: none yet); ``offset`` is the record's, to tell a redelivery from a duplicate.  Raises :class:`~tables.card_features.ConflictingTransaction`
    for a second transaction with the same ``tx_id`` but other fields.
    """
    log = card.log
    if tx.tx_id in log.column("tx"):
        redelivered_features(log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant_id)
        return Redelivered(card.stored_decision(tx.tx_id, offset=offset))
    card_features = add_transaction(
        log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant_id, country=tx.country
    )
    merchant_features = (merchant or _NO_MERCHANT_ACTIVITY).features_at(tx.ts, tx.amount)
    features = transaction_features(
        amount=tx.amount,
        ts=tx.ts,
        channel=tx.channel,
        card_features=card_features,
        merchant_features=merchant_features,
    )
    result = model.score(features)
    decision = FraudDecision(
        tx_id=tx.tx_id,
        card_id=tx.card_id,
        merchant_id=tx.merchant_id,
        score=result.score,
        decision=policy.decide(result.score),
        reasons=result.reasons,
        model_version=model_version,
        p_fraud=result.p_fraud,
        anomaly=result.anomaly,
        features=features,
        event_ts=tx.ts,
        decided_at=now,
        latency_ms=max(0.0, (now - received_at) * 1000.0),
    )
    encoded = decision.encode()
    card.remember(tx.tx_id, now, encoded, offset=offset)
    return Decided(decision, encoded, sampled(tx.tx_id, TRAFFIC_SAMPLE_RATE))


def traffic_record(decision: FraudDecision) -> dict[str, Any]:
    """The learner's unlabelled sample of live traffic for one decision."""
    return {"kind": "traffic", "features": decision.features}


def held_for_label(decision: FraudDecision) -> dict[str, Any]:
    """What the label join keeps of a decision until its label comes."""
    return {
        "features": decision.features,
        "score": decision.score,
        "event_ts": decision.event_ts,
        "merchant_id": decision.merchant_id,
    }


def learns_from(tx_id: str, legit_sample_rate: float) -> bool:
    """Whether a legitimate transaction is in the classifier's sample (frauds always are)."""
    return sampled(tx_id, legit_sample_rate)


def apply_merchant_events(merchant: MerchantActivity, events: MerchantEvents) -> None:
    """Count a batch of transactions and labels in the merchant's activity."""
    for ts, amount in events.transactions:
        merchant.add_transaction(ts, amount)
    for label_ts, is_fraud in events.labels:
        merchant.add_label(label_ts, is_fraud)

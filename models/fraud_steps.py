"""The fraud pipeline's steps as pure functions over typed messages.

The agents (``agents/fraud.py``), the in-process evaluation
(``models/evaluation.py``) and the batch comparison (``app/comparison``) all
call these, so the pipeline's logic exists once:

* :func:`decide_transaction` - a transaction, its card's state and the
  merchant's published activity in; its :class:`~app.contracts.FraudDecision` out.
  It is :func:`count_in_card`, :func:`merchant_features_for` and
  :func:`score_transaction`, which the batch baseline calls on its own rows.
* :func:`held_for_label` / :func:`learns_from` - what the label join keeps of
  a decision (see :mod:`tables.label_join` for the join itself);
  :func:`traffic_record` / :func:`in_traffic_sample` - the learner's traffic sample.
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


def count_in_card(card: CardState, tx: Transaction, *, offset: int = -1) -> dict[str, float] | Redelivered:
    """Count ``tx`` in its card and return the card features, or say it was seen before.

    Raises :class:`~tables.card_features.ConflictingTransaction` for a second transaction
    with the same ``tx_id`` but other fields.
    """
    log = card.log
    if tx.tx_id in log.column("tx"):
        redelivered_features(log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant_id)
        return Redelivered(card.stored_decision(tx.tx_id, offset=offset))
    return add_transaction(
        log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant_id, country=tx.country
    )


def merchant_features_for(merchant: MerchantActivity | None, tx: Transaction) -> dict[str, float]:
    """The merchant's features for ``tx`` from its activity as last published (``None``: none yet)."""
    return (merchant or _NO_MERCHANT_ACTIVITY).features_at(tx.ts, tx.amount)


def score_transaction(
    tx: Transaction,
    card_features: dict[str, float],
    merchant_features: dict[str, float],
    model: FraudModel,
    model_version: int,
    policy: DecisionPolicy,
    *,
    received_at: float,
    now: float,
) -> FraudDecision:
    """Score ``tx`` from its features and decide."""
    features = transaction_features(
        amount=tx.amount,
        ts=tx.ts,
        channel=tx.channel,
        card_features=card_features,
        merchant_features=merchant_features,
    )
    result = model.score(features)
    return FraudDecision(
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
    committed: int = -1,
) -> Decided | Redelivered:
    """Count ``tx`` in its card, score it, and decide; the card remembers the decision.

    Merchant features come from ``merchant``, the merchant's activity as last published
    (``None``: none yet); ``offset`` is the record's, to tell a redelivery from a duplicate,
    and ``committed`` its partition's committed offset (no decision below it is kept).
    Raises :class:`~tables.card_features.ConflictingTransaction` as :func:`count_in_card`.
    """
    card_features = count_in_card(card, tx, offset=offset)
    if isinstance(card_features, Redelivered):
        return card_features
    decision = score_transaction(
        tx,
        card_features,
        merchant_features_for(merchant, tx),
        model,
        model_version,
        policy,
        received_at=received_at,
        now=now,
    )
    encoded = decision.encode()
    card.remember(tx.tx_id, now, encoded, offset=offset, committed=committed)
    return Decided(decision, encoded, in_traffic_sample(tx.tx_id))


def traffic_record(features: dict[str, float]) -> dict[str, Any]:
    """The learner's unlabelled sample of live traffic: a decision's features."""
    return {"kind": "traffic", "features": features}


def in_traffic_sample(tx_id: str) -> bool:
    """Whether a transaction is in the learner's sample of live traffic."""
    return sampled(tx_id, TRAFFIC_SAMPLE_RATE)


def held_for_label(decision: FraudDecision) -> dict[str, Any]:
    """What the label join keeps of a decision until its label comes."""
    return {
        "features": decision.features,
        "score": decision.score,
        "event_ts": decision.event_ts,
        "merchant_id": decision.merchant_id,
        "card_id": decision.card_id,
    }


def learns_from(tx_id: str, legit_sample_rate: float) -> bool:
    """Whether a legitimate transaction is in the classifier's sample (frauds always are)."""
    return sampled(tx_id, legit_sample_rate)


def apply_merchant_events(merchant: MerchantActivity, events: MerchantEvents) -> None:
    """Count a batch of transactions and labels in the merchant's activity."""
    for ts, amount in events.transactions:
        merchant.count_transaction(ts, amount)  # its features are read from the view, not here
    for label_ts, is_fraud in events.labels:
        merchant.add_label(label_ts, is_fraud)

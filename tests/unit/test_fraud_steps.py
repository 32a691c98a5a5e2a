"""The fraud pipeline's steps: one decision per transaction, the same bytes on redelivery."""

from __future__ import annotations

import orjson
import pytest

from app.contracts import FraudDecision, Transaction
from models.fraud import FraudModel
from models.fraud_steps import Decided, DecisionPolicy, Redelivered, decide_transaction
from tables.card_features import ConflictingTransaction
from tables.card_state import RECENT_MAX, CardState
from tables.merchant_features import MerchantActivity


def _tx(tx_id: str, ts: float, amount: float = 20.0, merchant_id: str = "m1") -> Transaction:
    return Transaction(
        tx_id=tx_id, card_id="c1", merchant_id=merchant_id, amount=amount, ts=ts, channel="online"
    )


def _decide(card: CardState, tx: Transaction, offset: int, committed: int = 0, now: float = 1_000.0):
    return decide_transaction(
        card, tx, None, FraudModel(), 3, DecisionPolicy(), received_at=now - 0.01, now=now, offset=offset,
        committed=committed,
    )  # fmt: skip


def test_a_redelivered_record_gets_its_decision_again_byte_for_byte() -> None:
    card = CardState.decode(None)
    first = _decide(card, _tx("t1", 100.0), offset=5)
    assert isinstance(first, Decided)
    # The state went through the changelog and back; a later call, with another clock.
    restored = CardState.decode(card.encode())
    again = _decide(restored, _tx("t1", 100.0), offset=5, now=9_999.0)
    assert again == Redelivered(first.encoded)
    assert FraudDecision.decode(first.encoded) == first.decision


def test_another_record_repeating_a_transaction_is_a_duplicate_not_a_second_decision() -> None:
    card = CardState.decode(None)
    _decide(card, _tx("t1", 100.0), offset=5)
    assert _decide(card, _tx("t1", 100.0), offset=6) == Redelivered(None)
    assert len(card.log.ts) == 1


def test_a_transaction_id_reused_with_other_fields_is_a_conflict() -> None:
    card = CardState.decode(None)
    _decide(card, _tx("t1", 100.0), offset=5)
    with pytest.raises(ConflictingTransaction):
        _decide(card, _tx("t1", 100.0, amount=99.0), offset=7)


def test_a_card_keeps_only_the_decisions_of_uncommitted_records_and_at_most_recent_max() -> None:
    card = CardState.decode(None)
    for offset in range(10):
        _decide(card, _tx(f"t{offset}", 100.0 + offset), offset=offset, committed=7)
    assert sorted(card.recent) == ["t7", "t8", "t9"]
    for offset in range(10, 10 + 2 * RECENT_MAX):
        _decide(card, _tx(f"t{offset}", 100.0 + offset), offset=offset, committed=0)
    assert len(card.recent) == RECENT_MAX
    assert len(orjson.loads(card.encode())["recent"]) == RECENT_MAX


def test_merchant_features_come_from_the_published_activity_without_this_transaction() -> None:
    merchant = MerchantActivity()
    for ts in (10.0, 20.0):
        merchant.add_transaction(ts, 30.0)
    outcome = decide_transaction(
        CardState.decode(None), _tx("t1", 30.0), merchant, FraudModel(), 0, DecisionPolicy(), received_at=0.0,
        now=0.0,
    )  # fmt: skip
    assert isinstance(outcome, Decided)
    assert outcome.decision.features["merchant_count_1h"] == 2
    assert outcome.decision.features["card_count_1h"] == 1


@pytest.mark.parametrize(
    ("score", "decision"), [(0.0, "approve"), (0.49, "approve"), (0.5, "review"), (0.85, "block")]
)
def test_policy_thresholds_are_inclusive(score: float, decision: str) -> None:
    assert DecisionPolicy(review_threshold=0.5, block_threshold=0.85).decide(score) == decision

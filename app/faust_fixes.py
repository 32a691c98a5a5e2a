"""Work-arounds for faust-streaming behaviour that breaks at-least-once delivery.

Each fix names the behaviour, why it loses data, and is applied once on import.
"""

from __future__ import annotations

from faust.transport.consumer import Consumer
from faust.types import Message

_original_ack = Consumer.ack


def _ack_unless_skipped_in_rebalance(self: Consumer, message: Message) -> bool:
    """Refuse to ack a message the stream skipped because a rebalance was under way.

    faust-streaming discards messages fetched in an older consumer generation, or
    while flow control is suspended for a rebalance (faust PR #223), and *acks*
    them so that lag does not grow.  Their offsets are then committed although
    they were never processed, and they are lost (seen here: the first records of a
    partition never reached the agent when a second worker joined).  Not acking
    them lets the partition's owner read them again from the committed offset.
    """
    stale = message.generation_id is not None and message.generation_id != self.app.consumer_generation_id
    if stale or not self.app.flow_control.is_active():
        return False
    return _original_ack(self, message)


def apply() -> None:
    """Install the fixes (idempotent)."""
    if Consumer.ack is not _ack_unless_skipped_in_rebalance:
        Consumer.ack = _ack_unless_skipped_in_rebalance  # type: ignore[method-assign]


apply()

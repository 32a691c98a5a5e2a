"""Work-arounds for faust-streaming behaviour that breaks at-least-once delivery.

Each fix names the behaviour, why it loses data, and is applied once on import.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, Message

_original_ack = Consumer.ack
_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed


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


async def _seek_to_committed_or_beginning(self: AIOKafkaConsumerThread) -> Mapping[TP, int]:
    """Seek to the committed offsets, and to the beginning where nothing is committed yet.

    After a rebalance faust discards what it fetched while its streams were
    paused and "seeks back" with aiokafka's ``seek_to_committed``, which does not
    move a partition that has no committed offset (or offset 0).  The fetch
    position then stays *after* the discarded records: records produced while a
    new application's first workers start and rebalance were lost (seen here: the
    first 125 records of two partitions of a fresh app).  With
    ``auto_offset_reset=earliest`` no committed offset means "from the start".
    """
    committed = await _original_seek_to_committed(self)
    if self.app.conf.consumer_auto_offset_reset != "earliest":
        return committed
    fresh = [
        tp
        for tp, offset in committed.items()
        if not offset and not self.consumer._is_changelog_tp(tp)  # changelogs: faust seeks them itself
    ]
    if fresh:
        await self.call_thread(_seek_to_beginning_if_assigned, self._ensure_consumer(), fresh)
    return committed


async def _seek_to_beginning_if_assigned(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> None:
    # A rebalance may have taken some of them away since their offsets were read.
    assigned = consumer.assignment()
    still_assigned = [tp for tp in partitions if tp in assigned]
    if still_assigned:
        await consumer.seek_to_beginning(*still_assigned)


def apply() -> None:
    """Install the fixes (idempotent)."""
    if Consumer.ack is not _ack_unless_skipped_in_rebalance:
        Consumer.ack = _ack_unless_skipped_in_rebalance  # type: ignore[method-assign]
    if AIOKafkaConsumerThread.seek_to_committed is not _seek_to_committed_or_beginning:
        AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed_or_beginning  # type: ignore[method-assign]


apply()

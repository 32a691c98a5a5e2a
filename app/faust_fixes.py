"""Work-arounds for faust-streaming behaviour that breaks at-least-once delivery.

Each fix names the behaviour, why it loses data, and is applied once on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumerDriver
from faust.types import TP, Message
from faust.types.enums import ProcessingGuarantee
from faust.utils.functional import consecutive_numbers

_original_ack = Consumer.ack
_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
_original_to_message = AIOKafkaConsumerDriver._to_message
_original_on_partitions_revoked = Consumer.on_partitions_revoked
_original_new_offset = Consumer._new_offset


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
    _unacked_fetched(self).get(message.tp, set()).discard(message.offset)
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


def _unacked_fetched(consumer: Consumer) -> dict[TP, set[int]]:
    """Offsets fetched for streams and not acked yet, per partition (kept on the consumer)."""
    try:
        return consumer._eddy_unacked_fetched  # type: ignore[attr-defined]
    except AttributeError:
        consumer._eddy_unacked_fetched = {}  # type: ignore[attr-defined]
        return consumer._eddy_unacked_fetched  # type: ignore[attr-defined]


def _to_message_noting_fetched(self: AIOKafkaConsumerDriver, tp: TP, record: Any) -> Message:
    # Changelogs (read by recovery) and topics without acks are never acked: not tracked.
    if not self._is_changelog_tp(tp) and self.app.topics.acks_enabled_for(tp.topic):
        _unacked_fetched(self).setdefault(tp, set()).add(record.offset)
    return _original_to_message(self, tp, record)


async def _on_partitions_revoked_forgetting_fetches(self: Consumer, revoked: set[TP]) -> None:
    # Whatever was fetched and not processed is read again by the next owner.
    unacked = _unacked_fetched(self)
    for tp in revoked:
        unacked.pop(tp, None)
    await _original_on_partitions_revoked(self, revoked)


def _new_offset_after_every_fetched_offset(self: Consumer, tp: TP) -> int | None:
    """The offset to commit for ``tp``: never past a fetched record that was not acked.

    faust-streaming commits the first run of consecutive acked offsets.  When the
    partition has no committed offset (a new application) it does not check where
    that run starts, and otherwise it lets the run start one past the committed
    offset: a record skipped in a rebalance at the head of the partition was
    committed over and lost (seen here: offset 0 of a fresh partition).  Here no
    commit passes a record that was fetched for a stream and not acked yet.
    Offsets faust knows to be absent (its gap tracking) still count as acked.
    Under exactly_once faust's own rule is kept unchanged.
    """
    if self.app.conf.processing_guarantee != ProcessingGuarantee.AT_LEAST_ONCE:
        return _original_new_offset(self, tp)
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap = self._gap[tp]
    if gap:
        absent = [
            o
            for iv in sorted(gap.overlap(0, max_offset), key=lambda iv: iv.begin)
            for o in range(iv.begin, iv.end)
        ]
        if absent:
            acked.extend(absent)
            gap.chop(0, max(absent[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed and acked[0] - committed > 1:
        return None  # faust's own rule: the committed offset itself may be a control record
    unacked = _unacked_fetched(self).get(tp)
    if unacked:
        if committed:  # below the committed offset, someone processed them
            unacked.difference_update([offset for offset in unacked if offset < committed])
        if unacked and min(unacked) < acked[0]:
            return None  # a record fetched before the first acked one is still unprocessed
    run = next(consecutive_numbers(acked))
    acked[: len(run)] = []
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def apply() -> None:
    """Install the fixes (idempotent)."""
    if Consumer.ack is not _ack_unless_skipped_in_rebalance:
        Consumer.ack = _ack_unless_skipped_in_rebalance  # type: ignore[method-assign]
    if AIOKafkaConsumerThread.seek_to_committed is not _seek_to_committed_or_beginning:
        AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed_or_beginning  # type: ignore[method-assign]
    if Consumer._new_offset is not _new_offset_after_every_fetched_offset:
        AIOKafkaConsumerDriver._to_message = _to_message_noting_fetched  # type: ignore[method-assign]
        Consumer.on_partitions_revoked = _on_partitions_revoked_forgetting_fetches  # type: ignore[method-assign]
        Consumer._new_offset = _new_offset_after_every_fetched_offset  # type: ignore[method-assign]


apply()


def ack_processed(consumer: Consumer, message: Message) -> None:
    """Mark ``message`` processed, for commit, from outside the stream loop.

    Used by stages that ack after their flush; unlike :func:`_ack_unless_skipped_in_rebalance`
    this is not refused while a rebalance waits for in-flight events: the message was
    processed, and faust's revoke handler (``Consumer.wait_empty``) waits for exactly this.
    """
    message.refcount = 0
    _unacked_fetched(consumer).get(message.tp, set()).discard(message.offset)
    _original_ack(consumer, message)

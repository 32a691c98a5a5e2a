"""A batched stage: an agent's write-behind state, outputs and acks, flushed together.

The agent handles each event in memory (state in :class:`~app.stages.state.KeyedState`,
records to produce via :meth:`BatchedStage.emit`) and hands the event back
with :meth:`BatchedStage.processed`.  A flush then, in this order:

1. writes each dirty key once to its partition's local store and sends it to
   the table's changelog, and waits until the broker has every changelog record;
2. sends the outputs, in batches, and waits until the broker has them all;
3. acks the events, so that their offsets may be committed.

So an output is only ever visible once the state that produced it is durable,
and an offset is only committed once its outputs are: a crash at any point
replays events whose effects are either absent or already in the state (the
pipeline's handlers recognise those and re-emit what they emitted before).

Flushes happen every ``flush_interval`` seconds (longer, up to ``max_flush_interval``,
while the stage's newest events are late: :func:`flush_interval_for`) and whenever
``max_pending`` events wait; a failed send is retried, in place, until it succeeds, while the
agent waits.  Faust's rebalance and shutdown wait for every delivered event
to be acked, so a partition only moves once its stage has flushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from faust.types import AppT, Message, TopicT

from app.dead_letters import dead_letter_record, dead_letters_topic
from app.faust_fixes import ack_processed
from app.stages.inbox import Inbox, direct_inbox
from app.stages.lag import LagSample
from app.stages.outputs import KEYS_PER_RECORD, PartitionedRecords, key_partition, records_by_partition
from app.stages.state import KeyedState

logger = logging.getLogger(__name__)

RETRY_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Share of its newest events' lag a stage waits between flushes (see :func:`flush_interval_for`).
LAG_SHARE = 0.5
V = TypeVar("V")


class BatchedStage:
    """Flushes one agent's state, outputs and acks together; see the module docstring.

    Parameters
    ----------
    app
        The Faust app (its producer sends the batches, its consumer takes the acks).
    name
        Name used in logs and metrics.
    states
        The write-behind states the agent updates.
    flush_interval
        Seconds between flushes while events are pending and the stage keeps up.
    max_flush_interval
        Seconds between flushes at most while the stage is behind (default: ``flush_interval``).
    max_pending
        Events held before the agent waits for a flush.
    """

    def __init__(
        self,
        app: AppT,
        name: str,
        states: Sequence[KeyedState] = (),
        *,
        flush_interval: float = 0.05,
        max_flush_interval: float | None = None,
        max_pending: int = 5_000,
    ) -> None:
        self.app = app
        self.name = name
        self.states = list(states)
        self.flush_interval = flush_interval
        self.max_flush_interval = max(flush_interval, max_flush_interval or flush_interval)
        # How late the newest event of the last flush was when its outputs were durable (s).
        self.newest_lag = 0.0
        self.max_pending = max_pending
        self.counts: Counter[str] = Counter()
        self.last_flush_seconds = 0.0
        # From each event's append to Kafka to its outputs being durable: the stage's latency.
        self.event_to_output = LagSample(size=10_000)
        self._outputs = PartitionedRecords()
        self._processed: list[Message] = []
        self._partitions: dict[str, int] = {}
        self._keyed_inputs: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        # Called at the start of each flush: emit what is coalesced per flush (one record per key).
        self.before_flush: list[Callable[[], None]] = []
        # Set by take_directly: records come from it instead of the agent's stream.
        self.inbox: Inbox | None = None

    # --- set-up ---------------------------------------------------------------------------

    async def prepare(self, output_topics: Iterable[TopicT], keyed_inputs: Iterable[TopicT] = ()) -> None:
        """Create ``output_topics`` if missing and learn their partition counts (and the changelogs').

        A record of one of ``keyed_inputs`` whose partition is not the one Kafka's default
        (murmur2) partitioner gives its key goes to ``dead-letters`` instead of the handler:
        its key's state lives on that other partition, and handling it here would split it.
        """
        producer = self._producer()
        keyed_inputs = list(keyed_inputs)
        self._keyed_inputs = frozenset(name for topic in keyed_inputs for name in topic.topics)
        topics = [
            *output_topics,
            *keyed_inputs,
            dead_letters_topic,
            *(state.table.changelog_topic for state in self.states),
        ]
        for topic in topics:
            await topic.maybe_declare()
        for topic in topics:
            for name in topic.topics:
                self._partitions[name] = len(await producer.partitions_for(name))
        self._ready.set()

    # --- while handling events ------------------------------------------------------------

    def partition_for(self, topic: str, key: bytes) -> int:
        """The partition of ``topic`` Kafka's default partitioner gives ``key`` (after :meth:`prepare`)."""
        return key_partition(key, self._partitions[topic])

    def emit(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Produce ``key``/``value`` to ``topic`` (partition by key, as Kafka's default) at the next flush."""
        self._outputs.add(topic, self.partition_for(topic, key), key, value)

    def emit_to_partition(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self._outputs.add(topic, partition, key, value)

    def emit_by_partition(
        self,
        topic: str,
        values: Mapping[str, V],
        encode: Callable[[dict[str, V]], bytes],
        keys_per_record: int = KEYS_PER_RECORD,
    ) -> None:
        """Produce ``values`` to ``topic`` as one record (null key) per partition their keys go to.

        A consumer of ``topic`` then gets a flush's keys of its partition in one record
        instead of one record each (:meth:`keys_elsewhere` checks them); each record holds at
        most ``keys_per_record`` keys, ``encode`` d together (:func:`records_by_partition`).
        """
        for partition, record in records_by_partition(
            values, self._partitions[topic], encode, keys_per_record
        ):
            self._outputs.add(topic, partition, None, record)

    def keys_elsewhere(self, message: Message, keys: Iterable[str]) -> str | None:
        """Why a record of :meth:`emit_by_partition` cannot be applied here (``None``: it can):
        a key of it whose state lives on another partition.  Its topic is a keyed input."""
        partitions = self._partitions[message.topic]
        for key in keys:
            expected = key_partition(key.encode(), partitions)
            if expected != message.partition:
                return (
                    f"key {key[:100]!r} in a record on partition {message.partition} of {message.topic}, "
                    f"but its state lives on partition {expected}"
                )
        return None

    def dead_letter(self, message: Message, error: str) -> None:
        """Send ``message``'s original bytes to ``dead-letters`` with ``error`` at the next flush."""
        key, value = dead_letter_record(message, error)
        self.emit(dead_letters_topic.get_topic_name(), key, value)
        self.counts["dead_letters"] += 1

    def processed(self, message: Message) -> None:
        """``message`` is handled: ack it once this flush's state and outputs are durable."""
        self._processed.append(message)

    @property
    def pending(self) -> int:
        return len(self._processed)

    async def after_event(self) -> None:
        """Flush now if ``max_pending`` events wait (backpressure while the broker lags)."""
        if len(self._processed) >= self.max_pending:
            await self.flush()

    def take_directly(self, topics: Iterable[str]) -> None:
        """Take the records of ``topics`` from an :class:`~app.stages.inbox.Inbox` the consumer's
        fetch loop fills, instead of through faust's streams (see :mod:`app.stages.inbox`)."""
        self.inbox = direct_inbox(self.app, topics)

    async def run(self, stream: Any, handle: Callable[[Message], None]) -> None:
        """Hand every record of ``stream`` (of the stage's inbox, if it takes records directly) to
        ``handle``, then to this stage, which acks it once the flush after it is durable.  An
        exception in ``handle`` costs that one record, which goes to ``dead-letters`` with the
        reason, never the worker."""
        if self.inbox is not None:
            await self._run_inbox(self.inbox, handle)
            return
        async for event in stream.noack().events():
            self._handle(event.message, handle)
            await self.after_event()

    async def _run_inbox(self, inbox: Inbox, handle: Callable[[Message], None]) -> None:
        async for message in inbox.records():
            self._handle(message, handle)
            await self.after_event()

    def _handle(self, message: Message, handle: Callable[[Message], None]) -> None:
        try:
            if message.topic in self._keyed_inputs and (misplaced := self._misplaced(message)):
                self.dead_letter(message, misplaced)
            else:
                handle(message)
        except Exception as exc:
            logger.exception(
                "%s failed on %s[%d]@%d", self.name, message.topic, message.partition, message.offset
            )
            self.dead_letter(message, f"{self.name} failed: {exc!r}")
        self.processed(message)

    def _misplaced(self, message: Message) -> str | None:
        """Why ``message`` is not on the partition its key belongs to (``None``: it is)."""
        if message.key is None:
            return None  # the handler says what is wrong with it
        expected = self.partition_for(message.topic, message.key)
        if expected == message.partition:
            return None
        return (
            f"key {message.key[:100]!r} arrived on partition {message.partition} of {message.topic}, "
            f"but Kafka's default (murmur2) partitioner gives it partition {expected}, where its "
            f"state lives. Produce with the murmur2 partitioner (librdkafka: partitioner=murmur2_random)"
        )

    def committed_offset(self, message: Message) -> int:
        """The committed offset of ``message``'s partition as this worker knows it (0: none):
        records below it are not delivered again."""
        return self.app.consumer._committed_offset.get(message.tp) or 0

    # --- flushing -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write state, then outputs, then ack; see the module docstring."""
        async with self._lock:
            for emit_coalesced in self.before_flush:
                emit_coalesced()
            dirty = [(state, state.take_dirty()) for state in self.states]
            outputs, self._outputs = self._outputs, PartitionedRecords()
            processed, self._processed = self._processed, []
            if not (processed or outputs or any(entries for _, entries in dirty)):
                return
            started = time.perf_counter()
            changelog = PartitionedRecords()
            state_of_topic: dict[str, KeyedState] = {}
            for state, by_partition in dirty:
                state_of_topic[state.changelog_topic] = state
                for partition, entries in by_partition.items():
                    state.write_local(partition, entries)
                    for key, value in entries.items():
                        changelog.add(state.changelog_topic, partition, key, value)
            changelog_records = len(changelog)  # counted before sending empties it
            for (topic, partition), offset in (await self._produce(changelog)).items():
                state_of_topic[topic].set_persisted_offset(partition, offset)
            await self._produce(outputs)
            durable_at = time.time()
            consumer = self.app.consumer
            for message in processed:
                ack_processed(consumer, message)
            add_lag = self.event_to_output.add
            newest = None
            for message in processed:
                if message.timestamp is not None:  # the record's Kafka timestamp, in seconds
                    add_lag(durable_at - message.timestamp)
                    newest = message.timestamp if newest is None else max(newest, message.timestamp)
            self.newest_lag = 0.0 if newest is None else max(0.0, durable_at - newest)
            for state in self.states:
                state.trim()
            self.counts["flushes"] += 1
            self.counts["events"] += len(processed)
            self.counts["changelog_records"] += changelog_records
            self.last_flush_seconds = time.perf_counter() - started

    async def _produce(self, records: PartitionedRecords) -> dict[tuple[str, int], int]:
        offsets: dict[tuple[str, int], int] = {}
        attempt = 0
        while records:
            try:
                offsets.update(await records.produce(self._producer()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away or slow: keep the batch, try again
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                attempt += 1
                self.counts["send_retries"] += 1
                logger.warning(
                    "%s: sending %d records failed (%r); retrying in %.1f s",
                    self.name,
                    len(records),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        return offsets

    async def run_flushes(self) -> None:
        """Flush every ``flush_interval`` seconds, forever (also while the app stops: its
        consumer waits for the last acks)."""
        while True:
            await asyncio.sleep(
                flush_interval_for(self.newest_lag, self.flush_interval, self.max_flush_interval)
            )
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # a flush bug must not stop the worker; the batch is retried
                logger.exception("%s: flush failed", self.name)

    def forget_partitions(self, partitions: Iterable[int], topics: Iterable[str]) -> None:
        """Drop cached state of ``partitions`` (called once they are revoked and flushed)."""
        del topics
        partitions = list(partitions)
        for state in self.states:
            state.forget_partitions(partitions)

    def report(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "pending_events": len(self._processed),
            "cached_keys": {state.name: len(state) for state in self.states},
            **({} if self.inbox is None else {"inbox": self.inbox.report()}),
            "sweep_failures": {state.name: state.sweep_failures for state in self.states},
            "last_flush_ms": round(self.last_flush_seconds * 1000.0, 2),
            "flush_interval_ms": round(
                flush_interval_for(self.newest_lag, self.flush_interval, self.max_flush_interval) * 1000.0, 2
            ),
            "event_to_output": self.event_to_output.report(),
        }

    def _producer(self) -> Any:
        return self.app.producer._ensure_producer()


def flush_interval_for(lag: float, base: float, maximum: float) -> float:
    """Seconds until a stage's next flush: ``base`` while it keeps up, up to ``maximum`` while its
    newest events were already ``lag`` seconds late, :data:`LAG_SHARE` of that lag.

    A flush costs about the same for a few events as for many (a batch per topic partition, a
    wait for the broker): a stage that is behind spends less per event on flushes this way,
    and the wait is small next to how late its events are.

    >>> [flush_interval_for(lag, base=0.02, maximum=0.1) for lag in (0.01, 0.1, 5.0)]
    [0.02, 0.05, 0.1]
    """
    return min(maximum, max(base, lag * LAG_SHARE))

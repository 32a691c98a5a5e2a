"""Produce ``(topic, key, value)`` events to Kafka in order, at a set rate or as fast as possible."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tqdm import tqdm

from app.codecs import dumps


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    topic: str
    key: str | bytes | None
    value: Any  # JSON-serialisable, or bytes sent as they are


async def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int) -> None:
    """Create the topics that do not exist yet, with ``partitions`` partitions (existing ones are kept)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name in set(names) - existing]
        if missing:
            # A worker starting up may create them meanwhile.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def delete_topics(bootstrap_servers: str, prefixes: Iterable[str]) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``; the names deleted."""
    prefixes = tuple(prefixes)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        doomed = sorted(name for name in await admin.list_topics() if name.startswith(prefixes))
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def produce_events(
    events: Iterable[Any],
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    rate: float | None = None,
    speedup: float | None = None,
    total: int | None = None,
    progress: bool = False,
    linger_ms: int = 5,
    retry_for: float = 120.0,
    idempotent: bool = True,
) -> Counter[str]:
    """Send every event (anything with ``topic``, ``key``, ``value``) and return counts per topic.

    ``rate`` is in events per second; ``speedup`` paces by the events' ``event_time``
    instead (event-time seconds per wall-clock second); with neither, events go as
    fast as the broker takes them.  Order is kept per topic and key: one idempotent producer.
    While the broker is away (restarting, electing leaders) sends are retried for up to
    ``retry_for`` seconds; a record whose delivery failed is sent again, after the ones
    behind it in its partition.  An idempotent producer can still fail for good across a
    broker restart (``OutOfOrderSequenceNumber``); ``idempotent=False`` trades that for
    possible duplicates, which eddy counts as such.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=linger_ms,
        enable_idempotence=idempotent,
        acks="all",
        max_batch_size=256 * 1024,
    )
    await producer.start()
    counts: Counter[str] = Counter()
    bar = tqdm(total=total, unit="ev", disable=not progress, smoothing=0.05)
    started = time.monotonic()
    first_event_time: float | None = None
    pending: list[tuple[asyncio.Future, str, bytes | None, bytes]] = []
    try:
        for sent, event in enumerate(events):
            due: float | None = None
            if rate:
                due = sent / rate
            elif speedup:
                first_event_time = event.event_time if first_event_time is None else first_event_time
                due = (event.event_time - first_event_time) / speedup
            if due is not None and due > time.monotonic() - started:
                await asyncio.sleep(due - (time.monotonic() - started))
            topic, key = f"{topic_prefix}{event.topic}", _as_bytes(event.key)
            value = event.value if isinstance(event.value, bytes) else dumps(event.value)
            pending.append((await _send(producer, topic, key, value, retry_for), topic, key, value))
            counts[event.topic] += 1
            bar.update(1)
            if len(pending) >= 10_000:
                await _delivered(producer, pending, retry_for)
                pending.clear()
        await _delivered(producer, pending, retry_for)
    finally:
        bar.close()
        await producer.stop()
    return counts


async def _send(
    producer: AIOKafkaProducer, topic: str, key: bytes | None, value: bytes, retry_for: float
) -> asyncio.Future:
    """Enqueue one record, retrying retriable errors (no leader yet, broker away) for ``retry_for`` s."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return await producer.send(topic, key=key, value=value)
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _delivered(
    producer: AIOKafkaProducer,
    pending: list[tuple[asyncio.Future, str, bytes | None, bytes]],
    retry_for: float,
) -> None:
    """Wait for every pending record; send again those whose delivery failed retriably."""
    deadline = time.monotonic() + retry_for
    while pending:
        outcomes = await asyncio.gather(*(future for future, *_ in pending), return_exceptions=True)
        failed = []
        for outcome, (_, topic, key, value) in zip(outcomes, pending, strict=True):
            if isinstance(outcome, KafkaError) and outcome.retriable and time.monotonic() < deadline:
                failed.append((await _send(producer, topic, key, value, retry_for), topic, key, value))
            elif isinstance(outcome, BaseException):
                raise outcome
        pending = failed


def _as_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key

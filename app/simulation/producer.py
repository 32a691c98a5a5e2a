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
from aiokafka.errors import TopicAlreadyExistsError
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
) -> Counter[str]:
    """Send every event (anything with ``topic``, ``key``, ``value``) and return counts per topic.

    ``rate`` is in events per second; ``speedup`` paces by the events' ``event_time``
    instead (event-time seconds per wall-clock second); with neither, events go as
    fast as the broker takes them.  Order is kept per topic and key: one idempotent producer.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=linger_ms,
        enable_idempotence=True,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    counts: Counter[str] = Counter()
    bar = tqdm(total=total, unit="ev", disable=not progress, smoothing=0.05)
    started = time.monotonic()
    first_event_time: float | None = None
    pending: list[asyncio.Future] = []
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
            pending.append(
                await producer.send(
                    f"{topic_prefix}{event.topic}",
                    key=_as_bytes(event.key),
                    value=event.value if isinstance(event.value, bytes) else dumps(event.value),
                )
            )
            counts[event.topic] += 1
            bar.update(1)
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    return counts


def _as_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key

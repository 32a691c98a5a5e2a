"""Read what a topic carries, as JSON Lines that ``replay`` can read back."""

from __future__ import annotations

import time
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer


async def tail_topic(
    bootstrap_servers: str,
    topic: str,
    sink: TextIO,
    *,
    from_beginning: bool = True,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Write each record as ``{"topic", "key", "value", "partition", "offset", "timestamp"}``.

    JSON values are written as JSON, other values as text.  Returns the number written.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    written = 0
    last_record_at = time.monotonic()
    try:
        while limit is None or written < limit:
            batches = await consumer.getmany(timeout_ms=200)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                if idle_timeout is not None and time.monotonic() - last_record_at > idle_timeout:
                    break
                continue
            last_record_at = time.monotonic()
            for record in records[: None if limit is None else limit - written]:
                line = {
                    "topic": record.topic,
                    "key": None if record.key is None else record.key.decode("utf-8", "replace"),
                    "value": _decoded(record.value),
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                }
                sink.write(orjson.dumps(line).decode() + "\n")
                written += 1
            sink.flush()
    finally:
        await consumer.stop()
    return written


def _decoded(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")

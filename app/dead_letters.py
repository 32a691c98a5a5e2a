"""Dead letters: records that cannot be parsed or validated, kept with the reason.

A pipeline never crashes on bad input and never drops it silently: its agent
reads raw bytes through :func:`valid_records`, which yields what parses and
sends everything else to the ``dead-letters`` topic with the source topic,
partition, offset, the error and the original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from faust import StreamT
from faust.types import EventT, Message

from app.contracts import InvalidRecord  # noqa: F401  (raised by parsers; kept importable here)
from app.faust_app import app, declared_at_startup
from app.settings import settings

dead_letters_topic = declared_at_startup(
    app.topic(
        settings.topic_name("dead-letters"),
        key_type=str,
        internal=True,
        partitions=settings.topic_partitions,
    )
)


# A dead letter quotes its original twice (text and base64): quoting at most this many bytes
# keeps it under Kafka's default 1 MB record limit.
MAX_QUOTED_BYTES = 256 * 1024


def dead_letter(
    *,
    source_topic: str,
    partition: int | None,
    offset: int | None,
    error: str,
    key: bytes | None,
    value: bytes | None,
) -> dict[str, object]:
    """The dead-letter payload for one rejected record.

    >>> letter = dead_letter(source_topic="transactions", partition=3, offset=17,
    ...                      error="bad JSON", key=b"card-1", value=b"{oops")
    >>> letter["value_text"], letter["value_base64"]
    ('{oops', 'e29vcHM=')
    """
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "error": error,
        "key_text": _as_text(key),
        "key_base64": _as_base64(key),
        "value_text": _as_text(value),
        "value_base64": _as_base64(value),
        "rejected_at": time.time(),
    }


def dead_letter_record(message: Message, error: str) -> tuple[bytes, bytes]:
    """Key and value of the dead letter for ``message``, quoting at most :data:`MAX_QUOTED_BYTES` of it.

    An original too large to quote in full (a dead letter must fit in a Kafka record)
    is cut, and the letter says so with the original's size and SHA-256.
    """
    key, value = _raw(message.key), _raw(message.value)
    original_bytes = len(key or b"") + len(value or b"")
    letter = dead_letter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error=error,
        key=key if original_bytes <= MAX_QUOTED_BYTES else _cut(key),
        value=value if original_bytes <= MAX_QUOTED_BYTES else _cut(value),
    )
    if original_bytes > MAX_QUOTED_BYTES:
        letter["truncated"] = True
        letter["original_bytes"] = original_bytes
        letter["original_sha256"] = hashlib.sha256((key or b"") + b"\0" + (value or b"")).hexdigest()
    return message.topic.encode(), orjson.dumps(letter)


async def send_dead_letter(event: EventT, error: str) -> None:
    """Publish ``event``'s original bytes to ``dead-letters`` with ``error``."""
    key, value = dead_letter_record(event.message, error)
    await dead_letters_topic.send(key=key, value=value, value_serializer="raw")


async def valid_records(
    stream: StreamT, parsers: Mapping[str, Callable[[bytes | None, bytes | None], Any]]
) -> AsyncIterator[tuple[Any, EventT]]:
    """Yield ``(parsed record, event)``; dead-letter the records their parser rejects.

    ``parsers`` maps each source topic to a function of the record's key and
    value bytes that raises :class:`InvalidRecord` (or any ``ValueError``,
    ``TypeError`` or ``KeyError``) for a record that breaks the contract.
    """
    async for event in stream.events():
        message = event.message
        try:
            record = parsers[message.topic](_raw(message.key), _raw(message.value))
        except (ValueError, TypeError, KeyError) as exc:
            await send_dead_letter(event, f"{type(exc).__name__}: {exc}")
            continue
        yield record, event


def _raw(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return str(data).encode()


def _cut(data: bytes | None) -> bytes | None:
    return None if data is None else data[: MAX_QUOTED_BYTES // 2]


def _as_text(data: bytes | None) -> str | None:
    if data is None:
        return None
    return data.decode("utf-8", errors="replace")


def _as_base64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")

"""Versioned model snapshots on a compacted Kafka topic, hot-swapped by every worker.

One learner publishes ``Snapshot`` records (keyed by model name) to a
compacted topic; every worker runs a :class:`SnapshotSubscriber` that reads
the topic from the start and keeps the newest snapshot per model.  Snapshots
survive restarts because the topic keeps the latest record of each key.

Pickles can break across River versions, so a snapshot records the format and
the River version it was made with and is refused when they do not match.

Snapshots are pickles, and unpickling runs code: anyone who can write the topic could run
code on every worker.  So every snapshot is signed (HMAC-SHA256 with a key every worker
shares, :func:`signing_key`) and :meth:`Snapshot.decode` checks the signature before it
unpickles anything; an unsigned or forged snapshot (a forged high version would pin the
model) is refused.

Kafka refuses records over about 1 MB (``message.max.bytes``, the producer's
``max_request_size``), so an encoded snapshot larger than ``MAX_SNAPSHOT_BYTES``
raises :class:`SnapshotTooLarge` instead of being sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import river
from aiokafka import AIOKafkaConsumer, TopicPartition

logger = logging.getLogger(__name__)

M = TypeVar("M")

SNAPSHOT_FORMAT = 1
SIGNED_PREFIX = b"eddy-snapshot-hmac-sha256:"
SIGNATURE_BYTES = hashlib.sha256().digest_size
#: The environment variable holding the key that signs snapshots; the same on every worker.
SIGNING_KEY_ENV = "EDDY_SNAPSHOT_KEY"
MIN_KEY_CHARS = 16
DEFAULT_KEY_FILE = Path(__file__).resolve().parent.parent / ".eddy" / "snapshot.key"
# Below Kafka's default 1 MB record limit, with room for the key, headers and batch overhead.
MAX_SNAPSHOT_BYTES = 900 * 1024


class IncompatibleSnapshot(ValueError):
    """A snapshot made by another snapshot format or River version."""


class ForgedSnapshot(IncompatibleSnapshot):
    """A snapshot without a valid signature by this deployment's key."""


class SnapshotTooLarge(ValueError):
    """An encoded snapshot over the size limit: ``size`` and ``limit`` in bytes."""

    def __init__(self, name: str, version: int, size: int, limit: int) -> None:
        super().__init__(name, version, size, limit)
        self.name, self.version, self.size, self.limit = name, version, size, limit

    def __str__(self) -> str:
        return (
            f"snapshot {self.name!r} version {self.version} encodes to {self.size:,} bytes,"
            f" over the limit of {self.limit:,}"
        )


@dataclass
class Snapshot:
    """A model's state at one version, with where its learner had got to."""

    name: str
    version: int
    model: Any
    training_offset: int = -1
    state: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    river_version: str = river.__version__
    format: int = SNAPSHOT_FORMAT

    def encode(self, *, key: bytes, max_bytes: int | None = None) -> bytes:
        """Pickled, compressed and signed with ``key``; raise :class:`SnapshotTooLarge` over ``max_bytes``.

        ``max_bytes`` defaults to ``MAX_SNAPSHOT_BYTES`` (read when called).

        >>> data = Snapshot("demo", version=1, model={"w": 0.5}).encode(key=b"k" * 16)
        >>> Snapshot.decode(data, key=b"k" * 16).model
        {'w': 0.5}
        >>> Snapshot.decode(data, key=b"another key 1234")
        Traceback (most recent call last):
        ...
        models.snapshots.ForgedSnapshot: bad signature: not signed with this deployment's key
        >>> try:
        ...     Snapshot("demo", version=1, model=bytes(100)).encode(key=b"k" * 16, max_bytes=10)
        ... except SnapshotTooLarge as too_large:
        ...     too_large.size > too_large.limit == 10
        True
        """
        body = zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), level=1)
        data = SIGNED_PREFIX + hmac.digest(key, body, "sha256") + body
        limit = MAX_SNAPSHOT_BYTES if max_bytes is None else max_bytes
        if len(data) > limit:
            raise SnapshotTooLarge(self.name, self.version, len(data), limit)
        return data

    @classmethod
    def decode(cls, data: bytes, *, key: bytes) -> Snapshot:
        """Check the signature, then decode; raise :class:`IncompatibleSnapshot` when it cannot be trusted."""
        if not data.startswith(SIGNED_PREFIX):
            raise ForgedSnapshot("unsigned: refused without unpickling it")
        signature = data[len(SIGNED_PREFIX) : len(SIGNED_PREFIX) + SIGNATURE_BYTES]
        body = data[len(SIGNED_PREFIX) + SIGNATURE_BYTES :]
        if not hmac.compare_digest(signature, hmac.digest(key, body, "sha256")):
            raise ForgedSnapshot("bad signature: not signed with this deployment's key")
        snapshot = pickle.loads(zlib.decompress(body))
        if not isinstance(snapshot, cls) or snapshot.format != SNAPSHOT_FORMAT:
            raise IncompatibleSnapshot("unknown snapshot format")
        if snapshot.river_version != river.__version__:
            raise IncompatibleSnapshot(
                f"made with river {snapshot.river_version}, running {river.__version__}"
            )
        return snapshot


def signing_key(environ: Mapping[str, str] | None = None, key_file: Path = DEFAULT_KEY_FILE) -> bytes:
    """The key that signs and checks snapshots.

    ``EDDY_SNAPSHOT_KEY`` (at least 16 characters) when set: give every worker of a
    deployment the same one.  Otherwise a random key kept in ``key_file`` (created on first
    use, readable by its owner only), which serves every worker run from this checkout.

    >>> signing_key({SIGNING_KEY_ENV: "correct horse battery staple"})
    b'correct horse battery staple'
    """
    env = os.environ if environ is None else environ
    configured = env.get(SIGNING_KEY_ENV)
    if configured is not None:
        if len(configured) < MIN_KEY_CHARS:
            raise ValueError(f"{SIGNING_KEY_ENV} must have at least {MIN_KEY_CHARS} characters")
        return configured.encode()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Exclusive creation: of two workers starting at once, one writes and both read it.
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    for _ in range(50):  # the other worker may not have written it yet
        key = key_file.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)
    raise ValueError(f"{key_file} is empty: delete it or set {SIGNING_KEY_ENV}")


class SnapshotSubscriber:
    """Follows a compacted snapshot topic and keeps the newest snapshot of each model.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers, ``host:port``.
    topic
        The snapshot topic (one partition).
    key
        The key snapshots are signed with (:func:`signing_key`); others are refused.
    """

    def __init__(self, bootstrap_servers: str, topic: str, key: bytes) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.key = key
        self.latest: dict[str, Snapshot] = {}
        self.caught_up = asyncio.Event()
        self.refused = 0

    async def run(self, retry_after: float = 1.0) -> None:
        """Read the topic forever; ``caught_up`` is set once the backlog is read.

        Connection or metadata errors (the topic may not exist yet) are retried.
        """
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("snapshot subscriber on %s: %s; retrying", self.topic, exc)
                await asyncio.sleep(retry_after)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 * 2**20,
            fetch_max_bytes=64 * 2**20,
        )
        await consumer.start()
        try:
            partition = TopicPartition(self.topic, 0)
            if self.topic not in await consumer.topics():
                raise LookupError(f"topic {self.topic} does not exist yet")
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            if end == 0:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                records = batches.get(partition, [])
                # Only the newest snapshot of each model in a batch is worth decoding.
                newest = {record.key: record for record in records}
                for record in newest.values():
                    await self._accept(record.value)
                if records and records[-1].offset + 1 >= end:
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _accept(self, data: bytes | None) -> None:
        if data is None:
            return
        try:
            # Decoding takes tens of ms; in a thread, the worker keeps deciding meanwhile.
            snapshot = await asyncio.to_thread(Snapshot.decode, data, key=self.key)
        except Exception as exc:  # a bad snapshot must not stop the worker from scoring
            self.refused += 1
            logger.warning("refused a model snapshot on %s: %s", self.topic, exc)
            return
        current = self.latest.get(snapshot.name)
        if current is None or snapshot.version > current.version:
            self.latest[snapshot.name] = snapshot


class ScoringModel(Generic[M]):
    """The newest snapshot of model ``name`` a worker has, swapped in as snapshots arrive.

    >>> subscriber = SnapshotSubscriber("localhost:9092", "snapshots", key=b"k" * 16)
    >>> scoring = ScoringModel(subscriber, "demo", initial={"w": 0})
    >>> scoring.current(), scoring.version
    ({'w': 0}, 0)
    >>> subscriber.latest["demo"] = Snapshot("demo", version=3, model={"w": 1})
    >>> scoring.current(), scoring.version
    ({'w': 1}, 3)
    """

    def __init__(self, subscriber: SnapshotSubscriber, name: str, initial: M) -> None:
        self.subscriber = subscriber
        self.name = name
        self.model = initial
        self.version = 0

    def current(self) -> M:
        snapshot = self.subscriber.latest.get(self.name)
        if snapshot is not None and snapshot.version != self.version:
            self.model, self.version = snapshot.model, snapshot.version
        return self.model


async def read_partition_range(
    bootstrap_servers: str, topic: str, partition: int, start: int, stop: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """Yield ``(offset, value)`` of records ``start <= offset < stop`` of one partition.

    A restored learner replays with this what it had learned after its last
    snapshot and before a restart, so that no training record is lost.
    """
    if start >= stop:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        position = start
        while position < stop:
            batches = await consumer.getmany(tp, timeout_ms=1_000)
            for record in batches.get(tp, []):
                if record.offset >= stop:
                    return
                position = record.offset + 1
                yield record.offset, record.value
    finally:
        await consumer.stop()

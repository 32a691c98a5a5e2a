"""Write-behind keyed state over a Faust table: read once, written once per key per flush.

Faust writes every ``table[key] = value`` to RocksDB and sends one changelog
record at once.  A :class:`KeyedState` keeps decoded values in memory instead:
reads hit the cache (or the partition's store once), writes only mark the key
dirty, and :meth:`KeyedState.take_dirty` hands the owning stage one value per
dirty key to write to the store and the changelog when it flushes (what Kafka
Streams' record cache and Quix Streams' checkpoints do).

The Faust table still owns what Faust is good at: its changelog topic, the
partition assignment, recovery and standbys.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faust.types import TP, TableT
from rocksdict import WriteBatch

logger = logging.getLogger(__name__)

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class StateCodec(Generic[V]):
    """How a state value is stored: ``encode`` to bytes and ``decode`` back."""

    encode: Callable[[V], bytes]
    decode: Callable[[bytes], V]


class KeyedState(Generic[V]):
    """Decoded values of one table, cached and written behind.

    Parameters
    ----------
    table
        The Faust table (``key_type=bytes, value_type=bytes``) whose changelog
        and partitions this state uses.
    codec
        How values are encoded in the store and the changelog.
    max_cached
        Clean entries kept in memory; beyond it the oldest clean ones are dropped
        after each flush (they are read again from the store when needed).
    """

    def __init__(self, table: TableT, codec: StateCodec[V], max_cached: int = 50_000) -> None:
        self.table = table
        self.codec = codec
        self.max_cached = max_cached
        self._cache: dict[bytes, tuple[int, V | None]] = {}
        self._dirty: dict[bytes, int] = {}
        self.sweep_failures = 0  # stored values sweeps could not read or change, in total

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def get(self, partition: int, key: bytes) -> V | None:
        """The value of ``key`` on ``partition`` (the partition its events come from)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached[1]
        raw = _store_get(self.table.data, partition, key)
        value = None if raw is None else self.codec.decode(raw)
        self._cache[key] = (partition, value)
        return value

    def peek(self, partition: int, key: bytes) -> V | None:
        """Like :meth:`get`, without caching what is read (for sweeps and views)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached[1]
        raw = _store_get(self.table.data, partition, key)
        return None if raw is None else self.codec.decode(raw)

    def current(self, key: bytes, raw: bytes) -> V | None:
        """The value of ``key`` stored as ``raw``: the cached one if any (newer), else ``raw`` decoded."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached[1]
        return self.codec.decode(raw)

    def put(self, partition: int, key: bytes, value: V | None) -> None:
        """Set (``None``: delete) ``key``; written to the store and changelog at the next flush.

        The value object is kept as is: mutate it in place and ``put`` it again freely.
        """
        self._cache[key] = (partition, value)
        self._dirty[key] = partition

    def take_dirty(self) -> dict[int, dict[bytes, bytes | None]]:
        """Encode and hand over every dirty entry, by partition; the entries become clean.

        A deleted key leaves the cache too (the store reads it as absent once the caller has
        written the tombstone): otherwise every key ever swept away stayed cached as ``None``.
        """
        dirty, self._dirty = self._dirty, {}
        by_partition: dict[int, dict[bytes, bytes | None]] = {}
        encode = self.codec.encode
        cache = self._cache
        for key, partition in dirty.items():
            cached = cache.get(key)
            value = None if cached is None else cached[1]
            if value is None:
                cache.pop(key, None)
                by_partition.setdefault(partition, {})[key] = None
            else:
                by_partition.setdefault(partition, {})[key] = encode(value)
        return by_partition

    def write_local(self, partition: int, entries: dict[bytes, bytes | None]) -> None:
        """Write encoded entries to the partition's local store (skipped if not open here)."""
        _store_write(self.table.data, partition, entries)

    def set_persisted_offset(self, partition: int, offset: int) -> None:
        """Remember that the changelog holds everything up to ``offset`` (recovery reads past it)."""
        tp = TP(self.changelog_topic, partition)
        store = self.table.data
        if _is_rocksdb(store) and partition not in store._dbs:
            return
        store.set_persisted_offset(tp, offset)

    def trim(self) -> None:
        """Drop the oldest clean cache entries beyond ``max_cached``."""
        excess = len(self._cache) - self.max_cached
        if excess <= 0:
            return
        dropped = []
        for key in self._cache:
            if key not in self._dirty:
                dropped.append(key)
                if len(dropped) >= excess:
                    break
        for key in dropped:
            del self._cache[key]

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop clean cache entries of partitions this worker no longer owns."""
        gone = set(partitions)
        for key in [k for k, (p, _) in self._cache.items() if p in gone and k not in self._dirty]:
            del self._cache[key]

    def cached_items(self) -> Iterable[tuple[bytes, int, V | None]]:
        for key, (partition, value) in list(self._cache.items()):
            yield key, partition, value

    def has_dirty(self) -> bool:
        return bool(self._dirty)

    def __len__(self) -> int:
        return len(self._cache)


# --- faust store access -------------------------------------------------------------------
# Faust's stores pick a partition from the current event (faust.stores.rocksdb.Store._get/_set);
# a stage that writes a batch after its events went by addresses the partition itself.


def _is_rocksdb(store: Any) -> bool:
    return hasattr(store, "_db_for_partition")


def _store_get(store: Any, partition: int, key: bytes) -> bytes | None:
    if _is_rocksdb(store):
        db = store._dbs.get(partition)
        return None if db is None else db.get(key)
    return store.data.get(key)


def _store_write(store: Any, partition: int, entries: dict[bytes, bytes | None]) -> None:
    if _is_rocksdb(store):
        db = store._dbs.get(partition)
        if db is None:  # revoked meanwhile: the changelog holds the values
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in entries.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        db.write(batch)
        return
    for key, value in entries.items():
        if value is None:
            store.data.pop(key, None)
            store._key_partition.pop(key, None)
        else:
            store.data[key] = value
            store._key_partition[key] = partition


def store_entries(table: TableT, chunk: int = 500) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """The ``(partition, key, stored value)`` of the partitions this worker owns, ``chunk`` at a time.

    Each chunk is read when asked for, from the store as it is then, and ownership is checked
    again for each chunk: faust keeps standby copies (and partitions it owned before) in the
    same store, and those belong to another worker, which alone may write them.  No RocksDB
    iterator lives across chunks (the caller may await between them), so a chunk never holds
    a value older than the store's.
    """
    store = table.data
    if not _is_rocksdb(store):
        keys = list(store.data)
        for start in range(0, len(keys), chunk):
            active = _active_partitions(table)
            yield [
                (partition, key, value)
                for key in keys[start : start + chunk]
                if (partition := store._key_partition.get(key, -1)) in active
                and (value := store.data.get(key)) is not None
            ]
        return
    for partition in sorted(store._dbs):
        start_at = b""
        while partition in _active_partitions(table) and (db := store._dbs.get(partition)) is not None:
            read = list(itertools.islice(db.items(from_key=start_at), chunk))
            if not read:
                break
            yield [(partition, key, value) for key, value in read if key != store.offset_key]
            start_at = read[-1][0] + b"\x00"  # the smallest key after the last one read


def _active_partitions(table: TableT) -> set[int]:
    changelog = table.changelog_topic.get_topic_name()
    return {tp.partition for tp in table.app.assignor.assigned_actives() if tp.topic == changelog}


async def sweep_idle(
    state: KeyedState[V],
    is_idle: Callable[[V], bool],
    on_evicted: Callable[[str, V], None] | None = None,
    chunk: int = 500,
) -> int:
    """Delete every stored key whose value ``is_idle`` (tombstones go out with the next flush);
    ``on_evicted(key, value)`` for each.  Yields to the event loop every ``chunk`` keys."""

    def delete_idle(partition: int, key: bytes, value: V) -> V | None:
        if not is_idle(value):
            return value
        if on_evicted is not None:
            on_evicted(key.decode(), value)
        return None

    return await sweep(state, delete_idle, chunk)


async def sweep(state: KeyedState[V], change: Callable[[int, bytes, V], V | None], chunk: int = 500) -> int:
    """Replace every stored value of the partitions this worker owns by ``change(partition, key,
    value)``: the same object keeps it, ``None`` deletes it.  Returns how many changed.

    One pass over the store, ``chunk`` entries between yields to the event loop; a value
    in the cache (newer than the store's until its flush) is used instead of the stored one.
    A value that does not decode, or that ``change`` fails on, is left as it is and the pass
    goes on; the failures are counted in ``state.sweep_failures`` and logged once per pass.
    """
    changed = failed = 0
    first_failure = ""
    for entries in store_entries(state.table, chunk):
        for partition, key, raw in entries:
            try:
                value = state.current(key, raw)
                if value is None:
                    continue
                new = change(partition, key, value)
            except Exception as exc:  # one bad value must not end every later sweep at it
                failed += 1
                first_failure = first_failure or f"{key[:100]!r} on partition {partition}: {exc!r}"
                continue
            if new is not value:
                state.put(partition, key, new)
                changed += 1
        await asyncio.sleep(0)
    if failed:
        state.sweep_failures += failed
        logger.warning(
            "sweep of %s left %d values it could not read or change (first: %s)",
            state.name,
            failed,
            first_failure,
        )
    return changed

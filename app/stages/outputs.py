"""Records a stage produces, collected per topic partition and sent as whole batches.

One aiokafka batch per partition per flush instead of one Faust ``send`` per
record: the per-record cost is an append to a C record builder.  A flush
returns only once the broker acknowledged every batch, with the offset of the
last record written to each partition.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

Record = tuple[bytes | None, bytes | None]
V = TypeVar("V")

#: Keys in one record of :func:`records_by_partition`.  A key's value is what one flush (at
#: most a stage's ``max_pending`` events) saw of it: a record stays far below Kafka's 1 MB.
KEYS_PER_RECORD = 1_000
#: Keys whose murmur2 hash is kept: an event's key is hashed to check its partition, again for
#: its output and again for its state's changelog record at the flush.
HASHES_KEPT = 8_192

# aiokafka's murmur2 is Python, 2.5 us a key; the least recently hashed are forgotten.
_murmur2 = functools.lru_cache(maxsize=HASHES_KEPT)(murmur2)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    >>> key_partition(b"card-1", 8), key_partition(b"card-1", 8) == key_partition(b"card-1", 8)
    (7, True)
    """
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def records_by_partition(
    values: Mapping[str, V],
    partitions: int,
    encode: Callable[[dict[str, V]], bytes],
    keys_per_record: int = KEYS_PER_RECORD,
) -> list[tuple[int, bytes]]:
    """``values`` by key as ``(partition, record)``: each record the ``encode`` d values of at
    most ``keys_per_record`` keys, all of which Kafka's default partitioner gives that partition.

    >>> records_by_partition({"card-1": 1, "m-7": 2, "card-2": 3}, 8, lambda group: str(group).encode())
    [(7, b"{'card-1': 1}"), (6, b"{'m-7': 2}"), (0, b"{'card-2': 3}")]
    """
    grouped: dict[int, dict[str, V]] = {}
    for key, value in values.items():
        grouped.setdefault(key_partition(key.encode(), partitions), {})[key] = value
    records = []
    for partition, group in grouped.items():
        keys = list(group)
        for start in range(0, len(keys), keys_per_record):
            records.append(
                (partition, encode({key: group[key] for key in keys[start : start + keys_per_record]}))
            )
    return records


@dataclass
class PartitionedRecords:
    """Records waiting to be produced, grouped by ``(topic, partition)`` in arrival order."""

    records: dict[tuple[str, int], list[Record]] = field(default_factory=dict)

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.records.setdefault((topic, partition), []).append((key, value))

    def extend(self, other: PartitionedRecords) -> None:
        for tp, records in other.records.items():
            self.records.setdefault(tp, []).extend(records)

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values())

    def __bool__(self) -> bool:
        return bool(self.records)

    async def produce(self, producer: AIOKafkaProducer) -> dict[tuple[str, int], int]:
        """Send every partition's records in batches; wait for the broker; return last offsets.

        Partitions whose batches all succeeded are removed from ``records``, so that a
        retry after an error sends only what was not acknowledged.
        """
        pending = [(tp, records, await _send(producer, tp, records)) for tp, records in self.records.items()]
        last_offsets: dict[tuple[str, int], int] = {}
        failure: BaseException | None = None
        for tp, records, futures in pending:
            results = await asyncio.gather(*(future for future, _ in futures), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                failure = failure or errors[0]
                continue
            last_metadata, last_count = results[-1], futures[-1][1]
            last_offsets[tp] = last_metadata.offset + last_count - 1
            del self.records[tp]
            del records
        if failure is not None:
            raise failure
        return last_offsets


async def _send(
    producer: AIOKafkaProducer, tp: tuple[str, int], records: Iterable[Record]
) -> list[tuple[asyncio.Future, int]]:
    topic, partition = tp
    futures: list[tuple[asyncio.Future, int]] = []
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
        count += 1
    if count:
        futures.append((await producer.send_batch(batch, topic, partition=partition), count))
    return futures

"""Factories for the stage tests: a real Faust table on the memory store, a recording producer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from aiokafka.structs import RecordMetadata, TopicPartition

from app.stages import stage as stage_module
from app.stages.state import KeyedState, StateCodec


class RecordingBatch:
    """An aiokafka BatchBuilder stand-in that holds at most ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


@dataclass
class RecordingProducer:
    """Keeps what was sent, per partition, with broker offsets; ``fail_next`` sends fail once each."""

    batch_capacity: int = 1_000
    log: list[tuple[str, Any]] = field(default_factory=list)
    written: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)
    fail_next: set[str] = field(default_factory=set)

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch(self.batch_capacity)

    async def send_batch(self, batch: RecordingBatch, topic: str, *, partition: int) -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        if topic in self.fail_next:
            self.fail_next.discard(topic)
            future.set_exception(ConnectionError(f"broker away while sending to {topic}"))
            return future
        written = self.written.setdefault((topic, partition), [])
        base = len(written)
        written.extend(batch.records)
        self.log.append(("sent", topic))
        tp = TopicPartition(topic, partition)
        future.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, base))
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))


class FakeProducerHandle:
    def __init__(self, producer: RecordingProducer) -> None:
        self._producer = producer

    def _ensure_producer(self) -> RecordingProducer:
        return self._producer


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    timestamp: float = 0.0
    generation_id: int = 0
    tracked: bool = False

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@pytest.fixture
def faust_app() -> faust.App:
    return faust.App("stage-tests", store="memory://", broker="kafka://localhost:1")


@pytest.fixture
def json_state(faust_app: faust.App):
    """A factory of write-behind states over memory-store tables."""
    import orjson

    def make(name: str = "things", max_cached: int = 1_000) -> KeyedState:
        table = faust_app.Table(name, key_type=bytes, value_type=bytes, partitions=4)
        return KeyedState(table, StateCodec(encode=orjson.dumps, decode=orjson.loads), max_cached=max_cached)

    return make


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch, faust_app: faust.App):
    """A producer that records, wired into ``faust_app``; acks recorded in ``producer.log``."""
    producer = RecordingProducer()
    monkeypatch.setattr(type(faust_app), "producer", property(lambda app: FakeProducerHandle(producer)))
    monkeypatch.setattr(type(faust_app), "consumer", property(lambda app: None))
    monkeypatch.setattr(
        stage_module,
        "ack_processed",
        lambda consumer, message: producer.log.append(("acked", message.offset)),
    )

    class DeclaredTopic:
        def __init__(self, name: str) -> None:
            self.topics = (name,)

        async def maybe_declare(self) -> None:
            producer.log.append(("declared", self.topics[0]))

        def get_topic_name(self) -> str:
            return self.topics[0]

    monkeypatch.setattr(stage_module, "dead_letters_topic", DeclaredTopic("dead-letters"))

    async def declare_changelog(topic: Any) -> None:
        producer.log.append(("declared", topic.get_topic_name()))

    monkeypatch.setattr(faust.topics.Topic, "maybe_declare", declare_changelog)
    producer.topic = DeclaredTopic  # type: ignore[attr-defined]
    return producer

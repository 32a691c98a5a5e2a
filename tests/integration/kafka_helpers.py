"""Helpers for tests that talk to a real broker: topics, producing, reading, workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.worker_process import free_port, start_worker, stop_worker

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def send_raw(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int | None = None
) -> None:
    """Send ``records`` as they are (to ``partition``, or where Kafka's default partitioner puts them)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def wait_for_stable_group(bootstrap: str, group_id: str, members: int, timeout: float = 90.0) -> None:
    """Wait until the consumer group has ``members`` members and no rebalance under way."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                description = (await admin.describe_consumer_groups([group_id]))[0]
            except KafkaError as exc:
                if not exc.retriable:  # e.g. no coordinator yet on a fresh broker: ask again
                    raise
            else:
                group = description.groups[0]
                if group[2] == "Stable" and len(group[5]) == members:
                    return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    raise TimeoutError(f"group {group_id} did not settle with {members} members")


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool],
    timeout: float,
    settle: float = 0.0,
    decode: bool = True,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Read ``topic`` from the start until ``until(records)`` holds, then ``settle`` seconds more."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation_level,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    done_at: float | None = None
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                for record in batch:
                    records.append((record.key, orjson.loads(record.value)) if decode else record)
            if done_at is None and until(records):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= settle:
                break
    finally:
        await consumer.stop()
    return records


@dataclass
class Worker:
    """A real ``faust -A app worker`` subprocess with its own topics and state."""

    bootstrap: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}-")
    web_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BROKER": f"kafka://{self.bootstrap}",
            "EDDY_TOPIC_PREFIX": self.prefix,
            "EDDY_APP_ID": f"eddy-{self.prefix.rstrip('-')}",
            "EDDY_TOPIC_PARTITIONS": "4",
            **self.extra_env,
        }

    @property
    def group_id(self) -> str:
        return self.env["EDDY_APP_ID"]

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def start(self) -> Worker:
        self.process = start_worker(self.workdir, web_port=self.web_port, env=self.env)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process and self.process.poll() is None, self.log_tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (a worker with a web token refuses "/" without it)
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"worker did not answer on its web port\n{self.log_tail()}")

    def get_json(
        self, path: str, headers: dict[str, str] | None = None, settle_for: float = 60.0
    ) -> tuple[int, Any]:
        """Status and JSON body of a GET, asked again (as the answer says) while partitions move.

        A routed view answers 503 "partitions are being assigned" during a rebalance, which
        a worker's first minute can hold more than one of; any other answer is returned.
        """
        deadline = time.monotonic() + settle_for
        while True:
            status, body = self._get_json_once(path, headers)
            moving = status == 503 and isinstance(body, dict) and "being assigned" in body.get("error", "")
            if not moving or time.monotonic() > deadline:
                return status, body
            time.sleep(0.5)

    def view_when(self, path: str, predicate: Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """The JSON body of ``path`` once it answers 200 with a body ``predicate`` accepts (asked
        every 0.5 s); fails the test with the last body and the worker's log after ``timeout``."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = self.get_json(path)
            if status == 200 and predicate(body):
                return body
            time.sleep(0.5)
        raise AssertionError(f"{path} never satisfied the condition: {body}\n{self.log_tail()}")

    def _get_json_once(self, path: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, orjson.loads(body) if body.startswith((b"{", b"[")) else body

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_worker(self.process, sig)

    def log_tail(self, lines: int = 60) -> str:
        path = self.workdir / "worker.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def read_decisions(worker: Worker, expected: int, isolation: str = "read_uncommitted") -> list[Any]:
    """``worker``'s app's decisions, read until ``expected`` distinct transactions are decided."""
    return run(
        read_topic(
            worker.bootstrap,
            worker.topic("fraud-decisions"),
            until=lambda records: len({v["tx_id"] for _, v in records}) >= expected,
            timeout=240,
            settle=4.0,
            isolation_level=isolation,
        )
    )


def assert_decided_once_or_repeated_identically(
    decisions: list[Any], transactions: set[str], logs: str = ""
) -> Counter[str]:
    """Every transaction decided, none lost, and any repeat byte for byte the same decision."""
    per_tx = Counter(value["tx_id"] for _, value in decisions)
    assert set(per_tx) == transactions, logs
    for tx_id in (tx for tx, n in per_tx.items() if n > 1):
        assert len({orjson.dumps(v) for _, v in decisions if v["tx_id"] == tx_id}) == 1, tx_id
    return per_tx

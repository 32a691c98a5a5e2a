"""A real Kafka broker for the integration tests: started by the project, or reused."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.simulation.producer import delete_topics
from broker import local_kafka
from tests.integration.kafka_helpers import Worker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a broker: $KAFKA_BROKER when set, else the local one (started if down)."""
    if os.environ.get("KAFKA_BROKER"):
        yield os.environ["KAFKA_BROKER"].split("://", 1)[-1]
        return
    with local_kafka() as bootstrap:
        yield bootstrap


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator:
    """Start real workers with isolated topics; all are stopped when the test ends."""
    workers: list[Worker] = []

    def start(workdir_of: Worker | None = None, **kwargs) -> Worker:
        """A new worker; ``prefix=`` joins another's app, ``workdir_of=`` restarts on its state."""
        workdir = workdir_of.workdir if workdir_of else tmp_path / f"worker-{len(workers)}"
        worker = Worker(kafka_bootstrap, workdir, **kwargs)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()
    # The test's topics (its inputs, outputs, changelogs): a developer's broker, kept between
    # runs, would otherwise hold every run's partitions, and every worker decodes them all.
    prefixes = {prefix for worker in workers for prefix in (worker.prefix, worker.group_id)}
    try:
        asyncio.run(delete_topics(kafka_bootstrap, prefixes))
    except Exception as exc:  # the test's verdict stands; only the broker keeps more
        warnings.warn(f"could not delete the test's topics ({sorted(prefixes)}): {exc!r}", stacklevel=1)

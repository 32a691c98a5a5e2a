"""Benchmarks delete their runs' topics: a broker kept between runs does not fill up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient

from app.simulation.producer import delete_topics, ensure_topics


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _eventually(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def test_deleting_by_prefix_removes_exactly_the_run_s_topics(kafka_bootstrap):
    run = f"cleanup{uuid.uuid4().hex[:6]}-"
    other = f"kept{uuid.uuid4().hex[:6]}-clicks"
    theirs = [f"{run}clicks", f"{run}recommendations", f"eddy-{run}user-state-changelog"]
    asyncio.run(ensure_topics(kafka_bootstrap, [*theirs, other], 2))
    # The broker lists a topic shortly after creating it, and forgets it shortly after deleting it.
    assert _eventually(lambda: set(theirs) | {other} <= asyncio.run(_topics(kafka_bootstrap)))

    deleted = asyncio.run(delete_topics(kafka_bootstrap, [run, f"eddy-{run}"]))

    assert deleted == sorted(theirs)
    assert _eventually(lambda: not set(theirs) & asyncio.run(_topics(kafka_bootstrap)))
    assert other in asyncio.run(_topics(kafka_bootstrap))
    asyncio.run(delete_topics(kafka_bootstrap, [other]))

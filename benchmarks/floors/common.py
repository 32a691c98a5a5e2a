"""What every floor shares: the backlog it works through and how its rate is timed."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from app.simulation.producer import OutgoingEvent, ensure_topics, produce_events

PARTITIONS = 8
KEYS = 5_000
COMMIT_EVERY = 2_000  # records between offset commits (Faust's ``broker_commit_every``)
PAYLOAD = {"tx_id": "tx-000000001", "card_id": "card-0001", "merchant_id": "m-0001", "amount": 12.5}
MODES = {
    "noop": "nothing (consume only)",
    "send": "one produce",
    "table": "one changelogged state get + set",
    "both": "state get + set and one produce",
}


@dataclass(frozen=True, slots=True)
class Backlog:
    """``events`` records already in ``source`` (``PARTITIONS`` partitions); ``sink`` exists, empty."""

    run: str
    events: int

    @property
    def source(self) -> str:
        return f"floor-{self.run}-source"

    @property
    def sink(self) -> str:
        return f"floor-{self.run}-sink"


def produce_backlog(bootstrap: str, events: int) -> Backlog:
    """New source and sink topics, the source holding ``events`` copies of ``PAYLOAD`` over ``KEYS`` keys."""
    backlog = Backlog(uuid.uuid4().hex[:8], events)
    # The sink has no consumer, so no floor creates it; the broker does not auto-create topics.
    asyncio.run(ensure_topics(bootstrap, [backlog.source, backlog.sink], PARTITIONS))
    records = (OutgoingEvent(backlog.source, f"card-{i % KEYS}", PAYLOAD) for i in range(events))
    asyncio.run(produce_events(records, bootstrap))
    return backlog


class Progress:
    """Counts handled events; the rate runs from the first event's arrival to the ``total``-th handled."""

    __slots__ = ("done", "ended", "started", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = 0.0
        self.ended = 0.0

    def arrived(self) -> None:
        """Events are here to handle: the clock starts at the first call."""
        if not self.started:
            self.started = time.perf_counter()

    def handled(self, n: int = 1) -> bool:
        """Note ``n`` more events handled; True once all ``total`` are (the clock stops then)."""
        self.done += n
        if self.done >= self.total and not self.ended:
            self.ended = time.perf_counter()
        return self.done >= self.total

    @property
    def rate(self) -> float:
        """Events per second; raises if the backlog was not worked through."""
        if self.done < self.total:
            raise RuntimeError(f"only {self.done} of {self.total} events handled")
        return self.total / (self.ended - self.started)

"""Custom commands: ``faust -A app simulate|replay|tail --help``."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faust.cli import argument, option

from app.faust_app import app
from app.settings import settings
from app.simulation import files
from app.simulation.producer import ensure_topics, produce_events
from app.simulation.streams import STREAMS, build_stream
from app.simulation.tail import tail_topic
from app.simulation.transactions import SCENARIOS


def _epoch(value: str | None) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _produce(
    events: Iterable[Any], topics: Iterable[str], *, total: int, progress: bool, **pace: float | None
) -> Counter[str]:
    """Create the (prefixed) topics if missing, then produce ``events`` with ``rate``/``speedup``."""
    names = [settings.topic_name(topic) for topic in topics]
    await ensure_topics(settings.kafka_bootstrap, names, settings.topic_partitions)
    return await produce_events(
        events,
        settings.kafka_bootstrap,
        topic_prefix=settings.topic_prefix,
        total=total,
        progress=progress,
        **pace,
    )


@app.command(
    argument("stream", type=str),
    option("--seed", type=int, default=0, show_default=True, help="Seed; a seed gives one stream."),
    option("--size", type=int, default=None, help="Cards, users or devices (stream default if unset)."),
    option("--start", type=str, default=None, help="Event-time start, ISO-8601 (UTC if naive)."),
    option("--days", type=float, default=None, help="Event-time span in days."),
    option("--rate", type=float, default=None, help="Events/s offered (default: as fast as possible)."),
    option(
        "--speedup",
        type=float,
        default=None,
        help="Event-time compression: event seconds per wall second (e.g. 86400: a day a second).",
    ),
    option("--label-delay-days", type=float, default=None, help="transactions: days until labels."),
    option(
        "--scenario",
        type=str,
        default="default",
        show_default=True,
        help="transactions: default, or handbook (the fraud detection handbook's simulator).",
    ),
    option("--limit", type=int, default=None, help="Stop after this many events."),
    option("--progress/--no-progress", default=True, help="Show a progress bar."),
)
async def simulate(
    self: Any,
    stream: str,
    seed: int,
    size: int | None,
    start: str | None,
    days: float | None,
    rate: float | None,
    speedup: float | None,
    label_delay_days: float | None,
    scenario: str,
    limit: int | None,
    progress: bool,
) -> None:
    """Produce a realistic synthetic STREAM: transactions (with fraud-labels), clicks or sensors."""
    if stream not in STREAMS:
        raise SystemExit(f"unknown stream {stream!r}; choose from {', '.join(STREAMS)}")
    if scenario not in SCENARIOS or (scenario != "default" and stream != "transactions"):
        raise SystemExit(f"unknown scenario {scenario!r}; transactions have {', '.join(SCENARIOS)}")
    events, topics, total = build_stream(
        stream,
        seed=seed,
        size=size,
        start=_epoch(start),
        days=days,
        label_delay_days=label_delay_days,
        limit=limit,
        scenario=scenario,
    )
    counts = await _produce(events, topics, total=total, rate=rate, speedup=speedup, progress=progress)
    self.say(f"produced {dict(counts)}")


@app.command(
    argument("path", type=str),
    option("--topic", type=str, default=None, help="CSV: the topic of every row."),
    option("--key-field", type=str, default=None, help="CSV: the column used as the key."),
    option("--rate", type=float, default=None, help="Events/s (default: as fast as possible)."),
    option("--progress/--no-progress", default=True, help="Show a progress bar."),
)
async def replay(
    self: Any, path: str, topic: str | None, key_field: str | None, rate: float | None, progress: bool
) -> None:
    """Replay PATH into Kafka in file order: JSON Lines of {"topic","key","value"}, or CSV rows."""
    events = files.read_events(Path(path), topic=topic, key_field=key_field)
    topics = {event.topic for event in events}
    counts = await _produce(events, topics, total=len(events), rate=rate, progress=progress)
    self.say(f"replayed {dict(counts)}")


@app.command(
    argument("topic", type=str),
    option("--output", type=str, default=None, help="Write JSON Lines to this file instead of stdout."),
    option("--from-beginning/--from-end", default=True, help="Start at the oldest or the newest record."),
    option("--limit", type=int, default=None, help="Stop after this many records."),
    option("--idle-timeout", type=float, default=None, help="Stop after this many seconds without records."),
)
async def tail(
    self: Any,
    topic: str,
    output: str | None,
    from_beginning: bool,
    limit: int | None,
    idle_timeout: float | None,
) -> None:
    """Print (or save as JSON Lines) what TOPIC carries, e.g. fraud-decisions."""
    name = topic if topic.startswith(settings.topic_prefix) else settings.topic_name(topic)
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        written = await tail_topic(
            settings.kafka_bootstrap,
            name,
            sink,
            from_beginning=from_beginning,
            limit=limit,
            idle_timeout=idle_timeout,
        )
    finally:
        if output:
            sink.close()
    if output:
        self.say(f"wrote {written} records to {output}")

"""The simulated streams the ``simulate`` command offers, built from command-line options."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from app.simulation.transactions import SimulatedEvent


@dataclass(frozen=True)
class StreamSpec:
    """How to build one stream: its config class, generator, topics and the field ``--size`` sets."""

    config: Callable[..., Any]
    generate: Callable[[Any], Iterator[SimulatedEvent]]
    topics: tuple[str, ...]
    size_field: str


def _specs() -> dict[str, StreamSpec]:
    from app.simulation.clicks import ClickStreamConfig, generate_click_stream
    from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
    from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream

    return {
        "transactions": StreamSpec(
            TransactionStreamConfig, generate_transaction_stream, ("transactions", "fraud-labels"), "n_cards"
        ),
        "clicks": StreamSpec(ClickStreamConfig, generate_click_stream, ("clicks",), "n_users"),
        "sensors": StreamSpec(SensorStreamConfig, generate_sensor_stream, ("sensor-readings",), "n_devices"),
    }


STREAMS = ("transactions", "clicks", "sensors")


def build_stream(
    name: str,
    *,
    seed: int = 0,
    size: int | None = None,
    start: float | None = None,
    days: float | None = None,
    label_delay_days: float | None = None,
    limit: int | None = None,
    scenario: str = "default",
) -> tuple[Iterator[SimulatedEvent], tuple[str, ...], int]:
    """The events of stream ``name``, its topics, and its exact length (for progress and ETA).

    ``scenario`` picks the transactions' simulator (``default`` or ``handbook``); the other
    streams have only ``default``.

    >>> events, topics, total = build_stream("transactions", size=20, days=2.0)
    >>> topics, total == sum(1 for _ in events)
    (('transactions', 'fraud-labels'), True)
    >>> events, _, total = build_stream("transactions", size=20, days=2.0, scenario="handbook")
    >>> next(events).value["country"], total > 0
    ('BE', True)
    """
    spec = _specs()[name]
    if name == "transactions":
        from app.simulation.transactions import stream_config

        config = stream_config(scenario, seed=seed)
    elif scenario != "default":
        raise ValueError(f"stream {name!r} has no scenario {scenario!r}")
    else:
        config = spec.config(seed=seed)
    changes: dict[str, Any] = {}
    if size is not None:
        changes[spec.size_field] = size
    if start is not None:
        changes["start"] = start
    if days is not None:
        changes["days"] = days
    if label_delay_days is not None and name == "transactions":
        changes["label_delay_seconds"] = label_delay_days * 86_400.0
    config = replace(config, **changes)
    # Generators are deterministic: counting a first pass costs seconds and gives a true ETA.
    total = sum(1 for _ in itertools.islice(spec.generate(config), limit))
    return itertools.islice(spec.generate(config), limit), spec.topics, total

"""Floors: what the bare machinery does per event on this machine and broker, for eddy to be read against.

Each floor works through the same backlog (:mod:`benchmarks.floors.common`) in one process
and reports events per second:

* stock Faust (:mod:`benchmarks.faust_floor`), faust's aiokafka transport and its
  confluent-kafka one (``confluent://``);
* a bare aiokafka consume -> produce loop (:mod:`benchmarks.floors.aiokafka_floor`);
* Quix Streams 3.x (:mod:`benchmarks.floors.quix_floor`; optional ``quixstreams`` package,
  installed by ``make bench`` as the ``bench`` extra).

:func:`measure_all` runs them one after the other and keeps going when one fails: a floor
that cannot run gets its reason instead of a rate.  :func:`markdown` renders them with
eddy's throughput divided by each.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from benchmarks.floors.common import KEYS, MODES, PARTITIONS

__all__ = ["FLOORS", "Floor", "FloorResult", "markdown", "measure_all", "ratio"]


@dataclass(frozen=True, slots=True)
class Floor:
    name: str
    module: str  # has ``measure(bootstrap, mode, events, **options) -> float``
    modes: tuple[str, ...]
    packages: tuple[str, ...]  # distributions it needs; their versions go into the report
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class FloorResult:
    floor: str  # the floor's name with its packages' versions
    mode: str
    rate: float | None  # events/s; None when it could not be measured
    error: str = ""


_FAUST = "Faust as eddy runs it" if os.environ.get("FLOOR_PATCHED") == "1" else "stock Faust"
# The confluent transport may never get a partition assignment: don't wait long for it.
FLOORS = (
    Floor(f"{_FAUST}, aiokafka transport", "benchmarks.faust_floor", ("noop", "send", "table", "both"),
          ("faust-streaming", "aiokafka")),
    Floor(f"{_FAUST}, confluent-kafka transport", "benchmarks.faust_floor", ("noop", "both"),
          ("faust-streaming", "confluent-kafka"), (("transport", "confluent"), ("timeout", 60))),
    Floor("bare aiokafka loop", "benchmarks.floors.aiokafka_floor", ("noop", "send"), ("aiokafka",)),
    Floor("Quix Streams", "benchmarks.floors.quix_floor", ("noop", "both"),
          ("quixstreams", "confluent-kafka")),
)  # fmt: skip


def measure_all(
    bootstrap: str,
    events: int = 30_000,
    floors: Iterable[Floor] = FLOORS,
    log: Callable[[str], None] = print,
) -> list[FloorResult]:
    results = []
    for floor in floors:
        versions = _versions(floor.packages)
        missing = [p for p, v in versions.items() if v is None]
        listed = ", ".join(f"{p} {v or '(not installed)'}" for p, v in versions.items())
        name = f"{floor.name} ({listed})"
        for mode in floor.modes:
            if missing:
                why = f"not installed: {', '.join(missing)} (`pip install -e '.[bench]'`)"
                result = FloorResult(name, mode, None, why)
            else:
                measure = importlib.import_module(floor.module).measure
                try:
                    result = FloorResult(name, mode, measure(bootstrap, mode, events, **dict(floor.options)))
                except Exception as exc:  # a floor that fails is a result too
                    result = FloorResult(name, mode, None, f"{type(exc).__name__}: {exc}")
            log(f"floor: {result}")
            results.append(result)
    return results


def _versions(packages: Iterable[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def ratio(eddy: float, floor: float | None) -> str:
    """Eddy's rate divided by a floor's, ``0.21``; ``—`` without a floor."""
    if not floor or math.isnan(eddy):
        return "—"
    return f"{eddy / floor:.2f}"


def markdown(results: Iterable[FloorResult], eddy_tx_per_second: float, events: int) -> list[str]:
    """A table of the floors measured in one run, each with eddy's tx/s divided by its events/s."""
    rows = [
        f"Floors on the same machine and broker, same run (`benchmarks/floors`): one process each, a "
        f"backlog of {events:,} events ({PARTITIONS} partitions, {KEYS:,} keys, raw bytes), events/s "
        f"from the first event to the last. Ratio: eddy's **{eddy_tx_per_second:.0f} tx/s** above divided by "
        "the floor's events/s (a transaction is several stage events in eddy, one event in a floor).",
        "",
        "| floor | work per event | events/s | eddy tx/s ÷ floor |",
        "|---|---|---|---|",
    ]
    for result in results:
        rate = f"{result.rate:.0f}" if result.rate is not None else f"failed: {_cell(result.error)}"
        rows.append(
            f"| {result.floor} | {MODES.get(result.mode, result.mode)} | {rate} "
            f"| {ratio(eddy_tx_per_second, result.rate)} |"
        )
    return rows


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(text.replace("|", "\\|").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

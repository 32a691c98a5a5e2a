"""The worker process as the operating system and Python see it: memory and garbage-collector pauses.

Python's cyclic garbage collector stops the event loop while it runs; a full
collection scans every container object the worker holds (cached table values,
faust's and aiokafka's bookkeeping), so its pauses grow with the worker's state
and show up directly as decision latency.  :class:`GcPauses` measures them, per
generation, through :data:`gc.callbacks`; :func:`freeze_startup_objects` takes what
a worker builds once (modules, faust's app, the models) out of every later scan, and
:class:`SurvivorFreezer` (opt-in) does the same after every full collection.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from pathlib import Path
from typing import Any, Self

from app.stages.lag import LagSample

_PAGE_SIZE = 4096


def resident_mb() -> float | None:
    """This process's resident memory in MB (``None`` where ``/proc`` is not available)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(resident_pages * _PAGE_SIZE / 2**20, 1)


class _GcCallback:
    """Something the collector calls before and after each run (:data:`gc.callbacks`), once installed."""

    def install(self) -> Self:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        raise NotImplementedError


class GcPauses(_GcCallback):
    """Durations of the garbage collector's runs, per generation, while :meth:`install` ed.

    >>> pauses = GcPauses().install()
    >>> _ = gc.collect()
    >>> pauses.counts[2] >= 1 and pauses.samples[2].quantile(1.0) >= 0.0
    True
    >>> pauses.uninstall()
    """

    def __init__(self, size: int = 1_000) -> None:
        self.samples = {generation: LagSample(size) for generation in (0, 1, 2)}
        self.counts: Counter[int] = Counter()
        self.total_seconds = 0.0
        self._started: float | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            pause = time.perf_counter() - self._started
            self._started = None
            generation = info["generation"]
            self.samples[generation].add(pause)
            self.counts[generation] += 1
            self.total_seconds += pause

    def report(self) -> dict[str, Any]:
        return {
            "collections": {str(generation): self.counts[generation] for generation in (0, 1, 2)},
            "pauses": {str(generation): sample.report() for generation, sample in self.samples.items()},
            "total_seconds": round(self.total_seconds, 3),
            "tracked_objects_by_generation": gc.get_count(),
            "frozen_objects": gc.get_freeze_count(),
        }


def freeze_startup_objects() -> int:
    """Collect garbage, then move every object alive now out of the collector's scans (``gc.freeze``).

    Called once, when a worker has started: the code, faust's app and its services live as
    long as the process, and a full collection scanned them every time (measured: 131,000
    objects after importing the app alone, 66 ms per full collection; a worker's full
    collections took 146 ms at the median).  Objects frozen here are never collected, so
    this is for what lives as long as the process.  Returns how many objects are frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class SurvivorFreezer(_GcCallback):
    """Moves what survived each full collection out of the next ones' scans (``gc.freeze``).

    A worker's cached state survives collection after collection, and each full collection
    scans all of it again: in a soak at 400 tx/s full collections came every ~9 s and
    stopped the event loop for 0.5-1.2 s.  Frozen after each full collection, the survivors
    are no longer scanned; the next full collection looks only at what was promoted since.
    Objects that become unreachable *in a reference cycle* while frozen are not reclaimed
    until :meth:`thaw` (``gc.unfreeze``, which the worker calls every few minutes): the next
    full collection then scans everything once and reclaims them (objects freed by their
    reference count, most of a worker's garbage, are freed at once either way).

    >>> freezer = SurvivorFreezer().install()
    >>> kept = [[n] for n in range(10)]
    >>> _ = gc.collect()
    >>> gc.get_freeze_count() >= 10, freezer.freezes
    (True, 1)
    >>> freezer.thaw(); gc.get_freeze_count()
    0
    >>> freezer.uninstall()
    """

    def __init__(self) -> None:
        self.freezes = 0
        self.thaws = 0

    def thaw(self) -> None:
        """Let the next full collection scan (and reclaim cycles among) every object again."""
        gc.unfreeze()
        self.thaws += 1

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()  # only moves the collector's lists; nothing is scanned or freed here
            self.freezes += 1

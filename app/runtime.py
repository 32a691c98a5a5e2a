"""The worker process as the operating system and Python see it: memory, garbage-collector pauses
and event-loop stalls.

Python's cyclic garbage collector stops the event loop while it runs; a full
collection scans every container object the worker holds (cached table values,
faust's and aiokafka's bookkeeping), so its pauses grow with the worker's state
and show up directly as decision latency.  :class:`GcPauses` measures them, per
generation, through :data:`gc.callbacks`; :func:`freeze_startup_objects` takes what
a worker builds once (modules, faust's app, the models) out of every later scan, and
:class:`SurvivorFreezer` (opt-in) does the same after every full collection.
:class:`LoopStalls` catches everything else that holds the loop: it records where the loop
was when it stopped answering.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from app.stages.lag import LagSample

_PAGE_SIZE = 4096


def resident_mb(pid: int | None = None) -> float | None:
    """This process's (or process ``pid``'s) resident memory in MB (``None`` where ``/proc`` is
    not available, or no such process runs)."""
    try:
        resident_pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(resident_pages * _PAGE_SIZE / 2**20, 1)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (AttributeError, OSError):
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()


def heap_report() -> dict[str, float | int]:
    """Where resident memory is held, beyond RocksDB's budget: Python's allocated blocks and, with
    glibc, malloc's heap in use, free inside it (fragmentation: resident, not in use) and mapped.

    >>> report = heap_report()
    >>> report["python_allocated_blocks"] > 0
    True
    """
    report: dict[str, float | int] = {"python_allocated_blocks": sys.getallocatedblocks()}
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        report["malloc_in_use_mb"] = round(info.uordblks / 2**20, 1)
        report["malloc_free_mb"] = round(info.fordblks / 2**20, 1)
        report["malloc_mmapped_mb"] = round(info.hblkhd / 2**20, 1)
    return report


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


def set_young_threshold(allocations: int) -> tuple[int, int, int]:
    """Collect the youngest generation after ``allocations`` net container allocations (Python's
    default: 700), the older generations' thresholds unchanged; returns the thresholds now.

    A worker allocates containers for every record (messages, events, decoded values) that die
    young: a higher threshold lets more of them die before a collection looks at them, and
    fewer collections promote survivors towards the full collections that scan everything.

    >>> before = gc.get_threshold()
    >>> set_young_threshold(10_000)[0]
    10000
    >>> _ = set_young_threshold(before[0])
    """
    if allocations < 1:
        raise ValueError(f"the young threshold must be at least 1, got {allocations}")
    gc.set_threshold(allocations, *gc.get_threshold()[1:])
    return gc.get_threshold()


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


@dataclass(frozen=True, slots=True)
class Stall:
    """The event loop ran no other callback for ``seconds``; ``stack`` is where it was (innermost last)."""

    seconds: float
    stack: tuple[str, ...]


class LoopStalls:
    """Stretches of time in which an event loop answered nothing, and where it was meanwhile.

    A callback on the loop marks it alive every ``interval`` seconds; a thread watches the
    mark.  When the mark is older than ``threshold``, the thread takes the loop thread's
    stack once (what holds the loop), and when the mark moves again the stall is recorded
    with its length.  The ``keep`` longest stalls are kept with their stacks; every stall
    counts in the totals.  Garbage collection holds the interpreter, so the thread sees a
    collection's stall only when it ends, usually with the stack of the code it interrupted:
    :class:`GcPauses` tells those apart.

    >>> async def block():
    ...     stalls = LoopStalls(threshold=0.05, interval=0.01).start()
    ...     await asyncio.sleep(0.05)
    ...     time.sleep(0.3)  # holds the loop
    ...     await asyncio.sleep(0.2)
    ...     stalls.stop()
    ...     return stalls
    >>> stalls = asyncio.run(block())
    >>> stalls.count >= 1, stalls.longest[0].seconds >= 0.25
    (True, True)
    >>> any("time.sleep(0.3)" in line for line in stalls.longest[0].stack)
    True
    """

    def __init__(
        self, threshold: float = 0.2, interval: float = 0.02, keep: int = 10, depth: int = 12
    ) -> None:
        self.threshold = threshold
        self.interval = interval
        self.keep = keep
        self.depth = depth
        self.count = 0
        self.total_seconds = 0.0
        self.longest: list[Stall] = []
        self.samples = LagSample(1_000)
        self._mark = time.monotonic()
        self._stack: tuple[str, ...] | None = None
        self._loop_thread: int | None = None
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> Self:
        """Watch the running event loop (call from a coroutine on it)."""
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._mark = time.monotonic()
        self._beat(loop)
        threading.Thread(target=self._watch, name="eddy-loop-stalls", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._mark = time.monotonic()
        self._handle = loop.call_later(self.interval, self._beat, loop)

    def _watch(self) -> None:
        watched_mark = self._mark
        while not self._stopped.wait(self.interval):
            mark = self._mark
            if mark != watched_mark:
                if self._stack is not None:
                    self._record(mark - watched_mark - self.interval, self._stack)
                self._stack, watched_mark = None, mark
            elif self._stack is None and time.monotonic() - mark > self.threshold + self.interval:
                self._stack = self._loop_stack()

    def _loop_stack(self) -> tuple[str, ...]:
        frame = sys._current_frames().get(self._loop_thread or 0)
        if frame is None:
            return ()
        summary = traceback.extract_stack(frame)[-self.depth :]
        return tuple(f"{entry.filename}:{entry.lineno} {entry.name}: {entry.line}" for entry in summary)

    def _record(self, seconds: float, stack: tuple[str, ...]) -> None:
        self.count += 1
        self.total_seconds += seconds
        self.samples.add(seconds)
        # A new list, assigned at once: the loop thread may be reading the old one.
        ranked = sorted([*self.longest, Stall(seconds, stack)], key=lambda stall: stall.seconds, reverse=True)
        self.longest = ranked[: self.keep]

    def report(self) -> dict[str, Any]:
        return {
            "threshold_ms": round(self.threshold * 1000.0),
            "count": self.count,
            "total_seconds": round(self.total_seconds, 3),
            "durations": self.samples.report(),
            "longest": [{"ms": round(s.seconds * 1000.0, 1), "stack": list(s.stack)} for s in self.longest],
        }

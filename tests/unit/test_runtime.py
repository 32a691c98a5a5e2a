import asyncio
import gc
import time
import weakref

from app.runtime import GcPauses, LoopStalls, freeze_startup_objects, heap_report, resident_mb


def test_a_full_collection_is_counted_with_its_pause():
    pauses = GcPauses().install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.uninstall()
    gc.collect()  # after uninstall: not counted
    assert pauses.counts[2] == 1 and pauses.counts[0] == 1
    assert pauses.total_seconds == sum(sum(sample.values) for sample in pauses.samples.values())
    report = pauses.report()
    assert report["collections"] == {"0": 1, "1": 0, "2": 1}
    assert report["pauses"]["1"] == {"p50_ms": None, "p99_ms": None, "max_ms": None}


def test_installing_twice_counts_each_collection_once():
    pauses = GcPauses().install().install()
    try:
        gc.collect()
    finally:
        pauses.uninstall()
    assert pauses.counts[2] == 1


def test_the_resident_memory_of_this_process_is_reported_in_mb():
    assert 1.0 < resident_mb() < 100_000.0


def test_the_heap_report_follows_python_objects_and_mallocs_memory():
    before = heap_report()
    objects = [[n] for n in range(100_000)]
    blob = bytearray(64 * 2**20)  # above malloc's mmap threshold: mapped, not in its heap
    after = heap_report()
    assert after["python_allocated_blocks"] - before["python_allocated_blocks"] >= 100_000
    # Each figure is rounded to 0.1 MB: 86.6 - 22.6 is 63.99999... in floating point.
    assert after["malloc_mmapped_mb"] - before["malloc_mmapped_mb"] >= 64.0 - 0.2
    assert after["malloc_in_use_mb"] >= 0.0 and after["malloc_free_mb"] >= 0.0
    del objects, blob


def test_objects_alive_at_start_up_leave_the_collectors_scans():
    try:
        kept = [[n] for n in range(1_000)]
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() and frozen >= 1_000
        scanned = {id(obj) for obj in gc.get_objects()}  # what a collection would look at
        assert not any(id(x) in scanned for x in kept)
        fresh = [1]  # made after the freeze: scanned
        assert id(fresh) in {id(obj) for obj in gc.get_objects()}
    finally:
        gc.unfreeze()


class _Node:
    """An object that can be in a reference cycle and be watched with a weak reference."""

    next: object = None


def test_after_a_full_collection_its_survivors_leave_the_next_scans_until_thawed():
    from app.runtime import SurvivorFreezer

    freezer = SurvivorFreezer().install()
    try:
        survivors = [[n] for n in range(1_000)]
        gc.collect(1)  # not a full collection: nothing frozen
        assert freezer.freezes == 0 and gc.get_freeze_count() == 0
        gc.collect()
        assert freezer.freezes == 1 and gc.get_freeze_count() >= 1_000
        scanned = {id(obj) for obj in gc.get_objects()}
        assert not any(id(x) in scanned for x in survivors)
        cycle = _Node()
        cycle.next = cycle
        alive = weakref.ref(cycle)
        gc.collect()  # the cycle survives (still referenced) and is frozen
        del cycle
        gc.collect()
        assert alive() is not None  # a frozen cycle is not reclaimed ...
        freezer.thaw()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None  # ... until thawed
    finally:
        freezer.uninstall()
        gc.unfreeze()


def test_the_survivor_freezer_is_off_unless_asked_for():
    from app.settings import Settings

    assert Settings.from_env({}).gc_freeze_survivors is False
    assert Settings.from_env({"EDDY_GC_FREEZE_SURVIVORS": "1"}).gc_freeze_survivors is True


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_a_stalled_loop_is_recorded_with_its_length_and_where_it_was_held():
    async def run() -> LoopStalls:
        stalls = LoopStalls(threshold=0.1, interval=0.01).start()
        await asyncio.sleep(0.05)
        _hold_the_loop(0.4)
        await asyncio.sleep(0.3)
        stalls.stop()
        return stalls

    stalls = asyncio.run(run())
    held = stalls.longest[0]
    assert 0.35 <= held.seconds < 5.0
    assert any(line.split(" ")[1] == "_hold_the_loop:" for line in held.stack)
    report = stalls.report()
    assert report["count"] == stalls.count >= 1
    assert report["longest"][0]["ms"] == round(held.seconds * 1000.0, 1)


def test_only_the_longest_stalls_keep_their_stacks_while_all_are_counted():
    stalls = LoopStalls(keep=3)
    for n, seconds in enumerate([0.3, 0.9, 0.2, 0.5, 0.7, 0.25]):
        stalls._record(seconds, (f"frame {n}",))
    assert [stall.seconds for stall in stalls.longest] == [0.9, 0.7, 0.5]
    assert [stall.stack for stall in stalls.longest] == [("frame 1",), ("frame 4",), ("frame 3",)]
    assert stalls.count == 6 and abs(stalls.total_seconds - 2.85) < 1e-9


def test_the_young_threshold_changes_only_the_youngest_generation_and_refuses_zero():
    import pytest

    from app.runtime import set_young_threshold

    before = gc.get_threshold()
    try:
        assert set_young_threshold(20_000) == (20_000, *before[1:])
        with pytest.raises(ValueError, match="at least 1"):
            set_young_threshold(0)
        assert gc.get_threshold() == (20_000, *before[1:])
    finally:
        gc.set_threshold(*before)

import gc

from app.runtime import GcPauses, freeze_startup_objects, resident_mb


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

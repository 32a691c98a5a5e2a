from types import SimpleNamespace

from app.simulation.transactions import SimulatedEvent
from benchmarks.soak import _pipeline, _without_pipeline
from benchmarks.soak_run import (
    Sample,
    WorkerMemory,
    by_tenths,
    changelog,
    changelog_view,
    cohorts,
    live_keys,
    memory_along,
    renamed,
    rss_along,
    run_tenths,
    tenths,
)


def test_p99_per_tenth_takes_each_tenth_in_arrival_order():
    values = [1.0] * 90 + [100.0] * 10  # the last tenth is slow
    assert by_tenths(values) == [1.0] * 9 + [100.0]


def test_p99_per_tenth_of_fewer_than_ten_values_is_each_value():
    assert by_tenths([3.0, 1.0, 2.0]) == [3.0, 1.0, 2.0]


def test_tenths_keeps_one_value_per_tenth_and_the_last():
    assert tenths(list(range(25))) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 24]
    assert tenths([]) == []


def test_live_keys_replays_writes_and_tombstones_by_timestamp():
    changes = [
        (3_000, b"b", False),  # out of order: replayed by timestamp
        (1_000, b"a", False),
        (2_000, b"a", False),  # a second write of the same key
        (4_000, b"a", True),  # a tombstone
    ]
    assert live_keys(changes, [0.5, 1.0, 2.5, 3.0, 4.0, 10.0]) == [0, 1, 1, 2, 1, 1]


def test_changelog_view_counts_live_keys_keys_ever_and_the_largest_record():
    records = [
        SimpleNamespace(timestamp=1_000, key=b"a", value=b"xx"),
        SimpleNamespace(timestamp=2_000, key=b"b", value=b"xxxxx"),
        SimpleNamespace(timestamp=3_000, key=b"a", value=None),
    ]
    assert changelog_view(records, [1.5, 2.5, 3.5]) == {
        "live_keys": [1, 2, 1],
        "keys_ever": 2,
        "largest_record": 5,
    }


def test_run_tenths_and_changelog_names():
    assert run_tenths(0.0, 10.0) == [float(i) for i in range(11)]
    assert (
        changelog("soakab12cd-", "alerts-device-state")
        == "eddy-bench-soakab12cd-alerts-device-state-changelog"
    )


def _stream(seed: int, start: float, days: float):
    # Two events a day of a single user "u", tagged with the cohort's seed.
    for i in range(int(days * 2)):
        ts = start + i * 43_200.0
        yield SimulatedEvent("clicks", "u", {"user_id": "u", "seed": seed, "ts": ts}, ts, None)


def test_cohorts_overlap_by_half_are_renamed_each_their_own_and_merged_in_time():
    events = list(
        cohorts(
            _stream,
            lambda event, prefix: renamed(event, prefix, ("user_id",), "user_id"),
            start=0.0,
            days=4.0,
            cohort_days=2.0,
        )
    )
    spans = {}
    for event in events:
        first, last = spans.get(event.key, (event.event_time, event.event_time))
        spans[event.key] = (min(first, event.event_time), max(last, event.event_time))
    # Cohort k lives [k - 1, k + 1) days, cut to [0, 4): c00 and c04 live a day, the others two.
    assert spans == {
        "c00-u": (0.0, 43_200.0),
        "c01-u": (0.0, 129_600.0),
        "c02-u": (86_400.0, 216_000.0),
        "c03-u": (172_800.0, 302_400.0),
        "c04-u": (259_200.0, 302_400.0),
    }
    assert [e.event_time for e in events] == sorted(e.event_time for e in events)
    assert {e.value["seed"] for e in events if e.key == "c03-u"} == {3}
    assert all(e.value["user_id"] == e.key for e in events)
    assert len(events) == 2 + 4 + 4 + 4 + 2


def test_rss_along_formats_the_samples_at_tenths():
    samples = [Sample(10.0 * i, 100.0 + i, None) for i in range(3)]
    assert rss_along(samples) == "0 s: 100; 10 s: 101; 20 s: 102; 20 s: 102"


def test_pipeline_choice_defaults_to_fraud_and_is_taken_out_for_the_others():
    assert _pipeline([]) == "fraud"
    assert _pipeline(["--rate", "5", "--pipeline", "alerts"]) == "alerts"
    assert _without_pipeline(["--pipeline", "recommendations", "--days", "3"]) == ["--days", "3"]


def test_memory_along_says_where_the_rss_was_held_and_marks_samples_without_a_view():
    samples = [
        Sample(0.0, 150.0, None, memory=WorkerMemory.of(WORKER_VIEW)),
        Sample(10.0, 151.0, None, memory=WorkerMemory.of(None)),
    ]
    assert memory_along(samples) == "0 s: 3/60/9; 10 s: -; 10 s: -"


def test_worker_memory_needs_mallocs_statistics():
    assert WorkerMemory.of(WORKER_VIEW) == WorkerMemory(rocksdb=3.0, malloc_in_use=60.5, malloc_free=9.1)
    assert WorkerMemory.of({**WORKER_VIEW, "heap": {"python_allocated_blocks": 7}}) is None


WORKER_VIEW = {
    "resident_mb": 150.0,
    "heap": {"python_allocated_blocks": 7, "malloc_in_use_mb": 60.5, "malloc_free_mb": 9.1},
    "rocksdb_memory": {"budget_mb": 256.0, "used_mb": 3.0, "memtables_mb": 1.0},
}

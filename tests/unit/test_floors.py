"""The floors' bookkeeping and report (the floors themselves need a broker: `make bench`)."""

from __future__ import annotations

import math

import pytest

from benchmarks import fraud
from benchmarks.faust_floor import first_error
from benchmarks.floors import Floor, FloorResult, markdown, measure_all, ratio
from benchmarks.floors.common import Progress


def measure(bootstrap: str, mode: str, events: int, **options) -> float:
    """A stand-in floor module (this one) for measure_all: ``both`` fails, the rest run at 1,000/s."""
    if mode == "both":
        raise RuntimeError(f"no result | {options}")
    return 1_000.0


def test_ratio_is_eddy_divided_by_the_floor():
    assert ratio(1_619, 8_179) == "0.20"
    assert ratio(3_000, 1_500) == "2.00"


def test_ratio_without_a_floor_or_without_eddy_rate_is_a_dash():
    assert ratio(1_619, None) == "—"
    assert ratio(1_619, 0.0) == "—"
    assert ratio(math.nan, 8_000) == "—"


def test_progress_times_from_first_arrival_to_last_handled_event():
    progress = Progress(3)
    progress.arrived()
    assert not progress.handled(2)
    progress.arrived()  # later arrivals do not restart the clock
    assert progress.handled()
    assert progress.rate == pytest.approx(3 / (progress.ended - progress.started))
    ended = progress.ended
    progress.handled()  # past the backlog: the clock stays stopped
    assert progress.ended == ended


def test_progress_has_no_rate_before_the_backlog_is_worked_through():
    progress = Progress(2)
    progress.arrived()
    progress.handled()
    with pytest.raises(RuntimeError, match="1 of 2"):
        _ = progress.rate


def test_measure_all_keeps_going_past_a_failed_or_missing_floor():
    floors = [
        Floor("fake", __name__, ("noop", "both"), ("pytest",), (("transport", "x"),)),
        Floor("absent", __name__, ("noop",), ("no-such-distribution-eddy",)),
    ]
    results = measure_all("127.0.0.1:1", 10, floors, log=lambda _line: None)
    assert [(r.mode, r.rate) for r in results] == [("noop", 1_000.0), ("both", None), ("noop", None)]
    assert results[0].floor.startswith("fake (pytest ")
    assert results[1].error == "RuntimeError: no result | {'transport': 'x'}"
    assert "not installed: no-such-distribution-eddy" in results[2].error


def test_markdown_has_one_row_per_floor_and_mode_with_eddy_ratio_and_escaped_failures():
    results = [
        FloorResult("stock Faust (faust-streaming 0.15.3)", "noop", 8_000.0),
        FloorResult("Quix Streams (quixstreams 3.28.1)", "both", 4_000.0),
        FloorResult("stock Faust, confluent", "noop", None, "stalled | at Recovery " + "x" * 1_000),
    ]
    rows = markdown(results, 1_600.0, 30_000)
    table = [row for row in rows if row.startswith("| ") and "---" not in row]
    assert table[0] == "| floor | work per event | events/s | eddy tx/s ÷ floor |"
    assert table[1] == "| stock Faust (faust-streaming 0.15.3) | nothing (consume only) | 8000 | 0.20 |"
    assert table[2] == "| Quix Streams (quixstreams 3.28.1) | state get + set and one produce | 4000 | 0.40 |"
    failed = table[3]
    assert "failed: stalled \\| at Recovery" in failed and failed.endswith("| — |")
    assert len(failed) < 600
    assert "30,000 events" in rows[0] and "1600 tx/s" in rows[0]


def test_fraud_report_carries_the_floor_table():
    names = ("transaction_us_median", "transaction_us_p99", "label_us_median", "score_us_median")
    costs = dict.fromkeys((*names, "learn_us_median"), 1.0)
    through = {"transactions": 10, "labels": 5, "tx_per_second": 500.0, "seconds": 2.0,
               "end_to_end_tx_per_second": 250.0, "end_to_end_seconds": 4.0,
               "records_written_per_tx": 3.0, "changelog_records_per_tx": 1.0}  # fmt: skip
    floors = [FloorResult("bare aiokafka", "send", 2_000.0)]
    report = fraud._markdown("make bench", costs, through, [], floors, 30)
    assert "| bare aiokafka | one produce | 2000 | 0.25 |" in report


def test_first_error_names_the_exception_else_the_last_line():
    lines = ["Starting...", "Traceback (most recent call last):", "  File x", "KeyError: 'floor'", "Stopping"]
    assert first_error(lines) == "KeyError: 'floor'"
    assert first_error(["[^---Recovery]: Starting..."]) == "[^---Recovery]: Starting..."
    assert first_error([]) == "no output"

from app.simulation.transactions import SimulatedEvent
from benchmarks.soak_alerts import (
    AlertCompletion,
    alert_completion,
    alert_probe,
    alert_quality,
    alerts_by_reason,
    alerts_rows,
    open_alert_changes,
    p99_by_tenth,
)
from benchmarks.soak_run import Sample, live_keys

STATE = {
    "watermark": 100.0,
    "counts": {"readings": 90, "repeated": 3, "redelivered": 2, "alerts": 4, "idle_devices_swept": 5},
    "stage": {
        "counts": {"events": 97, "dead_letters": 2},
        "cached_keys": {"alerts-device-state": 12},
        "event_to_output": {"p50_ms": 20.0, "p99_ms": 90.0, "max_ms": 150.0},
    },
}


def test_completion_counts_what_the_stage_did_with_the_readings():
    done = alert_completion(100, STATE)
    assert done == AlertCompletion(
        fed=100, accepted=90, repeated=3, dead_letters=2, redelivered=2, handled=97
    )
    assert done.lost == 5
    assert alert_completion(7, None).lost == 7


def test_probe():
    assert alert_probe(STATE) == {
        "handled": 97,
        "cached": 12,
        "swept": 5,
        "p50_ms": 20.0,
        "p99_ms": 90.0,
        "max_ms": 150.0,
    }
    assert alert_probe(None) is None


def test_p99_per_tenth_is_the_largest_read_in_each_tenth():
    samples = [
        Sample(0.0, 1.0, {"p99_ms": 5.0}),
        Sample(5.0, 1.0, {"p99_ms": 9.0}),
        Sample(15.0, 1.0, None),  # the worker did not answer
        Sample(95.0, 1.0, {"p99_ms": 7.0}),
        Sample(100.0, 1.0, {"p99_ms": 8.0}),  # the end of the feed counts in the last tenth
        Sample(120.0, 1.0, {"p99_ms": 99.0}),  # after the feed: left out
    ]
    assert p99_by_tenth(samples, 100.0) == [9.0, None, None, None, None, None, None, None, None, 8.0]


def test_alerts_by_reason_and_open_alerts_over_time():
    alerts = [
        {"device_id": "d1", "metric": "t", "reason": "spike", "severity": "critical"},
        {"device_id": "d2", "metric": "t", "reason": "stuck", "severity": "warning"},
        {"device_id": "d1", "metric": "t", "reason": "spike", "severity": "resolved"},
    ]
    assert alerts_by_reason(alerts) == {"spike": (1, 1), "stuck": (1, 0)}
    changes = open_alert_changes(zip([1_000, 2_000, 3_000], alerts, strict=True))
    assert changes == [(1_000, b"d1/t", False), (2_000, b"d2/t", False), (3_000, b"d1/t", True)]
    assert live_keys(changes, [1.5, 2.5, 3.5]) == [1, 2, 1]


def _reading(device: str, ts: float, kind: str | None) -> SimulatedEvent:
    value = {"device_id": device, "metric": "temperature", "value": 1.0, "ts": ts}
    return SimulatedEvent(
        "sensor-readings", device, value, ts, {"is_anomaly": kind is not None, "anomaly_kind": kind}
    )


def test_quality_scores_raised_alerts_against_the_episodes():
    events = [
        _reading("d", 0.0, None),
        _reading("d", 60.0, "stuck"),
        _reading("d", 120.0, "stuck"),
        _reading("d", 180.0, None),
        _reading("e", 60.0, "spike"),
    ]
    alerts = [
        {"device_id": "d", "reason": "stuck", "severity": "warning", "ts": 120.0},  # true
        {"device_id": "d", "reason": "stuck", "severity": "resolved", "ts": 180.0},  # not scored
        {"device_id": "d", "reason": "spike", "severity": "critical", "ts": 180.0},  # false
    ]
    quality = alert_quality(events, alerts)
    assert (quality["stuck"].recall, quality["stuck"].precision) == (1.0, 1.0)
    assert (quality["spike"].recall, quality["spike"].precision) == (0.0, 0.0)
    assert (quality["all"].episodes, quality["all"].alerts, quality["all"].true_alerts) == (2, 2, 1)


def test_report_rows():
    quality = alert_quality([_reading("d", 60.0, "stuck")], [])
    report = {
        "alive": True,
        "completion": AlertCompletion(
            fed=10, accepted=9, repeated=0, dead_letters=1, redelivered=0, handled=10
        ),
        "sustained": 1_000.4,
        "fed_seconds": 720.0,
        "latency": {"p50_ms": 20.0, "p99_ms": 90.0, "max_ms": 150.0},
        "p99_by_tenth": [90.0, None],
        "by_reason": {"spike": (2, 1)},
        "quality": quality,
        "open_alerts": [0, 1],
        "devices": {"live_keys": [3, 4], "keys_ever": 6, "largest_record": 900},
    }
    assert alerts_rows(report) == [
        "| measure | value |",
        "|---|---|",
        "| worker alive at the end | True |",
        "| readings accepted / exact repeats / dead letters / lost (redelivered) "
        "| 9 / 0 / **1** / **0** (0) |",
        "| rate sustained (the stage's counts) | 1000/s (feed took 720 s) |",
        "| reading to alerts acknowledged, last 10,000 readings "
        "| p50 20.0 ms, **p99 90.0 ms**, max 150.0 ms |",
        "| largest p99 read per tenth of the run (ms) | 90.0, None |",
        "| alerts raised / resolved, by reason | spike 2/1 |",
        "| recall per kind (spike, level_shift, drift, stuck) | -, -, -, 0.00 |",
        "| precision per kind (spike, level_shift, drift, stuck), all | -, -, -, -, - |",
        "| alerts open along the run | 0, 1 |",
        "| device table: live keys along the run (keys ever) | 3, 4 (6) |",
    ]

"""The alerts pipeline end to end: a real worker process, a real broker."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict

import orjson

from app import codecs
from app.contracts import parse_sensor_reading
from app.simulation.producer import ensure_topics, produce_events
from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
from app.stages.outputs import key_partition
from models.alert_steps import AlertPolicy, DeviceState, assess_reading
from tests.integration.kafka_helpers import read_topic, run, send_raw

STREAM = SensorStreamConfig(seed=4, n_devices=8, days=1.0, anomaly_rate=0.01)
T0 = STREAM.start

BAD_READINGS = [
    (b"dev-x", b"{not json", "not valid UTF-8 JSON"),
    (b"dev-x", b'{"device_id":"dev-x","metric":"t","ts":0}', "value"),
    (b"dev-x", b'{"device_id":"dev-x","metric":"t","value":"hot","ts":0}', "value"),
    (b"dev-y", b'{"device_id":"dev-x","metric":"t","value":1.0,"ts":0}', "key"),
    (b"dev-x", None, "missing"),
]


def _reading(device: str, metric: str, value: float, ts: float) -> tuple[bytes, bytes]:
    return device.encode(), orjson.dumps({"device_id": device, "metric": metric, "value": value, "ts": ts})


# One reading far too late for its series, and a device reporting one metric too many.
LATE = [_reading("dev-late", "t", 20.0, T0 + 3_600.0), _reading("dev-late", "t", 20.5, T0 + 600.0)]
MANY_METRICS = [_reading("dev-many", f"m{i}", 1.0, T0 + i) for i in range(AlertPolicy().max_metrics + 1)]


def _recomputed(events) -> tuple[dict[str, list[bytes]], dict[str, DeviceState]]:
    """Every device's alerts and final state, from the input alone, with the same step function."""
    policy = AlertPolicy()
    states: dict[str, DeviceState] = {}
    alerts: dict[str, list[bytes]] = defaultdict(list)
    for event in events:
        reading = parse_sensor_reading(event.key.encode(), orjson.dumps(event.value))
        states[event.key], new = assess_reading(states.get(event.key), reading, policy)
        alerts[event.key] += [alert.encode() for alert in new]
    return alerts, states


def test_alerts_equal_a_recomputation_and_bad_readings_are_dead_lettered(worker_factory):
    worker = worker_factory()
    worker.wait_ready()
    events = list(generate_sensor_stream(STREAM))
    expected, states = _recomputed(events)
    n_alerts = sum(len(alerts) for alerts in expected.values())
    assert n_alerts > 10  # the stream has anomalies to find

    run(ensure_topics(worker.bootstrap, [worker.topic("sensor-readings")], 4))
    run(produce_events(events, worker.bootstrap, topic_prefix=worker.prefix))
    run(
        send_raw(
            worker.bootstrap,
            worker.topic("sensor-readings"),
            [(k, v) for k, v, _ in BAD_READINGS] + LATE + MANY_METRICS,
        )
    )

    # A valid reading produced to another partition than murmur2 gives its key.
    misplaced_key, misplaced_value = _reading("dev-misplaced", "t", 1.0, T0)
    wrong_partition = (key_partition(misplaced_key, 4) + 1) % 4
    run(
        send_raw(
            worker.bootstrap,
            worker.topic("sensor-readings"),
            [(misplaced_key, misplaced_value)],
            wrong_partition,
        )
    )

    published = run(
        read_topic(
            worker.bootstrap,
            worker.topic("alerts"),
            until=lambda records: len(records) >= n_alerts,
            timeout=180,
            settle=3.0,
            decode=False,
        )
    )
    by_device: dict[str, list[bytes]] = defaultdict(list)
    for record in published:
        by_device[record.key.decode()].append(record.value)
    # Byte for byte, in order, none twice.
    assert by_device == {device: alerts for device, alerts in expected.items() if alerts}, worker.log_tail()

    letters = run(
        read_topic(
            worker.bootstrap,
            worker.topic("dead-letters"),
            until=lambda records: len(records) >= len(BAD_READINGS) + 3,
            timeout=60,
            settle=2.0,
        )
    )
    errors = [value["error"] for _, value in letters]
    assert len(errors) == len(BAD_READINGS) + 3, errors
    for _, _, reason in BAD_READINGS:
        assert any(reason in error for error in errors), (reason, errors)
    assert sum("behind the newest reading of t" in error for error in errors) == 1
    assert sum("'m16' is not tracked" in error for error in errors) == 1
    assert sum(f"arrived on partition {wrong_partition}" in error for error in errors) == 1

    # The device's live statistics, from the worker that owns it, equal the recomputation.
    device = events[-1].key
    state = states[device]
    metric = state.metrics["temperature"]
    status, view = worker.get_json(f"/devices/{device}/")
    assert status == 200
    windows = {name: asdict(stats) for name, stats in metric.stats.windows(metric.newest).items()}
    assert view["metrics"]["temperature"]["windows"] == orjson.loads(codecs.dumps(windows))
    assert view["open_alerts"] == state.open_alerts()
    assert worker.get_json("/devices/no-such-device/")[0] == 404

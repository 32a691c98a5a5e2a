"""Tests of the alerts step: which alerts a reading sequence gives, and how state stays bounded."""

from __future__ import annotations

from app.contracts import SensorReading
from models.alert_steps import AlertPolicy, DeviceState, assess_reading

POLICY = AlertPolicy()


def quiet(i: int) -> float:
    return 20.0 + (0.1 if i % 2 else -0.1)


def run(values: list[float], policy: AlertPolicy = POLICY, state: DeviceState | None = None, start: int = 0):
    alerts = []
    for i, value in enumerate(values, start=start):
        state, new = assess_reading(state, SensorReading("dev-1", "temp", value, 60.0 * i), policy)
        alerts += new
    return state, alerts


def summary(alerts):
    return [(a.severity, a.reason, a.value, a.ts) for a in alerts]


def test_quiet_readings_give_no_alert():
    _, alerts = run([quiet(i) for i in range(200)])
    assert alerts == []


def test_a_lone_outlier_is_a_spike_alert_published_at_the_next_reading_then_resolved():
    values = [quiet(i) for i in range(40)]
    values[30] = 50.0
    _, alerts = run(values)
    assert summary(alerts) == [("critical", "spike", 50.0, 1800.0), ("resolved", "spike", 20.1, 1980.0)]
    low, high = alerts[0].expected
    assert low < 20.0 < high


def test_two_outliers_in_a_row_on_one_side_are_a_level_shift_resolved_when_the_level_returns():
    values = [quiet(i) for i in range(80)]
    for i in range(30, 50):
        values[i] += 5.0
    _, alerts = run(values)
    assert summary(alerts) == [
        ("critical", "level_shift", values[31], 1860.0),
        ("resolved", "level_shift", values[52], 3120.0),  # the third reading back at 20
    ]


def test_identical_readings_are_a_stuck_alert_and_resolved_once_the_value_moves():
    values = [quiet(i) for i in range(60)]
    for i in range(20, 35):
        values[i] = 20.123
    _, alerts = run(values)
    assert summary(alerts) == [
        ("warning", "stuck", 20.123, 60.0 * 25),  # the sixth identical reading
        ("resolved", "stuck", values[37], 60.0 * 37),
    ]


def test_one_alert_per_metric_per_cool_down():
    values = [quiet(i) for i in range(80)]
    values[30] = values[45] = values[70] = 50.0  # the second is 15 minutes after the first
    _, alerts = run(values, AlertPolicy(cooldown_seconds=30 * 60.0))
    opened = [(a.reason, a.ts) for a in alerts if a.severity != "resolved"]
    assert opened == [("spike", 1800.0), ("spike", 4200.0)]
    assert [a.ts for a in alerts if a.severity == "resolved"] == [1980.0, 4380.0]  # none for the muted one


def test_a_reading_later_than_the_lateness_bound_or_repeated_is_ignored_and_counted():
    state, _ = run([quiet(i) for i in range(20)])
    before = state.encode()
    late = SensorReading("dev-1", "temp", 99.0, 60.0 * 19 - POLICY.lateness_seconds - 1.0)
    state, alerts = assess_reading(state, late, POLICY)
    repeat = SensorReading("dev-1", "temp", quiet(19), 60.0 * 19)
    state, alerts2 = assess_reading(state, repeat, POLICY)
    assert alerts == alerts2 == []
    assert state.ignored == 2
    assert state.encode() == before.replace(b'"ignored":0', b'"ignored":2')


def test_a_late_reading_within_the_bound_counts_in_the_statistics_only():
    state, _ = run([quiet(i) for i in range(20)])
    detector_before = state.metrics["temp"].detector.to_state()
    state, alerts = assess_reading(state, SensorReading("dev-1", "temp", 99.0, 60.0 * 18 + 1.0), POLICY)
    assert alerts == []
    assert state.metrics["temp"].detector.to_state() == detector_before
    assert state.metrics["temp"].stats.window(60.0 * 19, "1h").max == 99.0


def test_metrics_beyond_the_cap_and_readings_of_another_device_are_ignored_not_raised():
    policy = AlertPolicy(max_metrics=2)
    state = None
    for i, metric in enumerate(("a", "b", "c", "a")):
        state, _ = assess_reading(state, SensorReading("dev-1", metric, 1.0, float(i)), policy)
    state, alerts = assess_reading(state, SensorReading("dev-2", "a", 1.0, 5.0), policy)
    assert sorted(state.metrics) == ["a", "b"]
    assert (state.ignored, alerts) == (2, [])


def test_the_same_readings_give_the_same_alerts_and_state_whether_or_not_the_state_was_stored_between():
    values = [quiet(i) for i in range(120)]
    values[40] = 50.0
    for i in range(70, 90):
        values[i] -= 4.0
    whole_state, whole = run(values)
    half_state, first = run(values[:60])
    restored = DeviceState.decode(half_state.encode(), POLICY)
    resumed_state, second = run(values[60:], state=restored, start=60)
    assert first + second == whole
    assert resumed_state.encode() == whole_state.encode()


def test_a_device_state_stays_small_over_a_long_stream():
    state, _ = run([quiet(i) + (i % 7) * 0.01 for i in range(5_000)])
    assert len(state.encode()) < 12_000

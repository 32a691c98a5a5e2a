"""Tests of the alerts step: which alerts a reading sequence gives, and how state stays bounded."""

from __future__ import annotations

import math

from app.contracts import SensorReading
from models.alert_steps import AlertPolicy, DeviceState, assess_reading
from models.device_state_codec import decode_device_state, encode_device_state
from tables.windows import DAY, HOUR

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
    before = encode_device_state(state)
    late = SensorReading("dev-1", "temp", 99.0, 60.0 * 19 - POLICY.lateness_seconds - 1.0)
    state, alerts = assess_reading(state, late, POLICY)
    repeat = SensorReading("dev-1", "temp", quiet(19), 60.0 * 19)
    state, alerts2 = assess_reading(state, repeat, POLICY)
    assert alerts == alerts2 == []
    assert state.ignored == 2
    unchanged_but_counted = decode_device_state(before, POLICY)
    unchanged_but_counted.ignored = 2
    assert encode_device_state(state) == encode_device_state(unchanged_but_counted)


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
    restored = decode_device_state(encode_device_state(half_state), POLICY)
    resumed_state, second = run(values[60:], state=restored, start=60)
    assert first + second == whole
    assert encode_device_state(resumed_state) == encode_device_state(whole_state)


def test_a_device_state_stays_small_over_a_long_stream():
    state, _ = run([quiet(i) + (i % 7) * 0.01 for i in range(5_000)])
    assert len(encode_device_state(state)) < 5_000


# A series whose daily profile can be learned: a 2-degree daily cycle, a 7-hour wander that does not
# repeat daily (so that hours stray from their profile as real ones do) and alternating noise; one
# reading a minute.  From 3 days on (4,320 readings) the profile has been warm for a day.
WARM = 3 * 1_440
START = WARM + 600  # where each episode begins


def daily(i: int) -> float:
    ts = 60.0 * i
    cycle = 2.0 * math.cos(2 * math.pi * ts / DAY) + 0.3 * math.sin(2 * math.pi * ts / (7 * HOUR))
    return 20.0 + cycle + (0.1 if i % 2 else -0.1)


def ramp(i: int, per_reading: float, readings: int = 300) -> float:
    """What a drift from ``START`` adds to reading ``i``: ``per_reading`` more each reading, then 0."""
    return per_reading * (i - START + 1) if START <= i < START + readings else 0.0


def indexed(alerts):
    """``(severity, reason, index of the reading)`` of each alert."""
    return [(a.severity, a.reason, round(a.ts / 60.0)) for a in alerts]


def test_a_drift_is_alerted_as_drift_and_its_snap_back_resolves_it():
    # +0.01 a reading for 5 hours, then gone (recalibrated): each reading looks like the one before
    values = [daily(i) + ramp(i, 0.01) for i in range(WARM + 1_200)]
    _, alerts = run(values)
    # The offset (the last hour's readings off the profile) passes 4.5 deviations of 0.303 at
    # reading 5107, 187 readings into the drift; ten readings later it is a drift.  The snap back
    # at 5220 is no level shift: its third reading resolves the drift.
    assert indexed(alerts) == [("warning", "drift", 5116), ("resolved", "drift", 5222)]


def test_a_shift_longer_than_the_open_time_does_not_re_alert_its_step_back():
    values = [daily(i) + (3.0 if START <= i < START + 840 else 0.0) for i in range(WARM + 1_800)]  # 14 hours
    _, alerts = run(values)
    assert indexed(alerts) == [
        ("critical", "level_shift", START + 1),
        ("resolved", "level_shift", START + 721),  # open 12 hours: the detector starts afresh
        ("warning", "drift", START + 790),  # an hour later, still 3 degrees off the daily profile
        ("resolved", "drift", START + 842),  # the third reading after the step back
    ]


def test_a_level_shift_is_over_when_the_readings_return_to_the_profile_not_when_the_cycle_meets_them():
    # +1.5 for 6 hours while the daily cycle falls by 2.7: the old level moves along the profile
    # (without the profile, the readings came within 0.75 of the level before the shift at reading
    # 4554, resolving it, and the step back at 4800 was alerted as a new level shift)
    start = WARM + 120
    values = [daily(i) + (1.5 if start <= i < start + 360 else 0.0) for i in range(WARM + 900)]
    _, alerts = run(values)
    assert indexed(alerts) == [
        ("warning", "level_shift", start + 1),
        ("resolved", "level_shift", start + 362),  # the third reading after the step back
    ]


def test_a_step_back_to_the_profile_from_an_offset_no_rule_alerted_is_not_alerted():
    # a drift of 1.2 over 5 hours, at most 3.9 deviations off the profile: under the drift bar of
    # 4.5, over the return bar of 2, so its snap back (an outlier) is the series coming back
    values = [daily(i) + ramp(i, 0.004) for i in range(WARM + 1_200)]
    _, alerts = run(values)
    assert alerts == []


def test_a_change_that_stays_for_the_longest_drift_becomes_the_profile():
    values = [daily(i) + (3.0 if i >= START else 0.0) for i in range(START + 5 * 1_440)]
    state, alerts = run(values)
    assert indexed(alerts) == [
        ("critical", "level_shift", START + 1),
        ("resolved", "level_shift", START + 721),
        ("warning", "drift", START + 790),
        ("resolved", "drift", START + 790 + 3 * 1_440),  # open max_drift_seconds: the new normal
    ]
    profile = state.metrics["temp"].profile
    assert abs(profile.offset) < POLICY.drift_deviations * profile.scale

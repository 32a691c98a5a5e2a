"""Tests of the device state's table bytes: exact round trips, the earlier JSON form, bad input."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts import SensorReading
from models.alert_steps import DRIFT, LEVEL_SHIFT, SPIKE, STUCK, AlertPolicy, DeviceState, assess_reading
from models.device_state_codec import FORMAT, decode_device_state, encode_device_state
from models.seasonal import HOURS
from tables.device_stats import MetricStats
from tables.windows import DAY

POLICY = AlertPolicy()


def plain(state: DeviceState) -> str:
    """Everything ``state`` holds, as text: ``repr`` tells nan from nan-free and 0.0 from -0.0 exactly."""
    metrics = {name: metric.to_state() for name, metric in state.metrics.items()}
    for name, metric in state.metrics.items():  # to_state leaves out what is -inf
        metrics[name]["last_alert"] = metric.last_alert
    return repr((state.device_id, state.ignored, metrics))


def daily_readings(days: float, every: float = 60.0) -> DeviceState:
    state = None
    for i in range(round(days * DAY / every)):
        ts = every * i
        value = 20.0 + 2.0 * math.cos(2 * math.pi * ts / DAY) + (0.1 if i % 2 else -0.1)
        if i % 997 == 500:
            value += 30.0  # a spike now and then
        state, _ = assess_reading(state, SensorReading("dev-1", "temp", round(value, 3), ts), POLICY)
    assert state is not None
    return state


def test_a_week_of_readings_round_trips_exactly_in_under_4_kb():
    state = daily_readings(7)
    data = encode_device_state(state)
    restored = decode_device_state(data, POLICY)
    assert plain(restored) == plain(state)
    assert encode_device_state(restored) == data
    assert data[0] == FORMAT and len(data) < 4_000


def test_the_earlier_json_form_still_decodes_to_the_same_state():
    state = daily_readings(2)
    legacy = orjson.dumps(
        {
            "device_id": state.device_id,
            "ignored": state.ignored,
            "metrics": {name: metric.to_state() for name, metric in state.metrics.items()},
        }
    )
    assert plain(decode_device_state(legacy, POLICY)) == plain(state)


def test_another_format_truncated_or_extra_bytes_are_refused():
    data = encode_device_state(daily_readings(0.1))
    with pytest.raises(ValueError, match="format 2"):
        decode_device_state(bytes([2]) + data[1:], POLICY)
    with pytest.raises(ValueError, match="truncated"):
        decode_device_state(data[:-100], POLICY)
    with pytest.raises(ValueError, match="left over"):
        decode_device_state(data + b"\0", POLICY)


# --- any state the classes can hold, nan and inf included ---------------------------------

anything = st.floats(allow_nan=True, allow_infinity=True)
counts = st.integers(0, 2**40)


@st.composite
def buckets(draw: Any) -> tuple[list[int], list[list[Any]]]:
    n = draw(st.integers(0, 8))
    ids = sorted(draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n, unique=True)))
    sums = [draw(st.lists(anything, min_size=n, max_size=n)) for _ in range(4)]
    # counts are never negative; the codec takes them anyway (in a signed array)
    return ids, [draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n)), *sums]


@st.composite
def metric_states(draw: Any) -> dict[str, Any]:
    n, r = draw(st.integers(0, 20)), draw(st.integers(0, 60))
    return {
        "stats": (draw(st.none() | anything), draw(buckets()), draw(buckets())),
        "detector": [
            draw(st.lists(anything, min_size=n, max_size=n)),
            draw(st.lists(anything, min_size=n, max_size=n)),
            draw(st.lists(anything, min_size=r, max_size=r)),
            draw(anything),
        ],
        "profile": [
            draw(st.lists(st.none() | anything, min_size=HOURS, max_size=HOURS)),
            draw(st.none() | st.integers(-(2**40), 2**40)),
            draw(anything),
            draw(counts),
            draw(counts),
            *draw(st.lists(anything, min_size=4, max_size=4)),
        ],
        "newest": draw(anything),
        "last_value": draw(st.none() | anything),
        "repeats": draw(counts),
        "drifting": draw(counts),
        "pending": draw(st.none() | st.lists(anything, min_size=6, max_size=6)),
        "open": draw(
            st.none()
            | st.tuples(
                st.sampled_from([SPIKE, LEVEL_SHIFT, DRIFT, STUCK]),
                anything,
                st.booleans(),
                st.none() | anything,
                anything,
                counts,
                st.none() | anything,
            ).map(list)
        ),
        "last_alert": draw(anything),
    }


def build(device_id: str, ignored: int, metrics: dict[str, dict[str, Any]]) -> DeviceState:
    state = DeviceState(device_id, {}, ignored)
    for name, fields in metrics.items():
        # every field is set after MetricState's constructor, which reads only the stored form
        metric = assess_reading(None, SensorReading(device_id, name, 1.0, 0.0), POLICY)[0].metrics[name]
        ref, fine, coarse = fields["stats"]
        metric.stats = MetricStats.from_columns(ref, fine, coarse)
        metric.detector = POLICY.detector(fields["detector"])
        metric.profile = POLICY.profile(fields["profile"])
        for attribute in ("newest", "last_value", "repeats", "drifting", "pending", "open", "last_alert"):
            setattr(metric, attribute, fields[attribute])
        state.metrics[name] = metric
    return state


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=20),
    counts,
    st.dictionaries(st.text(max_size=10), metric_states(), max_size=3),
)
def test_any_state_round_trips_exactly(device_id, ignored, metrics):
    state = build(device_id, ignored, metrics)
    data = encode_device_state(state)
    restored = decode_device_state(data, POLICY)
    assert plain(restored) == plain(state)
    assert encode_device_state(restored) == data

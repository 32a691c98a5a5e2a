"""What the alerts pipeline's steps cost in one process, per reading, state encoding included.

``python -m benchmarks.alerts_in_process`` replays one simulated sensor stream
(:data:`STREAM`: 50 devices, 7 days, a reading a minute each) in event-time order
through what the worker does per record (:func:`~app.contracts.parse_sensor_reading`,
then :func:`~tables.alerts.apply_reading`), and encodes every device touched since
the last flush once per :data:`FLUSH_READINGS` readings, as the worker's 20 ms flush
at about 2,500 readings/s does, with the table's codec.  It does so several times,
each with fresh state, and prints:

* microseconds per reading, per run and the median over the runs (wall and CPU time);
* the size of a device's encoded state at the end of the stream (a week of readings);
* with ``--profile``, the functions that took most time in one more run (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys

import orjson

from app.contracts import parse_sensor_reading
from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
from app.stages.redelivery import Applied
from benchmarks.in_process import timed_runs
from models.alert_steps import DeviceState
from tables.alerts import APPLIED_DEVICE_CODEC, apply_reading

STREAM = SensorStreamConfig(seed=0, n_devices=50, days=7.0, anomaly_rate=0.01)
#: Readings between two flushes: the worker's 20 ms at about 2,500 readings/s.
FLUSH_READINGS = 50

Record = tuple[bytes, bytes]


def sensor_records(config: SensorStreamConfig) -> list[Record]:
    """The stream's ``(key, value)`` records as the worker receives them, in event-time order."""
    events = sorted(generate_sensor_stream(config), key=lambda event: event.event_time)
    return [(event.key.encode(), orjson.dumps(event.value)) for event in events]


def replay(records: list[Record], flush_readings: int = FLUSH_READINGS) -> dict[bytes, Applied[DeviceState]]:
    """Every record through the worker's per-record steps, flushing touched devices' state; the states."""
    states: dict[bytes, Applied[DeviceState]] = {}
    dirty: set[bytes] = set()
    committed = 0
    encode = APPLIED_DEVICE_CODEC.encode
    for offset, (key, value) in enumerate(records):
        applied = states.get(key)
        if applied is None:
            applied = states[key] = Applied(None)
        apply_reading(applied, parse_sensor_reading(key, value), offset, committed)
        dirty.add(key)
        if (offset + 1) % flush_readings == 0:
            for touched in dirty:
                encode(states[touched])
            dirty.clear()
            committed = offset + 1
    for touched in dirty:
        encode(states[touched])
    return states


def state_sizes(states: dict[bytes, Applied[DeviceState]]) -> list[int]:
    """Bytes of each device's encoded table value."""
    return [len(APPLIED_DEVICE_CODEC.encode(applied)) for applied in states.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="replays of the stream (default 3)")
    parser.add_argument("--devices", type=int, default=STREAM.n_devices, help="devices (default 50)")
    parser.add_argument("--days", type=float, default=STREAM.days, help="days of the stream (default 7)")
    parser.add_argument("--profile", action="store_true", help="profile one more replay (cProfile)")
    args = parser.parse_args(argv)

    config = SensorStreamConfig(
        seed=STREAM.seed, n_devices=args.devices, days=args.days, anomaly_rate=STREAM.anomaly_rate
    )
    records = sensor_records(config)
    print(f"stream: {config}: {len(records)} readings, a flush every {FLUSH_READINGS}", flush=True)
    final: dict[bytes, Applied[DeviceState]] = {}

    def replay_once() -> int:
        final.update(replay(records))
        return len(records)

    wall, cpu = timed_runs(replay_once, args.runs)
    print("µs per reading, per run:    ", " ".join(f"{c:.1f}" for c in wall))
    print("CPU µs per reading, per run:", " ".join(f"{c:.1f}" for c in cpu))
    print(
        f"median over {args.runs} runs: {statistics.median(wall):.1f} µs per reading "
        f"({statistics.median(cpu):.1f} µs CPU)"
    )
    sizes = state_sizes(final)
    print(
        f"encoded state per device after {args.days:g} days: median {statistics.median(sizes):,.0f} B, "
        f"max {max(sizes):,} B"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(replay, records)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A device's alert state (:class:`~models.alert_steps.DeviceState`) as compact table bytes.

The alerts stage writes a device's state to its changelog once per flush for every
device that had a reading, about as often as readings come, so encoding is per-reading
work: each metric is packed as it lies in memory, its scalars and lengths in one
struct, its integers in one array of the narrowest width that holds them, its floats
in one float64 array, with no intermediate dicts or per-number calls.  Every float
keeps its 64 bits, so ``decode(encode(state))`` holds exactly what ``state`` held,
``nan`` and ``inf`` included.

Layout, little-endian (``text``: a ``uint32`` length and UTF-8)::

    format (uint8, :data:`FORMAT`), ignored (int64), device_id (text), metrics (uint16)
    per metric:
      name (text)
      scalars (:data:`_SCALARS`): which optional fields hold a value (bits, 0 stored where
        none), the metric's, detector's and profile's numbers, which hours have a level
        (bits), the lengths below, the integers' typecode, the first bucket ids
      integers: 10-second bucket ids (offsets from the first) and counts, then 1-minute ones
      floats: 10-second buckets' sums, sums of squares, minima, maxima, then 1-minute ones;
        detector times, values, residuals; the profile's hourly levels that are set
      pending outlier (:data:`_PENDING`) and open alert (:data:`_OPEN`) when present

A state stored as JSON by earlier versions (it starts with ``{``) still decodes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from models.alert_steps import DRIFT, LEVEL_SHIFT, SPIKE, STUCK, AlertPolicy, DeviceState, MetricState
from models.seasonal import HOURS
from tables.device_stats import MetricStats

#: The first byte of the binary form (JSON, the earlier form, starts with ``{``).
FORMAT = 1
_REASONS = (SPIKE, LEVEL_SHIFT, DRIFT, STUCK)

_HEADER = struct.Struct("<Bq")
_METRICS = struct.Struct("<H")
_TEXT = struct.Struct("<I")
# present, newest, last_value, last_alert, repeats, drifting, stats ref, detector threshold,
# profile hour, sum, count, hours, deviation, offset_sum, offset_weight, offset_ts, hours with a level
# (bits), then the lengths of what follows: 10-second and 1-minute buckets, detector times, values and
# residuals, and how the 10-second bucket ids, their counts, the 1-minute ids and counts are stored
# (a kind and a number each, see _int_column)
_SCALARS = struct.Struct("<BdddqqddqdqqddddIHHHHHBqBqBqBq")
_PENDING = struct.Struct("<6d")  # ts, value, z, low, high, expected
_OPEN = struct.Struct("<Bd?ddqd")  # reason, opened_ts, published, anchor, shift, normal_run, base
# bits of "present": which optional fields hold a value
(_HAS_LAST_VALUE, _HAS_REF, _HAS_HOUR, _HAS_PENDING, _HAS_OPEN, _HAS_ANCHOR, _HAS_BASE) = (
    1 << i for i in range(7)
)
_ALL_HOURS = (1 << HOURS) - 1
# how an integer column is stored: first + 0, 1, 2...; one value n times; n int64s
_RUN, _SAME, _RAW = range(3)
_SWAP = sys.byteorder != "little"


def encode_device_state(state: DeviceState) -> bytes:
    """The table bytes of ``state``."""
    parts = [_HEADER.pack(FORMAT, state.ignored), _text(state.device_id), _METRICS.pack(len(state.metrics))]
    for name, metric in state.metrics.items():
        parts.append(_text(name))
        _pack_metric(metric, parts)
    return b"".join(parts)


def decode_device_state(data: bytes, policy: AlertPolicy) -> DeviceState:
    """The state in ``data`` (either form); raises ``ValueError`` for a format this version does not read."""
    if data[:1] == b"{":
        return _from_json(data, policy)
    reader = _Reader(data)
    fmt, ignored = reader.unpack(_HEADER)
    if fmt != FORMAT:
        raise ValueError(f"device state format {fmt} (this version reads {FORMAT})")
    device_id = reader.text()
    (n_metrics,) = reader.unpack(_METRICS)
    metrics = {}
    for _ in range(n_metrics):
        name = reader.text()
        metrics[name] = _unpack_metric(reader, policy)
    if reader.at != len(data):
        raise ValueError(f"device state: {len(data) - reader.at} bytes left over")
    return DeviceState(device_id, metrics, ignored)


def _pack_metric(metric: MetricState, parts: list[bytes]) -> None:
    stats, detector, profile, pending, alert = (
        metric.stats,
        metric.detector,
        metric.profile,
        metric.pending,
        metric.open,
    )
    present = (
        (metric.last_value is not None) * _HAS_LAST_VALUE
        | (stats.ref is not None) * _HAS_REF
        | (profile.hour is not None) * _HAS_HOUR
        | (pending is not None) * _HAS_PENDING
        | (alert is not None) * _HAS_OPEN
    )
    if alert is not None:
        present |= (alert[3] is not None) * _HAS_ANCHOR | (alert[6] is not None) * _HAS_BASE
    fine_ids, (fine_counts, *fine_sums) = stats.fine.columns()
    coarse_ids, (coarse_counts, *coarse_sums) = stats.coarse.columns()
    fine_id_kind, fine_first, fine_id_bytes = _int_column(fine_ids, True)
    fine_count_kind, fine_count, fine_count_bytes = _int_column(fine_counts, False)
    coarse_id_kind, coarse_first, coarse_id_bytes = _int_column(coarse_ids, True)
    coarse_count_kind, coarse_count, coarse_count_bytes = _int_column(coarse_counts, False)
    levels = profile.levels
    if None in levels:
        has_level = sum(1 << hour for hour, level in enumerate(levels) if level is not None)
        levels = [level for level in levels if level is not None]
    else:
        has_level = _ALL_HOURS
    parts.append(
        _SCALARS.pack(
            present,
            metric.newest,
            _or_zero(metric.last_value),
            metric.last_alert,
            metric.repeats,
            metric.drifting,
            _or_zero(stats.ref),
            detector.threshold.value,
            _or_zero(profile.hour),
            profile.sum,
            profile.count,
            profile.hours,
            profile.deviation,
            profile.offset_sum,
            profile.offset_weight,
            profile.offset_ts,
            has_level,
            len(fine_ids),
            len(coarse_ids),
            len(detector.ts),
            len(detector.values),
            len(detector.residuals),
            fine_id_kind,
            fine_first,
            fine_count_kind,
            fine_count,
            coarse_id_kind,
            coarse_first,
            coarse_count_kind,
            coarse_count,
        )
    )
    parts += (fine_id_bytes, fine_count_bytes, coarse_id_bytes, coarse_count_bytes)
    parts.extend(map(_little_endian, fine_sums))
    parts.extend(map(_little_endian, coarse_sums))
    parts.append(_little_endian(array("d", detector.ts + detector.values + detector.residuals + levels)))
    if pending is not None:
        parts.append(_PENDING.pack(*pending))
    if alert is not None:
        reason, opened, published, anchor, shift, normal_run, base = alert
        parts.append(
            _OPEN.pack(
                _REASONS.index(reason), opened, published, _or_zero(anchor), shift, normal_run, _or_zero(base)
            )
        )


def _unpack_metric(reader: _Reader, policy: AlertPolicy) -> MetricState:
    scalars = reader.unpack(_SCALARS)
    present, newest, last_value, last_alert, repeats, drifting, ref, threshold, hour = scalars[:9]
    profile_numbers = scalars[9:16]  # sum, count, hours, deviation, offset_sum, offset_weight, offset_ts
    has_level, n_fine, n_coarse, n_times, n_values, n_residuals = scalars[16:22]
    kinds, numbers, sizes = scalars[22::2], scalars[23::2], (n_fine, n_fine, n_coarse, n_coarse)
    fine_ids, fine_counts, coarse_ids, coarse_counts = (
        reader.ints(kind, number, n) for kind, number, n in zip(kinds, numbers, sizes, strict=True)
    )
    n_levels = has_level.bit_count()
    floats = reader.column("d", 4 * (n_fine + n_coarse) + n_times + n_values + n_residuals + n_levels)
    take = _Taker(floats)
    fine = (fine_ids.tolist(), [fine_counts, *take.columns(4, n_fine)])
    coarse = (coarse_ids.tolist(), [coarse_counts, *take.columns(4, n_coarse)])
    detector_state = [take(n_times).tolist(), take(n_values).tolist(), take(n_residuals).tolist(), threshold]
    known = iter(take(n_levels).tolist())
    levels = [next(known) if has_level >> h & 1 else None for h in range(HOURS)]
    metric = MetricState(policy)
    metric.stats = MetricStats.from_columns(ref if present & _HAS_REF else None, fine, coarse)
    metric.detector = policy.detector(detector_state)
    metric.profile = policy.profile([levels, hour if present & _HAS_HOUR else None, *profile_numbers])
    metric.newest, metric.last_alert, metric.repeats, metric.drifting = newest, last_alert, repeats, drifting
    metric.last_value = last_value if present & _HAS_LAST_VALUE else None
    if present & _HAS_PENDING:
        metric.pending = list(reader.unpack(_PENDING))
    if present & _HAS_OPEN:
        reason, opened, published, anchor, shift, normal_run, base = reader.unpack(_OPEN)
        metric.open = [
            _REASONS[reason],
            opened,
            published,
            anchor if present & _HAS_ANCHOR else None,
            shift,
            normal_run,
            base if present & _HAS_BASE else None,
        ]
    return metric


def _from_json(data: bytes, policy: AlertPolicy) -> DeviceState:
    payload = orjson.loads(data)
    metrics = {name: MetricState(policy, state) for name, state in payload["metrics"].items()}
    return DeviceState(payload["device_id"], metrics, payload["ignored"])


def _or_zero(x: Any) -> Any:
    return 0 if x is None else x


def _text(text: str) -> bytes:
    raw = text.encode()
    return _TEXT.pack(len(raw)) + raw


def _int_column(column: Sequence[int], ascending: bool) -> tuple[int, int, bytes]:
    """How to store ``column``: a kind, a number and the bytes that follow (none but for ``_RAW``).

    ``ascending``: ``column`` is strictly ascending (bucket ids), so that its ends tell a run.
    Ids of consecutive buckets and counts that are all alike (a reading a minute) take no bytes.
    """
    if not column:
        return _SAME, 0, b""
    first = column[0]
    if ascending and column[-1] - first == len(column) - 1:
        return _RUN, first, b""
    if column.count(first) == len(column):
        return _SAME, first, b""
    return _RAW, 0, _little_endian(column if isinstance(column, array) else array("q", column))


def _swapped(column: array) -> bytes:
    column = array(column.typecode, column)  # a copy: the state's own column stays as it is
    column.byteswap()
    return column.tobytes()


#: An array's bytes, little-endian (a plain copy on little-endian machines).
_little_endian: Callable[[array], bytes] = _swapped if _SWAP else array.tobytes


class _Taker:
    """Consecutive slices of an array."""

    __slots__ = ("at", "values")

    def __init__(self, values: array) -> None:
        self.values, self.at = values, 0

    def __call__(self, n: int) -> array:
        self.at += n
        return self.values[self.at - n : self.at]

    def columns(self, k: int, n: int) -> list[array]:
        return [self(n) for _ in range(k)]


class _Reader:
    """Reads the parts of :func:`encode_device_state` output in order."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        values = layout.unpack_from(self.data, self.at)
        self.at += layout.size
        return values

    def text(self) -> str:
        (length,) = self.unpack(_TEXT)
        self.at += length
        return str(self.data[self.at - length : self.at], "utf-8")

    def ints(self, kind: int, number: int, n: int) -> array:
        """An integer column that :func:`_int_column` stored."""
        if kind == _RUN:
            return array("q", range(number, number + n))
        if kind == _SAME:
            return array("q", [number]) * n
        if kind == _RAW:
            return self.column("q", n)
        raise ValueError(f"device state: integer column of kind {kind}")

    def column(self, code: str, n: int) -> array:
        column = array(code)
        end = self.at + n * column.itemsize
        if end > len(self.data):
            raise ValueError("device state: truncated")
        column.frombytes(self.data[self.at : end])
        if _SWAP:
            column.byteswap()
        self.at = end
        return column

"""A merchant's activity (:class:`~tables.merchant_features.MerchantActivity`) as compact table bytes.

Every worker decodes a merchant for each decision at it (the merchant view keeps the
published bytes, :mod:`tables.merchant_view`), so decoding is per-transaction work: in a
soak's worker, decoding the JSON form took 12 % of the event loop.  Here each series' bucket
ids and sums are stored as arrays of fixed-width numbers and the sums read back with
``array.frombytes``, without a Python object per number: four times faster than the
JSON form (26 against 104 µs for a busy merchant's 240 buckets).

Layout, little-endian::

    format (uint8, :data:`FORMAT`), then each series' number of buckets (uint32), in
      :data:`SERIES` order
    per series, in that order: its bucket ids (int64), then its two sums, one number per
      bucket each (int64 for counts, float64 for amounts)

A merchant stored as JSON by earlier versions (it starts with ``{``) still decodes.

>>> merchant = MerchantActivity()
>>> _ = merchant.add_transaction(0.0, 10.0); merchant.add_label(60.0, True)
>>> decoded = decode_merchant(encode_merchant(merchant))
>>> decoded.to_state() == merchant.to_state()
True
>>> decoded.features_at(90.0, 5.0) == merchant.features_at(90.0, 5.0)
True
"""

from __future__ import annotations

import struct
import sys
from array import array

import orjson

from tables.merchant_features import ACTIVITY_TYPECODES, LABEL_TYPECODES, MerchantActivity

#: The first byte of the binary form (JSON, the earlier form, starts with ``{``).
FORMAT = 1
#: The series in the order they are stored, with the typecodes of their two sums.
SERIES = (
    ("minutes", ACTIVITY_TYPECODES),
    ("hours", ACTIVITY_TYPECODES),
    ("days", ACTIVITY_TYPECODES),
    ("label_days", LABEL_TYPECODES),
)
_HEADER = struct.Struct(f"<B{len(SERIES)}I")
_ITEM_SIZE = 8  # int64 and float64 alike
_SWAP = sys.byteorder != "little"
#: An empty merchant's series: decoded series are configured like them (see BucketCounts.with_columns).
_EMPTY = MerchantActivity().series()


def encode_merchant(merchant: MerchantActivity) -> bytes:
    """The table bytes of ``merchant``."""
    series = merchant.series()
    columns = [series[key].columns() for key, _ in SERIES]
    parts = [_HEADER.pack(FORMAT, *(len(ids) for ids, _ in columns))]
    for (ids, sums), (_, typecodes) in zip(columns, SERIES, strict=True):
        parts.append(_little_endian(array("q", ids)))
        for code, column in zip(typecodes, sums, strict=True):
            parts.append(_little_endian(column if isinstance(column, array) else array(code, column)))
    return b"".join(parts)


def decode_merchant(data: bytes) -> MerchantActivity:
    """The merchant in ``data`` (either form); raises ``ValueError`` for bytes this version does not read."""
    if data[:1] == b"{":
        return MerchantActivity(orjson.loads(data))
    if data[:1] != bytes([FORMAT]):
        raise ValueError(f"merchant activity format {data[:1]!r} (this version reads {FORMAT})")
    if len(data) < _HEADER.size:
        raise ValueError("merchant activity: cut short in its header")
    _, *lengths = _HEADER.unpack_from(data)
    expected = _HEADER.size + _ITEM_SIZE * 3 * sum(lengths)
    if len(data) != expected:
        raise ValueError(f"merchant activity: {len(data)} bytes where its header says {expected}")
    view = memoryview(data)
    at = _HEADER.size
    series = {}
    for (key, typecodes), n in zip(SERIES, lengths, strict=True):
        size = n * _ITEM_SIZE
        ids = _from_little_endian("q", view[at : at + size]).tolist()
        first = _from_little_endian(typecodes[0], view[at + size : at + 2 * size])
        second = _from_little_endian(typecodes[1], view[at + 2 * size : at + 3 * size])
        series[key] = _EMPTY[key].with_columns(ids, [first, second])
        at += 3 * size
    return MerchantActivity.from_series(series)


def _little_endian(column: array) -> bytes:
    if _SWAP:
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _from_little_endian(code: str, data: memoryview) -> array:
    column = array(code)
    column.frombytes(data)
    if _SWAP:
        column.byteswap()
    return column

"""A merchant's activity survives its table bytes exactly, in either form."""

from __future__ import annotations

from array import array

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.merchant_codec import FORMAT, decode_merchant, encode_merchant
from tables.merchant_features import MerchantActivity
from tables.windows import DAY

events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=60 * DAY, allow_nan=False),
        st.one_of(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), st.booleans()),
    ),
    max_size=60,
)


def _merchant(history: list[tuple[float, float | bool]]) -> MerchantActivity:
    merchant = MerchantActivity()
    for ts, what in history:
        if isinstance(what, bool):
            merchant.add_label(ts, what)
        else:
            merchant.count_transaction(ts, what)
    return merchant


@settings(max_examples=200, deadline=None)
@given(events, st.floats(min_value=0.0, max_value=61 * DAY, allow_nan=False))
def test_a_merchant_decodes_to_the_same_buckets_and_features(history, ts):
    merchant = _merchant(history)
    decoded = decode_merchant(encode_merchant(merchant))
    assert decoded.to_state() == merchant.to_state()
    assert decoded.features_at(ts, 12.5) == merchant.features_at(ts, 12.5)
    again = decode_merchant(encode_merchant(merchant))
    again.count_transaction(ts, 3.0)  # decoded counts go on counting like fresh ones
    merchant.count_transaction(ts, 3.0)
    assert again.to_state() == merchant.to_state()


def test_a_merchant_stored_as_json_by_earlier_versions_still_decodes():
    merchant = _merchant([(0.0, 10.0), (3_600.0, 20.0), (DAY, True)])
    assert decode_merchant(orjson.dumps(merchant.to_state())).to_state() == merchant.to_state()


def test_each_bucket_takes_24_bytes_and_its_sums_decode_as_typed_arrays():
    busy = [(60.0 * n, 10.0 + n) for n in range(500)]
    merchant = _merchant(busy + [(DAY * d, d % 3 == 0) for d in range(30)])
    encoded = encode_merchant(merchant)
    buckets = sum(len(counts.bucket_ids) for counts in merchant.series().values())
    assert encoded[0] == FORMAT and len(encoded) == 1 + 4 * 4 + 24 * buckets
    decoded = decode_merchant(encoded)
    for counts in decoded.series().values():
        _, sums = counts.columns()
        assert all(isinstance(column, array) for column in sums)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "format"),
        (bytes([FORMAT + 1]) + b"\0" * 16, "format"),
        (b"\x01\x05\x00\x00\x00", "cut short"),
        (b"\x01\x05\x00\x00\x00" + b"\0" * 12 + b"\0" * 8, "header says"),
    ],
)
def test_bytes_this_version_does_not_read_raise_value_error(data, error):
    with pytest.raises(ValueError, match=error):
        decode_merchant(data)


def test_trailing_bytes_are_refused():
    with pytest.raises(ValueError, match="header says"):
        decode_merchant(encode_merchant(_merchant([(0.0, 1.0)])) + b"\0")

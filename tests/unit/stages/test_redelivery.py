"""app.stages.redelivery: a redelivered record re-emits what it emitted and is not applied twice."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.stages.redelivery import MAX_KEPT, Applied, applied_codec
from app.stages.state import StateCodec

TEXT = StateCodec(encode=str.encode, decode=bytes.decode)

json_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
).map(orjson.dumps)


@given(
    value=st.none() | st.text(min_size=1),
    offset=st.integers(-1, 2**62),
    outputs=st.dictionaries(st.integers(0, 2**62), st.lists(json_documents, max_size=3), max_size=5),
)
def test_the_state_and_its_outputs_survive_encoding_byte_for_byte(value, offset, outputs):
    codec = applied_codec(TEXT)
    applied = Applied(value, offset, outputs)
    assert codec.decode(codec.encode(applied)) == applied


def test_a_record_at_or_below_the_last_applied_offset_is_a_redelivery():
    applied = Applied[str](None)
    applied.apply("after 10", offset=10, outputs=[b'{"n":1}', b'{"n":2}'], committed=0)
    applied.apply("after 12", offset=12, outputs=[], committed=0)
    assert [applied.is_redelivered(o) for o in (9, 10, 12, 13)] == [True, True, True, False]
    assert applied.outputs_of(10) == [b'{"n":1}', b'{"n":2}']
    assert applied.outputs_of(12) == [] and applied.value == "after 12"


def test_outputs_of_committed_records_are_forgotten_and_the_rest_bounded():
    applied = Applied[int](None)
    for offset in range(200):
        applied.apply(offset, offset=offset, outputs=[b"1"], committed=100)
    assert sorted(applied.outputs) == list(range(200 - MAX_KEPT, 200))
    applied.apply(200, offset=200, outputs=[b"1"], committed=190)
    assert min(applied.outputs) == 190

"""A key's state together with what its latest records emitted: redeliveries re-emit, never re-apply.

Kafka delivers at least once.  A stage's flush makes a key's state durable before its
outputs, and acks the records after both, so a crash in between leaves records that
are already in the state but whose outputs may be missing; they are delivered again.
:class:`Applied` keeps, next to the state, the offset of the last record applied to the
key and the encoded outputs of its recent records: a record at or below that offset is
a redelivery, answered with the same outputs, byte for byte, and not applied twice.

Outputs are kept only for records at or after the partition's committed offset (a
committed record is never delivered again), and at most ``max_kept`` of them per key.
Outputs must be JSON documents (they are stored as such, inside the state's own bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson

from app.stages.state import StateCodec

V = TypeVar("V")

_HEADER = struct.Struct(">qI")  # offset of the last applied record, length of the outputs
MAX_KEPT = 64


@dataclass
class Applied(Generic[V]):
    """``value`` after the record at ``offset``, and the outputs of recent records by offset.

    >>> applied = Applied(value=None)
    >>> applied.is_redelivered(5)
    False
    >>> applied.apply("state after 5", offset=5, outputs=[b'{"alert":1}'], committed=0)
    >>> applied.is_redelivered(5), applied.outputs_of(5), applied.outputs_of(4)
    (True, [b'{"alert":1}'], [])
    """

    value: V | None
    offset: int = -1
    outputs: dict[int, list[bytes]] = field(default_factory=dict)

    def is_redelivered(self, offset: int) -> bool:
        """Whether the record at ``offset`` was applied already (keys come from one partition)."""
        return offset <= self.offset

    def outputs_of(self, offset: int) -> list[bytes]:
        """What the record at ``offset`` emitted (empty: nothing, or no longer kept)."""
        return self.outputs.get(offset, [])

    def apply(
        self, value: V, *, offset: int, outputs: Sequence[bytes], committed: int, max_kept: int = MAX_KEPT
    ) -> None:
        """Record ``value`` as the state after the record at ``offset``, which emitted ``outputs``.

        Outputs of records below ``committed`` are forgotten.

        >>> applied = Applied(value=0)
        >>> for offset in range(5):
        ...     applied.apply(offset, offset=offset, outputs=[b"1"], committed=3)
        >>> sorted(applied.outputs)
        [3, 4]
        """
        self.value, self.offset = value, offset
        self.add_outputs(offset, outputs, committed=committed, max_kept=max_kept)

    def add_outputs(
        self, offset: int, outputs: Sequence[bytes], *, committed: int, max_kept: int = MAX_KEPT
    ) -> None:
        """Keep ``outputs`` as what the record at ``offset``, applied already, emitted (for outputs
        computed after their record was applied: at the flush, with other records'), under the
        same bounds as :meth:`apply`.

        >>> applied = Applied(value=None)
        >>> applied.apply("state after 5", offset=5, outputs=(), committed=0)
        >>> applied.add_outputs(5, [b'{"items":[]}'], committed=0); applied.outputs_of(5)
        [b'{"items":[]}']
        """
        kept = self.outputs
        if outputs:
            kept[offset] = list(outputs)
        if kept and (next(iter(kept)) < committed or len(kept) > max_kept):
            self.outputs = dict([(o, out) for o, out in kept.items() if o >= committed][-max_kept:])


def applied_codec(inner: StateCodec[V]) -> StateCodec[Applied[V]]:
    """The codec of :class:`Applied` values around ``inner``, the codec of the state itself.

    >>> codec = applied_codec(StateCodec(encode=str.encode, decode=bytes.decode))
    >>> applied = Applied("state", offset=7, outputs={7: [b'{"a":1}']})
    >>> codec.decode(codec.encode(applied)) == applied
    True
    """

    def encode(applied: Applied[V]) -> bytes:
        outputs = orjson.dumps(
            [[offset, [orjson.Fragment(out) for out in outs]] for offset, outs in applied.outputs.items()]
        )
        value = b"" if applied.value is None else inner.encode(applied.value)
        return _HEADER.pack(applied.offset, len(outputs)) + outputs + value

    def decode(data: bytes) -> Applied[V]:
        offset, length = _HEADER.unpack_from(data)
        start = _HEADER.size
        outputs = {
            o: [orjson.dumps(out) for out in outs] for o, outs in orjson.loads(data[start : start + length])
        }
        value_bytes = data[start + length :]
        value = inner.decode(value_bytes) if value_bytes else None
        return Applied(value, offset, outputs)

    return StateCodec(encode=encode, decode=decode)

"""A card's whole state: its event log (the live features) and its latest decisions.

The decisions are kept, with the offset of the record they answered, so that
a record Kafka delivers again (after a crash, before its offset was committed)
gets the decision it already had, byte for byte, instead of a second,
different one; another record with the same transaction (a producer retry)
is recognised as a duplicate and not answered twice.  Only decisions of
records not yet committed are kept (a committed record is never delivered
again), at most :data:`RECENT_MAX` of them.
"""

from __future__ import annotations

from typing import Any

import orjson

from tables.card_features import RETENTION, card_log
from tables.windows import EventLog

RECENT_MAX = 64


class CardState:
    """The card's log and recent decisions, stored as one table value.

    >>> state = CardState.decode(None)
    >>> state.remember("t1", 100.0, b'{"tx_id":"t1"}', offset=17, committed=10)
    >>> CardState.decode(state.encode()).stored_decision("t1", offset=17)
    b'{"tx_id":"t1"}'
    >>> state.stored_decision("t1", offset=18) is None  # another record: a duplicate
    True
    """

    __slots__ = ("log", "recent")

    def __init__(self, log: EventLog, recent: dict[str, tuple[float, int, Any]] | None = None) -> None:
        self.log = log
        self.recent = recent if recent is not None else {}

    @classmethod
    def decode(cls, data: bytes | None) -> CardState:
        """From table bytes (``None``: a new card); reads eddy 0.1's bare log too."""
        if data is None:
            return cls(card_log(None))
        payload = orjson.loads(data)
        if "log" not in payload:  # eddy 0.1 stored the log alone
            return cls(card_log(payload))
        recent = {
            tx_id: (decided_at, offset, decision) for tx_id, decided_at, offset, decision in payload["recent"]
        }
        return cls(card_log(payload["log"]), recent)

    def encode(self) -> bytes:
        recent = [
            [
                tx_id,
                decided_at,
                offset,
                orjson.Fragment(decision) if isinstance(decision, bytes) else decision,
            ]
            for tx_id, (decided_at, offset, decision) in self.recent.items()
        ]
        return orjson.dumps({"log": self.log.to_state(), "recent": recent})

    def is_idle(self, watermark: float) -> bool:
        """Whether no transaction at or after ``watermark`` can see anything of this card.

        Such a card is dropped: its next transaction gets the features of a new card.
        """
        return self.log.newest < watermark - RETENTION

    def remember(
        self, tx_id: str, decided_at: float, decision: bytes, *, offset: int, committed: int
    ) -> None:
        """Keep ``decision`` (encoded) of the record at ``offset`` for its redelivery.

        Decisions of records below ``committed`` (the partition's committed offset) are
        forgotten: those records are not delivered again.

        >>> state = CardState.decode(None)
        >>> for offset in range(5):
        ...     state.remember(f"t{offset}", 0.0, b"{}", offset=offset, committed=3)
        >>> sorted(state.recent)
        ['t3', 't4']
        """
        recent = self.recent
        recent[tx_id] = (decided_at, offset, decision)
        if len(recent) > 1 and (next(iter(recent.values()))[1] < committed or len(recent) > RECENT_MAX):
            kept = [(t, entry) for t, entry in recent.items() if entry[1] >= committed]
            self.recent = dict(kept[-RECENT_MAX:])

    def stored_decision(self, tx_id: str, *, offset: int) -> bytes | None:
        """The encoded decision of ``tx_id`` if the record at ``offset`` got it and it is still kept."""
        entry = self.recent.get(tx_id)
        if entry is None or entry[1] != offset:
            return None
        decision = entry[2]
        return decision if isinstance(decision, bytes) else orjson.dumps(decision)

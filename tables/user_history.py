"""A user's whole state in the recommendations pipeline, stored as one compact table value.

The click stage is partitioned by ``user_id``: one worker owns a user and keeps,
in a changelogged table, everything the user's recommendations need:

* the recent interactions, at most :data:`RECENT_MAX` of them and none more than
  :data:`RECENT_RETENTION` behind the newest (an :class:`~tables.windows.EventLog`);
* the items bought, the last :data:`PURCHASED_MAX` distinct ones (never recommended
  again; a purchase older than that may be);
* the user's latent factors and bias, which the user stage learns
  (:mod:`models.recommender`), so that the published model holds item factors only
  and its size does not grow with the number of users.

The table value is a small binary record (:meth:`UserHistory.encode`), not a pickle:
a changelog must not run code when read, and a user is written on every click.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from app.contracts import CLICK_ACTIONS, Click
from tables.windows import DAY, EventLog

RECENT_MAX = 50
RECENT_RETENTION = 7 * DAY
PURCHASED_MAX = 100

_FORMAT = 1
# format, factors (0: none yet), recent interactions, purchases, distinct ids, bias
_HEADER = struct.Struct("<BBHHHd")
_ID_LENGTH = struct.Struct("<H")
_ACTION_CODES = {action: code for code, action in enumerate(CLICK_ACTIONS)}
_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(slots=True)
class UserFactors:
    """A user's latent vector and bias, as the recommender learns them."""

    latent: np.ndarray
    bias: float

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UserFactors)
            and self.bias == other.bias
            and np.array_equal(self.latent, other.latent)
        )


class UserHistory:
    """A user's recent interactions, purchases and factors.

    >>> user = UserHistory()
    >>> for ts, item, action in [(1.0, "a", "view"), (2.0, "b", "view"), (3.0, "a", "purchase")]:
    ...     user.add(Click("u1", item, action, ts))
    >>> user.recent_items(), user.has_purchased("a"), user.has_purchased("b")
    (['a', 'b'], True, False)
    >>> UserHistory.decode(user.encode()) == user
    True
    """

    __slots__ = ("factors", "purchased", "recent")

    def __init__(
        self,
        recent: EventLog | None = None,
        purchased: dict[str, None] | None = None,
        factors: UserFactors | None = None,
    ) -> None:
        self.recent = recent if recent is not None else _recent_log()
        # A dict as an ordered set: membership in O(1), oldest purchase first.
        self.purchased = purchased if purchased is not None else {}
        self.factors = factors

    def add(self, click: Click) -> None:
        """Remember ``click``; drop interactions no longer recent and purchases beyond the limit."""
        self.recent.insert(click.ts, (click.item_id, _ACTION_CODES[click.action]))
        self.recent.expire()
        if click.action == "purchase":
            self.purchased.pop(click.item_id, None)
            self.purchased[click.item_id] = None
            if len(self.purchased) > PURCHASED_MAX:
                del self.purchased[next(iter(self.purchased))]

    def has_purchased(self, item_id: str) -> bool:
        return item_id in self.purchased

    def recent_items(self) -> list[str]:
        """Distinct items of the recent interactions, most recent first."""
        return list(dict.fromkeys(reversed(self.recent.column("item"))))

    def interactions(self) -> list[tuple[float, str, str]]:
        """The recent interactions as ``(ts, item_id, action)``, oldest first.

        >>> user = UserHistory(); user.add(Click("u1", "a", "click", 5.0))
        >>> user.interactions()
        [(5.0, 'a', 'click')]
        """
        items, codes = self.recent.columns()
        rows = zip(self.recent.ts, items, codes, strict=True)
        return [(ts, item, CLICK_ACTIONS[code]) for ts, item, code in rows]

    @property
    def newest(self) -> float:
        """Event time of the newest interaction (``-inf``: none)."""
        return self.recent.newest

    def is_idle(self, watermark: float) -> bool:
        """Whether the user's last interaction is more than :data:`RECENT_RETENTION` behind ``watermark``.

        Such a user may be dropped; only their factors and purchases would be lost.
        """
        return self.newest < watermark - RECENT_RETENTION

    def encode(self) -> bytes:
        """The table value: a header, the numbers as little-endian arrays, then each distinct id once."""
        items, codes = self.recent.columns()
        purchased = self.purchased
        # Every distinct id, recent ones first, numbered in that order (a dict keeps it).
        index: dict[str, int] = dict.fromkeys(items)  # type: ignore[arg-type]
        index.update(dict.fromkeys(purchased))  # type: ignore[arg-type]
        for row, item_id in enumerate(index):
            index[item_id] = row
        factors = self.factors
        n_factors = 0 if factors is None else factors.latent.size
        rows = array("H", [index[item] for item in items])
        rows.extend([index[item] for item in purchased])
        ts = array("d", self.recent.ts)
        if _BIG_ENDIAN:
            rows.byteswap()
            ts.byteswap()
        # Arrays' bytes and one join: a user is encoded at every flush that writes it, once per
        # click when flushes are small, and a struct format per shape would be compiled anew.
        return b"".join(
            [
                _HEADER.pack(
                    _FORMAT,
                    n_factors,
                    len(items),
                    len(purchased),
                    len(index),
                    0.0 if factors is None else factors.bias,
                ),
                b"" if factors is None else factors.latent.astype("<f8", copy=False).tobytes(),
                ts.tobytes(),
                bytes(codes),
                rows.tobytes(),
                *map(_length_prefixed, index),
            ]
        )

    @classmethod
    def decode(cls, data: bytes | None) -> UserHistory:
        """From table bytes (``None``: a new user); raises ``ValueError`` for another format."""
        if data is None:
            return cls()
        fmt, n_factors, n_recent, n_purchased, n_ids, bias = _HEADER.unpack_from(data)
        if fmt != _FORMAT:
            raise ValueError(f"user history format {fmt} (this version reads {_FORMAT})")
        at = _HEADER.size
        latent = np.frombuffer(data, "<f8", n_factors, at).astype(np.float64)
        at += 8 * n_factors
        ts = np.frombuffer(data, "<f8", n_recent, at).tolist()
        at += 8 * n_recent
        codes = list(data[at : at + n_recent])
        at += n_recent
        item_rows = np.frombuffer(data, "<u2", n_recent, at).tolist()
        at += 2 * n_recent
        purchase_rows = np.frombuffer(data, "<u2", n_purchased, at).tolist()
        at += 2 * n_purchased
        ids = []
        for _ in range(n_ids):
            (length,) = _ID_LENGTH.unpack_from(data, at)
            at += _ID_LENGTH.size
            ids.append(data[at : at + length].decode())
            at += length
        if at != len(data):
            raise ValueError(f"user history: {len(data) - at} bytes left over")
        recent = _recent_log({"ts": ts, "item": [ids[row] for row in item_rows], "action": codes})
        purchased = dict.fromkeys(ids[row] for row in purchase_rows)
        factors = UserFactors(latent, bias) if n_factors else None
        return cls(recent, purchased, factors)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, UserHistory)
            and self.recent.to_state() == other.recent.to_state()
            and list(self.purchased) == list(other.purchased)
            and self.factors == other.factors
        )


@lru_cache(maxsize=1 << 16)
def _length_prefixed(item_id: str) -> bytes:
    """``item_id`` as stored: its UTF-8 length, then its bytes (cached: a catalogue's ids recur)."""
    raw = item_id.encode()
    return _ID_LENGTH.pack(len(raw)) + raw


def _recent_log(state: dict[str, list] | None = None) -> EventLog:
    return EventLog.from_state(state, ("item", "action"), RECENT_RETENTION, RECENT_MAX)

"""The recommendations pipeline's tables: users' histories and items' activity, written behind.

* ``reco-user-history``: per user (key ``user_id`` as ``clicks`` carries it), the
  :class:`~tables.user_history.UserHistory` (recent interactions, purchases, the
  user's factors) wrapped in :class:`~app.stages.redelivery.Applied`, so that a
  redelivered click re-emits what it emitted instead of being learned twice.
* ``reco-item-activity``: per item, its weighted interactions per minute and hour
  (:class:`~tables.item_popularity.ItemActivity`), wrapped in ``Applied`` so that an item
  event delivered again is not counted twice; its changelog is what every worker reads item
  popularity from.
"""

from __future__ import annotations

import orjson

from app.pipeline import pipeline_table
from app.stages.redelivery import Applied, applied_codec
from app.stages.state import KeyedState, StateCodec
from tables.item_popularity import ItemActivity
from tables.user_history import UserHistory


def _encode_item(activity: ItemActivity) -> bytes:
    return orjson.dumps(activity.to_state())


def decode_item(data: bytes) -> ItemActivity:
    return ItemActivity(orjson.loads(data))


USER_CODEC: StateCodec[UserHistory] = StateCodec(encode=UserHistory.encode, decode=UserHistory.decode)
ITEM_CODEC: StateCodec[ItemActivity] = StateCodec(encode=_encode_item, decode=decode_item)

user_state: KeyedState[Applied[UserHistory]] = KeyedState(
    pipeline_table(
        "reco-user-history",
        "Per user: recent interactions, purchases, the user's factors, and what recent clicks emitted.",
    ),
    applied_codec(USER_CODEC),
)
ITEM_STATE_CODEC: StateCodec[Applied[ItemActivity]] = applied_codec(ITEM_CODEC)

item_state: KeyedState[Applied[ItemActivity]] = KeyedState(
    pipeline_table(
        "reco-item-activity",
        "Per item: action-weighted interactions per minute and hour (and the offset of the last "
        "item event counted); its changelog is what every worker reads item popularity from.",
    ),
    ITEM_STATE_CODEC,
)


def decode_item_activity(data: bytes) -> ItemActivity | None:
    """An item's activity from its ``reco-item-activity`` changelog record."""
    return ITEM_STATE_CODEC.decode(data).value


def count_item(
    applied: Applied[ItemActivity] | None, per_minute: dict[int, float], offset: int
) -> Applied[ItemActivity] | None:
    """An item's state after counting its weights per minute from the item-events record at
    ``offset`` (``None``: that record was counted into it already).

    >>> counted = count_item(None, {1: 2.0}, offset=7)
    >>> counted.value.score(60.0, "hour"), count_item(counted, {1: 2.0}, offset=7)
    (2.0, None)
    """
    applied = applied or Applied(None)
    if applied.is_redelivered(offset):
        return None
    activity = applied.value or ItemActivity()
    activity.add_per_minute(per_minute)
    applied.apply(activity, offset=offset, outputs=(), committed=0)
    return applied

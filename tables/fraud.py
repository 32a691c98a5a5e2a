"""The fraud pipeline's tables: RocksDB-backed, changelogged, written behind by their stages.

Keys are stored exactly as the input topics carry them (raw UTF-8), so the
changelog and the web router hash a key as the topics do.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.pipeline import pipeline_table
from app.stages.state import KeyedState, StateCodec
from tables.card_state import CardState
from tables.merchant_codec import decode_merchant, encode_merchant
from tables.merchant_features import MerchantActivity

CARD_CODEC: StateCodec[CardState] = StateCodec(encode=CardState.encode, decode=CardState.decode)
MERCHANT_CODEC: StateCodec[MerchantActivity] = StateCodec(encode=encode_merchant, decode=decode_merchant)
JSON_CODEC: StateCodec[Any] = StateCodec(encode=orjson.dumps, decode=orjson.loads)

card_state: KeyedState[CardState] = KeyedState(
    pipeline_table(
        "fraud-card-activity",
        "Per card: its transactions of the last 31 days of event time and its latest decisions.",
    ),
    CARD_CODEC,
)
# A merchant is decoded once per flush that touches it (its events within a flush hit the dirty
# entry).  Kept decoded in between, the merchants' buckets were a quarter of a worker's
# GC-tracked objects (GC study); decoding them again (tables.merchant_codec) costs less.
merchant_state: KeyedState[MerchantActivity] = KeyedState(
    pipeline_table(
        "fraud-merchant-activity",
        "Per merchant: bucketed counts, amounts and received labels (tables.merchant_features); "
        "its changelog is what every worker reads merchant features from.",
    ),
    MERCHANT_CODEC,
    max_cached=0,
)
# Each entry is touched twice (its decision, then its label days later): kept decoded in between,
# the pending entries were 43 % of a worker's GC-tracked objects and lengthened every full
# collection.  Clean entries stay in RocksDB only and are decoded when their second record comes.
label_join_state: KeyedState[dict[str, Any]] = KeyedState(
    pipeline_table(
        "fraud-label-join", "Per tx_id: the decision awaiting its label, or the label awaiting its decision."
    ),
    JSON_CODEC,
    max_cached=0,
)

"""Every worker's copy of the merchants' published activity, read by the decision stage.

The merchant stage owns each merchant's :class:`~tables.merchant_features.MerchantActivity`
and writes it, once per flush, to its table's changelog; every worker follows
that compacted changelog (:class:`~app.stages.follower.TopicFollower`) into this
view.  A decision therefore reads merchant features in memory, without a hop,
at the price of a bounded staleness that :class:`~app.stages.lag.LagSample` measures.

The view keeps each merchant's published *bytes* and decodes them when a decision asks.
A merchant is published about as often as it is read, so this decodes no more than
decoding every record would, and the decoded object dies young: kept decoded, the
view's ~26 containers per merchant were rebuilt at every publish and promoted to the
garbage collector's oldest generation, a quarter of a worker's tracked objects and
most of its collection time (measured in a replay of the soak: 14.2 s of 93 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord

from app.stages.lag import LagSample
from tables.merchant_features import MerchantActivity

logger = logging.getLogger(__name__)


class MerchantView:
    """Merchant id to its latest published activity, fed with changelog records.

    >>> import orjson
    >>> from aiokafka import ConsumerRecord
    >>> view = MerchantView(lambda data: MerchantActivity(orjson.loads(data)))
    >>> merchant = MerchantActivity(); _ = merchant.add_transaction(0.0, 10.0)
    >>> record = ConsumerRecord("t", 0, 0, 0, 0, b"m1", orjson.dumps(merchant.to_state()), None, 0, 0, ())
    >>> view.apply([record]); view.get("m1").features_at(30.0, 5.0)["merchant_count_1h"]
    1
    """

    def __init__(self, decode: Callable[[bytes], MerchantActivity]) -> None:
        self.decode = decode
        self._merchants: dict[str, bytes] = {}
        self.lag = LagSample()
        self.undecodable = 0

    def get(self, merchant_id: str) -> MerchantActivity | None:
        """The merchant's latest published activity, decoded afresh (``None``: not published).

        A record that does not decode (only the merchant stage writes them) leaves the view
        with an error in the log, counted in ``undecodable``: the merchant reads as new until
        it is published again, instead of failing every decision at that merchant.
        """
        data = self._merchants.get(merchant_id)
        if data is None:
            return None
        try:
            return self.decode(data)
        except Exception:
            del self._merchants[merchant_id]
            self.undecodable += 1
            logger.exception("merchant %r: its published activity does not decode; dropped", merchant_id)
            return None

    def apply(self, records: Sequence[ConsumerRecord]) -> None:
        newest: dict[bytes, Any] = {record.key: record for record in records}  # one decode per key
        for key, record in newest.items():
            if record.value is None:
                self._merchants.pop(key.decode(), None)
            else:
                self._merchants[key.decode()] = record.value
        if records:
            self.lag.add(max(0.0, time.time() - records[-1].timestamp / 1000.0))

    def __len__(self) -> int:
        return len(self._merchants)

"""The fraud pipeline's tables: RocksDB-backed, changelogged, one JSON value per entity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from faust.types import TableT

from app.faust_app import app, producer_knows_partitions
from app.settings import settings


class JsonTable:
    """A Faust table with raw UTF-8 keys and orjson values, used with ``str`` keys.

    Keys are stored exactly as the input topics carry them.  Faust's default for
    ``key_type=str`` is JSON, which quotes the key: the changelog and the web
    router would then hash ``"card-1"`` where the topics hash ``card-1``, and put
    a key on another partition than the events that carry it.
    """

    def __init__(self, table: TableT) -> None:
        self.table = table

    def get(self, key: str) -> Any | None:
        raw = self.table.get(key.encode())
        return None if raw is None else orjson.loads(raw)

    def set(self, key: str, value: Any) -> None:
        self.table[key.encode()] = orjson.dumps(value)

    def delete(self, key: str) -> None:
        self.table.pop(key.encode(), None)

    def evict(self, key: str) -> None:
        """Delete ``key`` outside stream iteration (from a timer).

        A delete inside an agent goes to the changelog partition of the event
        being processed; here the key's own partition is used, which is the
        partition its events come from when producers use Kafka's default
        partitioner (as the README asks).
        """
        raw_key = key.encode()
        if self.table.use_partitioner:
            self.table.pop(raw_key, None)
            return
        changelog = self.table.changelog_topic.get_topic_name()
        partition = app.producer.key_partition(changelog, raw_key).partition
        self.table.data.pop(raw_key, None)
        self.table.send_changelog(partition, raw_key, None, value_serializer="raw")

    async def sweep(
        self,
        is_idle: Callable[[Any], bool],
        on_evicted: Callable[[str, Any], None] | None = None,
        chunk: int = 500,
    ) -> int:
        """Evict every entry ``is_idle`` holds true for, calling ``on_evicted(key, value)``; count them.

        The event loop gets a turn every ``chunk`` entries, so a large table does not
        hold up the agents while it is swept.
        """
        evicted = 0
        # Keys only up front (values can be large); each value is read when its turn comes,
        # so an entry an agent updated while the sweep yielded is judged on its new value.
        for seen, raw_key in enumerate(list(self.table.data.keys()), start=1):
            key = raw_key.decode()
            value = self.get(key)
            if value is not None and is_idle(value):
                self.evict(key)
                evicted += 1
                if on_evicted is not None:
                    on_evicted(key, value)
            if seen % chunk == 0:
                await asyncio.sleep(0)
        return evicted


def _table(name: str, help: str, **options: Any) -> JsonTable:
    return JsonTable(
        app.Table(
            name, key_type=bytes, value_type=bytes, help=help, options=settings.table_options, **options
        )
    )


card_activity = _table(
    "fraud-card-activity",
    "Per card: its transactions of the last 31 days of event time (tables.card_features).",
)
merchant_activity = _table(
    "fraud-merchant-activity",
    "Per merchant: bucketed counts, amounts and received labels (tables.merchant_features).",
)
label_join = _table(
    "fraud-label-join",
    "Per tx_id: the decision awaiting its label, or the label awaiting its decision.",
    # Expiry deletes entries from a timer, outside any event: the changelog partition
    # must come from the key, which matches how tx_id-keyed records are partitioned.
    use_partitioner=True,
)


@app.task
async def learn_changelog_partitions() -> None:
    """Let the web router find the owner of any key from the start (see producer_knows_partitions)."""
    for table in (card_activity, merchant_activity, label_join):
        await producer_knows_partitions(table.table.changelog_topic.get_topic_name())

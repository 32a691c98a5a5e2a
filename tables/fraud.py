"""The fraud pipeline's tables: RocksDB-backed, changelogged, one value per entity."""

from __future__ import annotations

from app.faust_app import app
from app.settings import settings

card_activity = app.Table(
    "fraud-card-activity",
    key_type=str,
    help="Per card: its transactions of the last 31 days of event time (tables.card_features).",
    options=settings.table_options,
)

merchant_activity = app.Table(
    "fraud-merchant-activity",
    key_type=str,
    help="Per merchant: bucketed counts, amounts and received labels (tables.merchant_features).",
    options=settings.table_options,
)

label_join = app.Table(
    "fraud-label-join",
    key_type=str,
    # Expiry deletes entries from a timer, outside any event: the changelog partition
    # must come from the key, which matches how tx_id-keyed records are partitioned.
    use_partitioner=True,
    help="Per tx_id: the decision awaiting its label, or the label awaiting its decision.",
    options=settings.table_options,
)

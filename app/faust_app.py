"""The Faust application object, configured from :mod:`app.settings`."""

from __future__ import annotations

import faust

from app import codecs
from app.settings import settings

app = faust.App(
    settings.app_id,
    origin="app",
    broker=settings.broker,
    store=settings.store,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    processing_guarantee=settings.processing_guarantee,
    web_host=settings.web_host,
    web_port=settings.web_port,
    key_serializer="raw",
    value_serializer=codecs.CODEC_NAME,
    # A few ms of batching in the producer: decisions still leave within the latency budget.
    producer_linger_ms=2,
    producer_max_batch_size=256 * 1024,
    stream_buffer_maxsize=8192,
    broker_commit_every=2_000,
    broker_commit_interval=1.0,
    table_standby_replicas=0,
)

"""The Faust application object, configured from :mod:`app.settings`."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

import faust
from faust.types import TopicT

from app import codecs, faust_fixes  # importing faust_fixes checks faust's version and patches it
from app.settings import settings
from app.web_auth import bearer_token_middleware

logger = logging.getLogger(__name__)


class MissingTopicWarnings(logging.Filter):
    """aiokafka's "Topic ... not found in cluster metadata": a warning, once per topic per ``every`` seconds.

    aiokafka logs it as an error at every metadata refresh, several a second while a topic is
    missing.  eddy creates its topics as a worker starts, while its consumer already asks for
    them: a fresh `make run` logged 108 such errors in its first two seconds, none needing
    action.  A topic that stays missing (a wrong prefix, say) still shows, once a minute.
    """

    MESSAGE = "Topic %s not found in cluster metadata"

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last_logged: dict[object, float] = {}  # one entry per topic name the app asked for

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE or not record.args:
            return True
        topic = record.args[0] if isinstance(record.args, tuple) else record.args
        last = self._last_logged.get(topic)
        if last is not None and record.created - last < self.every:
            return False
        self._last_logged[topic] = record.created
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


logging.getLogger("aiokafka.cluster").addFilter(MissingTopicWarnings())

# Every table partition's RocksDB draws on this one budget (opened once partitions are assigned).
faust_fixes.share_rocksdb_memory(settings.rocksdb_memory_mb * 2**20)
# Fetches wait for records to accumulate instead of carrying one or two each under steady traffic.
faust_fixes.batch_fetches(settings.fetch_max_wait_ms)

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
    # faust's /table/{name}/{key}/ would serve whole card histories to anyone.
    web_tables_enabled=False,
    web_application_options=(
        {"middlewares": [bearer_token_middleware(settings.web_token)]} if settings.web_token else None
    ),
    key_serializer="raw",
    value_serializer=codecs.CODEC_NAME,
    # A few ms of batching in the producer: decisions still leave within the latency budget.
    producer_linger_ms=2,
    producer_max_batch_size=256 * 1024,
    stream_buffer_maxsize=8192,
    broker_commit_every=2_000,
    broker_commit_interval=1.0,
    # A worker that dies without leaving the group hands its partitions over after this long
    # (heartbeats come from the consumer thread, so a busy agent does not trip it).
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
    # Workers that join before their topics exist get no partitions; fresher metadata lets the
    # group see the topics appear and rebalance within seconds, not faust's default 5 minutes.
    consumer_metadata_max_age_ms=10_000,
    # faust hands every record of one fetch to the agents before it reads the next fetch.  With
    # 1 MiB per partition (faust's default) a worker starting on a backlog of 60,000 clicks took
    # all of them in its first fetch, and the learner's training partition, fetched after it,
    # waited until they were handled: the model stayed empty for 40,000 clicks.  Smaller
    # fetches per partition take turns between a worker's inputs (BENCHMARKS.md, 2026-11-30).
    consumer_max_fetch_size=settings.fetch_partition_bytes,
    # Standby replicas keep a copy of other workers' tables warm: a failover then replays
    # only the changelog's tail instead of all of it (BENCHMARKS.md, recovery and failover).
    table_standby_replicas=settings.standby_replicas,
    # faust's Monitor sensor without its per-record bookkeeping (which only faust's web stats
    # pages read): see faust_fixes.LeanMonitor.
    Monitor=faust_fixes.LeanMonitor,
    # The Cython stream loop (the only one faust_fixes allows) takes events already queued
    # without awaiting the queue, as faust's Python loop does; with one stream per topic
    # partition, as here, that is all the setting changes.
    cython_optimizations=True,
)


def declared_at_startup(topic: TopicT) -> TopicT:
    """Create ``topic`` (if missing) when a worker starts.

    Faust creates the topics its agents consume; output-only topics (decisions,
    dead letters, snapshots) would otherwise exist only once something is sent.
    """

    async def declare() -> None:
        await declare_until_done(topic)

    app.task(declare)
    return topic


async def until_done(step: Callable[[], Awaitable[object]], what: str, max_delay: float = 30.0) -> None:
    """Await ``step()``, again (0.5 s, 1 s, ... up to ``max_delay`` apart) until it succeeds.

    For start-up work in app tasks: a failing app task crashes the worker (seen when the
    broker stopped while a worker was still declaring its topics).
    """
    for attempt in itertools.count():
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = min(max_delay, 0.5 * 2**attempt)
            logger.warning("%s failed (%r); trying again in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)


async def declare_until_done(topic: TopicT, max_delay: float = 30.0) -> None:
    """``topic.maybe_declare()`` until it succeeds (:func:`until_done`)."""
    await until_done(topic.maybe_declare, f"declaring {topic.topics}", max_delay)


async def producer_knows_partitions(topic_name: str) -> None:
    """Wait until the producer has metadata for ``topic_name``.

    Faust picks partitions from the producer's metadata when a table uses the key
    partitioner and when the web router looks up which worker owns a key; for a
    topic this worker has not produced to yet that metadata is missing and the
    lookup fails.  Faust has no public call for this.
    """
    await app.producer._ensure_producer().partitions_for(topic_name)

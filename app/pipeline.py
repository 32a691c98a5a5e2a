"""What every pipeline's agents share: topics, tables, registered stages and guarded timers.

A pipeline module (``agents/<name>.py``) reads top to bottom: its topics
(:func:`pipeline_topic`), its tables (:func:`pipeline_table`), its stages
(:func:`register_stage`), its agents (``await stage.run(stream, handle)``) and
its views.  Registered stages are flushed by one task and drop the cached state
of revoked partitions together, whatever pipeline they belong to.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust.types import TableT, TopicT

from app.faust_app import app, declare_until_done, producer_knows_partitions, until_done
from app.runtime import SurvivorFreezer, freeze_startup_objects, set_young_threshold
from app.settings import settings
from app.stages.stage import BatchedStage

logger = logging.getLogger(__name__)

_frozen = False  # see freeze_startup_objects_once

PARTITIONS = settings.topic_partitions


def pipeline_topic(*names: str, **options: Any) -> TopicT:
    """A topic the app declares (creates when missing), named with the configured prefix;
    raw bytes in and out, ``topic_partitions`` partitions unless ``partitions=`` says otherwise."""
    options.setdefault("partitions", PARTITIONS)
    return app.topic(
        *(settings.topic_name(name) for name in names),
        internal=True,
        key_type=bytes,
        value_serializer="raw",
        **options,
    )


_tables: list[TableT] = []


def pipeline_table(name: str, help: str) -> TableT:
    """A RocksDB-backed, changelogged table of raw bytes (keys as the input topics carry them,
    so the changelog and the web router hash a key as the topics do)."""
    table = app.Table(name, key_type=bytes, value_type=bytes, help=help, options=settings.table_options)
    _tables.append(table)
    return table


@app.task
async def learn_changelog_partitions() -> None:
    """Let the web router find the owner of any key from the start (see producer_knows_partitions)."""
    for table in _tables:
        name = table.changelog_topic.get_topic_name()
        await declare_until_done(table.changelog_topic)
        learn = functools.partial(producer_knows_partitions, name)
        await until_done(learn, f"learning the partitions of {name}")


_stages: list[tuple[BatchedStage, frozenset[str]]] = []


def register_stage(stage: BatchedStage, inputs: Iterable[TopicT]) -> BatchedStage:
    """Flush ``stage`` with every other, forget its cached state of revoked ``inputs`` partitions,
    and hand it their records directly (``EDDY_DIRECT_HANDOVER``, :mod:`app.stages.inbox`)."""
    names = frozenset(name for topic in inputs for name in topic.topics)
    _stages.append((stage, names))
    if settings.direct_handover:
        stage.take_directly(names)
    return stage


def registered_stages() -> list[BatchedStage]:
    return [stage for stage, _ in _stages]


@app.task
async def flush_stages() -> None:
    await asyncio.gather(*(stage.run_flushes() for stage, _ in _stages))


@app.on_rebalance_complete.connect
async def freeze_startup_objects_once(app_: Any, **kwargs: Any) -> None:
    """After the first rebalance the worker is built: its objects leave the collector's scans."""
    global _frozen
    if not _frozen:
        _frozen = True
        logger.info("%d objects built at start-up frozen out of garbage collection", freeze_startup_objects())
        logger.info("garbage collection thresholds %s", set_young_threshold(settings.gc_young_threshold))
        if settings.gc_freeze_survivors:
            survivor_freezer.install()


@app.on_partitions_revoked.connect
async def forget_revoked_state(app_: Any, revoked: set, **kwargs: Any) -> None:
    """Revoked partitions were flushed (faust waited for their acks): drop their cached state."""
    for stage, topics in _stages:
        stage.forget_partitions({tp.partition for tp in revoked if tp.topic in topics}, topics)


def never_stops_the_worker(interval: float) -> Callable[[Callable[[], Awaitable[None]]], Any]:
    """``app.timer(interval)`` whose exceptions are logged: a failing timer would stop the worker."""

    def decorate(body: Callable[[], Awaitable[None]]) -> Any:
        @functools.wraps(body)
        async def guarded() -> None:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("timer %s failed; it runs again in %.0f s", body.__name__, interval)

        return app.timer(interval=interval)(guarded)

    return decorate


survivor_freezer = SurvivorFreezer()

if settings.gc_freeze_survivors:

    @never_stops_the_worker(settings.gc_thaw_interval_s)
    async def thaw_frozen_survivors() -> None:
        """Every few minutes one full collection scans everything (and reclaims frozen cycles)."""
        survivor_freezer.thaw()

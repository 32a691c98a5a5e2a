"""Patches of faust-streaming internals: no record lost around rebalances, less work per record.

Importing this module (``app.faust_app`` does) checks the installed faust-streaming
version and installs the patches once.  Faust is ours to bend, carefully:

* The patches were written against faust-streaming :data:`FAUST_VERSION` and import
  refuses to run with any other version (``RuntimeError``).  Set the environment variable
  ``EDDY_ALLOW_UNTESTED_FAUST=1`` to run anyway with a logged warning, e.g. to try an
  upgrade; then run ``tests/unit/test_faust_fixes.py``, whose fingerprint test names every
  patched or relied-upon faust function whose source changed.
* :data:`PATCHED` fingerprints (sha256 of the source) every faust function replaced here,
  :data:`RELIED_ON` the faust code the patches assume the behaviour of without replacing it.

The patches (each function's docstring says why it is needed and why it is safe):

* ``AIOKafkaConsumerThread.seek_to_committed`` -> :func:`_seek_to_committed_or_beginning`:
  partitions with no committed offset go back to the beginning after a rebalance, and
  all partitions move in one counted step.
* ``Consumer._new_offset`` -> :func:`_new_offset_after_every_fetched_offset`, with
  ``aiokafka.Consumer._to_message`` -> :func:`_to_message_noting_fetched` keeping
  the fetched-but-unacked offsets: never commit past a fetched, unprocessed record.
* ``Consumer.on_partitions_revoked`` -> :func:`_on_partitions_revoked_committing_first`:
  commit what was acked before faust forgets it, so a partition moves without repeats, and
  forget what could not be committed after the handler.
* ``Consumer._drain_messages`` -> :func:`_drain_messages_awaiting_directly`: hand each
  record to the streams without creating tasks, unless the hand-over has to wait, and
  never a record fetched before the last seek (counted by the seek above, noted per batch
  by ``AIOKafkaConsumerThread._fetch_records`` -> :func:`_fetch_records_counted`); and
  fetch records again that were fetched and never handed over (:class:`_HandOverOrder`,
  the safety net).  It hands the records of the topics given to :func:`hand_over_directly`
  straight to an inbox (:mod:`app.stages.inbox`) instead of faust's conductor and streams.
* ``AIOKafkaConsumerThread.verify_event_path`` -> :func:`_verify_event_path_once_positioned`:
  faust's livelock detector no longer crashes the worker on a partition without a position.
* ``Stream.__aiter__`` -> :func:`_stream_aiter_cython_loop`: always run faust's Cython
  stream loop, which does not ack the events it skips during a rebalance (faust's
  pure-Python loop acks them, and their offsets were committed unprocessed).
* ``Recovery.on_recovery_completed`` -> :func:`_on_recovery_completed_with_flow_stopped`: no
  record is handed over while recovery seeks the stream partitions, and the changelog events
  already handed over are taken, since faust clears the stream and changelog queues right
  after that seek.
* ``RocksDBOptions.as_options`` -> :func:`_rocksdb_options_sharing_memory`: every RocksDB
  store of the worker draws on one memory budget (:func:`share_rocksdb_memory`) instead of
  a block cache and memtables of its own.
* ``AIOKafkaConsumerThread._create_worker_consumer`` -> :func:`_worker_consumer_batching_fetches`:
  the worker's fetches wait a little for records to accumulate (:func:`batch_fetches`) instead
  of being answered at the first record.

Deleted: ``Consumer.ack`` -> ``_ack_unless_skipped_in_rebalance``, which refused acks while
flow control was suspended.  The Cython loop acks inline and never called it, so it guarded
only the pure-Python loop, which no longer runs; and it refused the acks of events that *were*
processed when a rebalance began, on which the revoke handler's ``wait_empty`` waits.

:func:`ack_processed` acks a processed message from outside a stream loop, and
:class:`LeanMonitor` is the per-record-cheap monitor sensor ``app.faust_app`` installs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from time import monotonic
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: The faust-streaming release every patch here was written and tested against.
FAUST_VERSION = "0.15.3"
#: Set to ``1`` to start with another faust-streaming version (logs a warning instead).
ALLOW_UNTESTED_FAUST_ENV = "EDDY_ALLOW_UNTESTED_FAUST"


def check_faust_version(installed: str | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to run with a faust-streaming version the patches were not written for.

    >>> check_faust_version(FAUST_VERSION)
    >>> check_faust_version("0.16.0", environ={ALLOW_UNTESTED_FAUST_ENV: "1"})
    """
    if installed is None:
        installed = importlib.metadata.version("faust-streaming")
    if installed == FAUST_VERSION:
        return
    env = os.environ if environ is None else environ
    message = (
        f"app.faust_fixes patches faust-streaming {FAUST_VERSION} internals, but faust-streaming "
        f"{installed} is installed: the patched code may have changed, and a wrong patch loses "
        f"records. Pin faust-streaming=={FAUST_VERSION}, or re-check every patch "
        f"(tests/unit/test_faust_fixes.py) and update FAUST_VERSION"
    )
    if env.get(ALLOW_UNTESTED_FAUST_ENV) == "1":
        logger.warning("%s; running anyway because %s=1", message, ALLOW_UNTESTED_FAUST_ENV)
        return
    raise RuntimeError(f"{message} (or set {ALLOW_UNTESTED_FAUST_ENV}=1 to run untested).")


check_faust_version()  # before touching faust: a different faust may not even import the same

import asyncio  # noqa: E402

import faust.streams  # noqa: E402
import rocksdict  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.consumer.fetcher import Fetcher, OffsetResetStrategy  # noqa: E402
from faust.sensors.monitor import Monitor  # noqa: E402
from faust.stores.rocksdb import RocksDBOptions  # noqa: E402
from faust.streams import Stream  # noqa: E402
from faust.tables.recovery import Recovery  # noqa: E402
from faust.transport.consumer import CONSUMER_FETCHING, Consumer  # noqa: E402
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread  # noqa: E402
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumerDriver  # noqa: E402
from faust.types import TP, AppT, Message  # noqa: E402
from faust.types.enums import ProcessingGuarantee  # noqa: E402
from faust.utils.functional import consecutive_numbers  # noqa: E402
from mode.utils.futures import notify  # noqa: E402

# --- originals and their fingerprints ---------------------------------------------------------

_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
_original_to_message = AIOKafkaConsumerDriver._to_message
_original_on_partitions_revoked = Consumer.on_partitions_revoked
_original_new_offset = Consumer._new_offset
_original_drain_messages = Consumer._drain_messages
_original_fetch_records = AIOKafkaConsumerThread._fetch_records
_original_stream_aiter = Stream.__aiter__
_original_ack = Consumer.ack
_original_verify_event_path = AIOKafkaConsumerThread.verify_event_path
_original_rocksdb_as_options = RocksDBOptions.as_options
_original_on_recovery_completed = Recovery.on_recovery_completed
_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
_original_get_actions_per_node = Fetcher._get_actions_per_node

_FAUST_DIR = Path(faust.__file__).parent


def fingerprint(source: str) -> str:
    """sha256 of a piece of source text (how the originals are recognised)."""
    return hashlib.sha256(source.encode()).hexdigest()


def source_of(name: str) -> str:
    """The source of a fingerprinted faust object: ``module:Qual.name`` or a path in faust's package.

    For a patched function, the source of the original (the class now holds the patch).
    """
    if name in _ORIGINALS:
        return inspect.getsource(_ORIGINALS[name])
    if ":" not in name:
        return (_FAUST_DIR / name).read_text()
    module_name, qualname = name.split(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return inspect.getsource(obj)


_ORIGINALS: dict[str, Any] = {
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek_to_committed": _original_seek_to_committed,
    "faust.transport.drivers.aiokafka:Consumer._to_message": _original_to_message,
    "faust.transport.consumer:Consumer.on_partitions_revoked": _original_on_partitions_revoked,
    "faust.transport.consumer:Consumer._new_offset": _original_new_offset,
    "faust.transport.consumer:Consumer._drain_messages": _original_drain_messages,
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records": _original_fetch_records,
    "faust.streams:Stream.__aiter__": _original_stream_aiter,
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.verify_event_path": _original_verify_event_path,
    "faust.stores.rocksdb:RocksDBOptions.as_options": _original_rocksdb_as_options,
    "faust.tables.recovery:Recovery.on_recovery_completed": _original_on_recovery_completed,
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": (
        _original_create_worker_consumer
    ),
    "aiokafka.consumer.fetcher:Fetcher._get_actions_per_node": _original_get_actions_per_node,
}

#: faust functions replaced here -> sha256 of their source in faust-streaming FAUST_VERSION.
PATCHED: dict[str, str] = {
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek_to_committed": (
        "775ab0adc4b052abee204d5347a556412b1f77ed4de971adde69a55a1cb6f908"
    ),
    "faust.transport.drivers.aiokafka:Consumer._to_message": (
        "7c24f6511b2fcef7cbfe73526e78de033bfe0df211f1fd30509d699c9deb6ce4"
    ),
    "faust.transport.consumer:Consumer.on_partitions_revoked": (
        "d04b7ae72c6fc206924a2879d6c90dd383f3e8ba6f4b10a19ca99a921eb8f4db"
    ),
    "faust.transport.consumer:Consumer._new_offset": (
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0"
    ),
    "faust.transport.consumer:Consumer._drain_messages": (
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"
    ),
    "faust.streams:Stream.__aiter__": "e815c0e831f1d2ccf43b083b725f87403dc38142dedda59d12b249ab2e044c50",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.verify_event_path": (
        "b983e7735f647cb34650530fb0f1bc709e8cb67d54c483b939b14b49b8d931e0"
    ),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records": (
        "39a2c6c79fc1455a199629912b533458a720c64983bc957420a42feef6593baa"
    ),
    "faust.stores.rocksdb:RocksDBOptions.as_options": (
        "d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660"
    ),
    "faust.tables.recovery:Recovery.on_recovery_completed": (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    ),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": (
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7"
    ),
    "aiokafka.consumer.fetcher:Fetcher._get_actions_per_node": (
        "1dab2cf937d165d0eeacc8da8ed2b0ebd80b321bb6583757e01cdc1013d31635"
    ),
}

#: faust code whose behaviour the patches rely on without replacing it -> sha256 of its source.
RELIED_ON: dict[str, str] = {
    # ack_processed applies these semantics; the Cython loop inlines them.
    "faust.transport.consumer:Consumer.ack": (
        "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f"
    ),
    # The Cython stream loop: skips stale / flow-stopped events without acking them.
    "faust.streams:Stream._c_aiter": "fa44582a5882e9df5240199eabc475668bcd3c13b1816c45805dc746145b80bf",
    "_cython/streams.pyx": "0041622f4a251188f53d73e6d51d18d16f0f427512df1e96c043cfdeea4c3250",
    # The hand-over the drain patch awaits, and how a revoke unblocks or abandons it.
    "transport/_cython/conductor.pyx": "dde1f974267881cf8c5f7e4fd2b114a2c6d754633a2aa9a2a2fc92f93e143dba",
    "faust.transport.conductor:Conductor._compile_message_handler": (
        "9fbc0538097aa4eca6113b99df8d17605ae72a6b5030482f041a183f4cc34df1"
    ),
    "faust.app.base:App._on_partitions_revoked": (
        "d5c895bbe57dc73ae4d7f762f6fdc9fdd3abd02f9e05863ccfd8034082e5682f"
    ),
    # Recovery takes the changelog queue's events before the resume clears it (clear_on_resume).
    "faust.tables.manager:TableManager.changelog_queue.fget": (
        "9c7f4cac57ef170647f12c135f4419000d27be45c536bf07ec013d8d3d028e2e"
    ),
    "faust.tables.recovery:Recovery._slurp_changelogs.fun": (
        "7825c7e50f766d5ab0fd246b63420ea0dfcd732d005f1057cc9da656ff5d3967"
    ),
    # Resuming flow control clears the stream queues: why recovery stops the flow before its seek.
    "mode.utils.queues:FlowControlEvent.resume": (
        "4dcdc1253fd0dcb40de18a3702503c01d21e9da7e5e55b122fb92615f27648d9"
    ),
    # An inbox (hand_over_directly) is cleared with the stream queues, and its taker tracks what it
    # takes as faust's stream loop does.
    "mode.utils.queues:FlowControlEvent.clear": (
        "dda5e40d80288a8f4244cffdf3e7a648773579a72e64b40182bbbc2424752524"
    ),
    "mode.utils.queues:FlowControlEvent.manage_queue": (
        "a9a01679eaacf42cbecc5a8be55a3bf85af83fa95a251469bd56de24ef8d3018"
    ),
    "faust.transport.consumer:Consumer.track_message": (
        "217d7f1399a4cd8e15a43a64ecf50413b9b738058e5433e057f0dc3927a3fc03"
    ),
    "mode.utils.queues:ThrowableQueue.clear": (
        "d18f09e451acf62e1cfa4e957497403d287463595b2dff70ea1c7a1271a95036"
    ),
    "mode.utils.queues:FlowControlQueue.put": (
        "0ba84eb5e357a17e7eb5554b631d72d20dcf4abcec3fa65fddd6237a777c006b"
    ),
    "mode.services:Service.wait_first": "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e",
    # The seek in one step does what these do (aiokafka is pinned with faust-streaming).
    "faust.transport.consumer:Consumer.perform_seek": (
        "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6"
    ),
    "aiokafka.consumer.consumer:AIOKafkaConsumer.seek_to_committed": (
        "f6cd85c8b70a4ccf7e862de24f6c5d985038eed3e140990f000aa4b52eda8d72"
    ),
    "aiokafka.consumer.consumer:AIOKafkaConsumer.seek_to_beginning": (
        "231229deedd7d1ef48b4fdc570c3679a142779a358c7e7bd5cb1b3384bae2c9b"
    ),
    "aiokafka.consumer.fetcher:Fetcher.seek_to": (
        "f0ba6aba6c22ef83e0d58690ef771d04777032ec48cbfa68325c67bf0ef508f4"
    ),
    "aiokafka.consumer.fetcher:Fetcher.request_offset_reset": (
        "e5bd8ba8838613c9942f42cd72946611c7d3ede1fbc3343bcce5db98229f5378"
    ),
    # The drain loop notes gaps as this does (without its sleep): _add_gap_now.
    "faust.transport.consumer:Consumer._add_gap": (
        "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1"
    ),
    # A fetch request keeps each partition's (partition, offset, max bytes) as given and sends them
    # as they are when built: _actions_per_node_fetching_more.
    "aiokafka.protocol.fetch:FetchRequest.build": (
        "952ef0f41192efc3b4b72468fa86ef1ff5c7a148e7ed775cadeb1afdf199b040"
    ),
    "aiokafka.protocol.fetch:FetchRequest.__init__": (
        "f31b6b74cc94dae4a4b6a83f202518b80ae24ef00393885d92f85a56451fbf3f"
    ),
    # The fetch settings the worker consumer is given here reach its fetcher when it starts.
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start": (
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45"
    ),
}


# --- the version guard's companion: faust must still be what the patches expect --------------


def changed_sources() -> dict[str, str]:
    """Fingerprinted faust code whose source is no longer what the patches were written against."""
    changed = {}
    for name, expected in {**PATCHED, **RELIED_ON}.items():
        try:
            actual = fingerprint(source_of(name))
        except (AttributeError, ImportError, OSError, TypeError) as exc:
            changed[name] = f"unreadable: {exc!r}"
            continue
        if actual != expected:
            changed[name] = actual
    return changed


# --- no commit past an unprocessed record -------------------------------------------------------


async def _seek_to_committed_or_beginning(self: AIOKafkaConsumerThread) -> Mapping[TP, int]:
    """Seek to the committed offsets, and to the beginning where nothing is committed yet,
    every partition in one step of the consumer thread, and count the seek.

    After a rebalance faust discards what it fetched while its streams were
    paused and "seeks back" with aiokafka's ``seek_to_committed``, which does not
    move a partition that has no committed offset (or offset 0).  The fetch
    position then stays *after* the discarded records: records produced while a
    new application's first workers start and rebalance were lost (seen here: the
    first 125 records of two partitions of a fresh app).  With
    ``auto_offset_reset=earliest`` no committed offset means "from the start".

    aiokafka's seek awaits the broker between partitions, and faust resumes fetching
    before it seeks; so a batch handed to faust meanwhile can hold records from the
    old position.  Here the committed offsets are read first and then every position
    is moved in one step, counted in that same step (:func:`_seeks`): a batch fetched
    before the count changed is stale (:func:`_drain_messages_awaiting_directly`
    hands none of it over), a batch fetched after it is from the new positions.
    """
    return await self.call_thread(_seek_in_one_step, self, self._ensure_consumer())


async def _seek_in_one_step(
    thread: AIOKafkaConsumerThread, consumer: AIOKafkaConsumer
) -> dict[TopicPartition, int | None]:
    """Runs in the consumer thread: see :func:`_seek_to_committed_or_beginning`."""
    partitions = consumer.assignment()
    committed = {tp: await consumer.committed(tp) for tp in partitions}
    from_start = thread.app.conf.consumer_auto_offset_reset == "earliest"
    assigned = consumer.assignment()  # a rebalance may have taken some away meanwhile
    fresh = []
    # One step from here to the count: no fetch result is handed out in between.
    for tp, offset in committed.items():
        if tp not in assigned:
            continue
        if offset and offset > 0:
            consumer._fetcher.seek_to(tp, offset)  # what aiokafka's seek_to_committed does
        elif from_start and not thread.consumer._is_changelog_tp(tp):  # changelogs: faust seeks them
            fresh.append(tp)
    reset = consumer._fetcher.request_offset_reset(fresh, OffsetResetStrategy.EARLIEST) if fresh else None
    # faust's perform_seek sets the read offsets once this returns; a batch fetched before then
    # would meet the old ones (its records dropped as read), so they are set in this step too.
    read_offset = thread.consumer._read_offset
    for tp, offset in committed.items():
        if tp in assigned and not thread.consumer._is_changelog_tp(tp):
            read_offset[tp] = offset if offset is not None and offset >= 0 else None
    thread.consumer._eddy_seeks = _seeks(thread.consumer) + 1  # type: ignore[attr-defined]
    if reset is not None:  # as aiokafka's seek_to_beginning waits for the new positions
        await asyncio.wait(
            [reset, consumer._subscription.subscription.assignment.unassign_future],
            timeout=consumer._request_timeout_ms / 1000,
            return_when=asyncio.FIRST_COMPLETED,
        )
    return committed


def _seeks(consumer: Consumer) -> int:
    """How many times the consumer thread moved the stream partitions' positions."""
    return getattr(consumer, "_eddy_seeks", 0)


def _batch_seeks(consumer: Consumer) -> int:
    """:func:`_seeks` when the consumer thread handed out the batch being handed over."""
    return getattr(consumer, "_eddy_batch_seeks", 0)


async def _fetch_records_counted(
    self: AIOKafkaConsumerThread,
    consumer: AIOKafkaConsumer,
    active_partitions: set[TP],
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    """faust's ``_fetch_records`` (consumer thread), noting :func:`_seeks` as the batch leaves.

    A fetch that outlived a rebalance (its caller was cancelled; the consumer thread runs it
    to the end anyway) may have taken records of the *new* assignment that nobody will
    receive: their partitions are moved back to its first records, and nothing is noted.
    """
    generation = self.app.consumer_generation_id
    records = await _original_fetch_records(
        self, consumer, active_partitions, timeout=timeout, max_records=max_records
    )
    if self.app.consumer_generation_id != generation:  # set by the rebalance listener, in this thread
        assigned = consumer.assignment()
        for tp, batch in records.items():
            if batch and tp in assigned:
                consumer._fetcher.seek_to(tp, batch[0].offset)
        return {}
    self.consumer._eddy_batch_seeks = _seeks(self.consumer)  # type: ignore[attr-defined]
    return records


def _unacked_fetched(consumer: Consumer) -> dict[TP, set[int]]:
    """Offsets fetched for streams and not known to be acked, per partition (kept on the consumer).

    Offsets are added as records are fetched and removed by :func:`ack_processed`, when
    the partition is revoked, and once a commit has passed them.  The Cython stream loop
    acks inline, bypassing ``Consumer.ack``, so most acked offsets leave the set only when
    the next commit passes them: the commit rule counts an offset in the set as a hole
    only when it lies before the first acked one.
    """
    try:
        return consumer._eddy_unacked_fetched  # type: ignore[attr-defined]
    except AttributeError:
        consumer._eddy_unacked_fetched = {}  # type: ignore[attr-defined]
        return consumer._eddy_unacked_fetched  # type: ignore[attr-defined]


def _to_message_noting_fetched(self: AIOKafkaConsumerDriver, tp: TP, record: Any) -> Message:
    # Changelogs (read by recovery) and topics without acks are never acked: not tracked.
    if not self._is_changelog_tp(tp) and self.app.topics.acks_enabled_for(tp.topic):
        _unacked_fetched(self).setdefault(tp, set()).add(record.offset)
    return _original_to_message(self, tp, record)


async def _on_partitions_revoked_committing_first(self: Consumer, revoked: set[TP]) -> None:
    """faust's ``Consumer.on_partitions_revoked``, after committing what was acked so far.

    faust drops the revoked partitions' acked offsets (and committed offsets) *before*
    the app's revoke handler waits for in-flight events and commits: whatever was acked
    since the last periodic commit was never committed, and the next owner processed it
    again (seen here: the records of a stage's last flushes before a worker joined were
    decided twice).  Committing them first leaves only the acks that arrive during the
    handler, which the handler commits.  Both commits still never pass a fetched record
    that was not processed (:func:`_new_offset_after_every_fetched_offset`); only after
    the handler is what was fetched and not processed forgotten (the next owner reads it).
    """
    # Acks keep arriving while a commit is on the wire: commit until none is left, so that
    # faust's forgetting (the first thing the original does, before it awaits) loses none.
    for _ in range(5):
        await self.maybe_wait_for_commit_to_finish()
        committed = await self.force_commit(revoked)
        if not committed or not any(self._acked.get(tp) for tp in revoked):
            break
    await _original_on_partitions_revoked(self, revoked)
    # What the handler could not commit (held back by an unprocessed record) is forgotten
    # too, or a later commit of the partition, before the seek that makes its committed
    # offset known again, would start the run of acks there and pass the hole (seen here:
    # a worker stopped in its next recovery committed 599 over unprocessed 449..486).
    forget_partitions(self, revoked)


def forget_partitions(consumer: Consumer, partitions: set[TP]) -> None:
    """Drop every ack, gap, read and committed offset and fetched offset of ``partitions``:
    they are known again only from the next seek to the committed offsets."""
    unacked = _unacked_fetched(consumer)
    for tp in partitions:
        for per_partition in (
            consumer._acked,
            consumer._acked_index,
            consumer._gap,
            consumer._read_offset,
            consumer._committed_offset,
            unacked,
        ):
            per_partition.pop(tp, None)


def _new_offset_after_every_fetched_offset(self: Consumer, tp: TP) -> int | None:
    """The offset to commit for ``tp``: never past a fetched record that was not acked.

    faust-streaming commits the first run of consecutive acked offsets.  When the
    partition has no committed offset (a new application) it does not check where
    that run starts, and otherwise it lets the run start one past the committed
    offset: a record skipped in a rebalance at the head of the partition was
    committed over and lost (seen here: offset 0 of a fresh partition).  Here no
    commit passes a record that was fetched for a stream and not acked yet.
    Offsets faust marked absent (its gap tracking) count as acked, except fetched ones.
    Under exactly_once faust's own rule is kept unchanged.
    """
    if self.app.conf.processing_guarantee != ProcessingGuarantee.AT_LEAST_ONCE:
        return _original_new_offset(self, tp)
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap = self._gap[tp]
    unacked = _unacked_fetched(self).get(tp) or set()
    if gap:
        # A record that was fetched exists: faust may have marked it absent after a stale
        # record jumped its read offset, but it is a hole until it is processed.
        absent = [
            o
            for iv in sorted(gap.overlap(0, max_offset), key=lambda iv: iv.begin)
            for o in range(iv.begin, iv.end)
            if o not in unacked
        ]
        if absent:
            acked.extend(absent)
            gap.chop(0, max(absent[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed and acked[0] - committed > 1:
        return None  # faust's own rule: the committed offset itself may be a control record
    if unacked:
        if committed:  # below the committed offset, someone processed them
            unacked.difference_update([offset for offset in unacked if offset < committed])
        if unacked and min(unacked) < acked[0]:
            # A record fetched before the first acked one is still unprocessed: hold the commit
            # back (records of one partition are processed in order, so it was skipped; the
            # drain loop fetches it again: _HandOverOrder).
            return None
    run = next(consecutive_numbers(acked))
    acked[: len(run)] = []
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


#: Seconds a fetched record may stay neither handed over nor fetched again before a seek back.
SKIPPED_PATIENCE = 10.0
_NEVER_HANDED_OVER = "was fetched and never handed over"


class _HandOverOrder:
    """The drain loop's safety net: every fetched record of a partition is handed over, in order.

    Since the last seek, each stream partition's records must be handed over one after the
    other from its committed offset (``expected``).  Two things mean a record was skipped by
    a path the fixes above missed, and is never delivered again by itself (the commit rule
    only holds the partition's commits back behind it):

    * a record is about to be handed over past records that were *fetched* and never handed
      over (offsets never fetched, such as transaction markers, are a legitimate gap);
    * a fetched record stays neither handed over nor fetched again for ``SKIPPED_PATIENCE``
      seconds while flow is active (checked between batches, when every fetched record has
      either been handed over or skipped; the tail of a partition has no later record);
    * the partition's commit waits ``SKIPPED_PATIENCE`` seconds for a record while records
      after it were processed (:func:`_commit_waits_for`): a record that was handed over and
      then lost before its stream took it (a partition's records are processed and acked in
      order, so a later ack means it will never come).  If the commit still waits for the same
      record after it was fetched again, it is logged as an error once and left (faust itself
      never commits past a transaction marker at the committed offset).

    Either way the partition hands over nothing more, and faust's ``perform_seek`` moves every
    stream partition back to its committed offset (one counted step:
    :func:`_seek_to_committed_or_beginning`), so the records are fetched again, as after a
    rebalance (at worst repeats, which the pipelines answer identically); a warning says what
    was skipped.  Records handed over and not processed yet (a stage waiting for the broker)
    are the agent's, not skipped: no seek for them.
    """

    __slots__ = (
        "blocked",
        "consumer",
        "expected",
        "fetched_again_for",
        "held_since",
        "left_waiting",
        "seeks",
        "stalled_since",
    )

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.seeks = -1
        self.expected: dict[TP, int] = {}
        self.blocked: set[TP] = set()
        self.stalled_since: dict[TP, tuple[int, float]] = {}
        self.held_since: dict[TP, tuple[int, float]] = {}
        # The record each partition was last fetched again for because its commit waited for it,
        # and the one it was left waiting for after that (reported once).
        self.fetched_again_for: dict[TP, int] = {}
        self.left_waiting: dict[TP, int] = {}

    def _after_a_seek(self) -> None:
        seeks = _seeks(self.consumer)
        if seeks != self.seeks:
            self.seeks = seeks
            # The seek set each stream partition's read offset to its committed offset: the next record.
            is_changelog = self.consumer._is_changelog_tp
            self.expected = {
                tp: offset
                for tp, offset in self.consumer._read_offset.items()
                if offset is not None and not is_changelog(tp)
            }
            self.blocked.clear()
            self.stalled_since.clear()
            self.held_since.clear()

    def may_hand_over(self, tp: TP, offset: int) -> bool:
        """Whether the record at ``offset`` is the next of ``tp`` (notes it handed over if so)."""
        self._after_a_seek()
        if tp in self.blocked:
            return False  # a seek back is on its way
        expected = self.expected.get(tp)
        if expected is not None and offset > expected:
            fetched = _unacked_fetched(self.consumer).get(tp, ())
            skipped = min((o for o in fetched if expected <= o < offset), default=None)
            if skipped is not None:
                self._fetch_again(
                    tp, skipped, _NEVER_HANDED_OVER, f"@{offset} was about to be handed over before it"
                )
                return False
        self.expected[tp] = offset + 1
        return True

    def check_stalled(self) -> None:
        """Between batches: fetch again a partition whose next fetched record stays skipped."""
        consumer = self.consumer
        if not consumer.flow_active or consumer.app.rebalancing:
            self.stalled_since.clear()  # a rebalance seeks anyway; patience starts again after it
            self.held_since.clear()
            return
        self._after_a_seek()
        now = monotonic()
        fetched = _unacked_fetched(consumer)
        for tp, expected in self.expected.items():
            if tp in self.blocked:
                continue
            pending = min((o for o in fetched.get(tp, ()) if o >= expected), default=None)
            if _waited_too_long(self.stalled_since, tp, pending, now):
                self._fetch_again(
                    tp, pending, _NEVER_HANDED_OVER, f"nothing was handed over for {SKIPPED_PATIENCE:.0f} s"
                )
                continue
            waited_for = _commit_waits_for(consumer, tp)
            if not _waited_too_long(self.held_since, tp, waited_for, now):
                continue
            if self.fetched_again_for.get(tp) != waited_for:
                self.fetched_again_for[tp] = waited_for
                why = f"the commit waited {SKIPPED_PATIENCE:.0f} s for it while later records were processed"
                self._fetch_again(tp, waited_for, "was never processed", why)
            elif self.left_waiting.get(tp) != waited_for:
                self.left_waiting[tp] = waited_for
                logger.error(
                    "%s[%d]: the commit still waits for @%s after it was fetched again; it stays there",
                    tp.topic, tp.partition, waited_for,
                )  # fmt: skip

    def _fetch_again(self, tp: TP, skipped: int, what: str, why: str) -> None:
        consumer = self.consumer
        logger.warning(
            "%s[%d]@%d %s (%s; committed offset %s): seeking back to the committed offsets to fetch it again",
            tp.topic, tp.partition, skipped, what, why, consumer._committed_offset.get(tp),
        )  # fmt: skip
        self.blocked.add(tp)
        self.stalled_since.pop(tp, None)
        self.held_since.pop(tp, None)
        task = asyncio.ensure_future(consumer.perform_seek())
        task.add_done_callback(_log_failed_seek)


def _waited_too_long(since: dict[TP, tuple[int, float]], tp: TP, waiting_for: int | None, now: float) -> bool:
    """Whether ``tp`` has waited for the same record ``waiting_for`` (``None``: none) for
    ``SKIPPED_PATIENCE`` seconds, noting in ``since`` when the wait for it began."""
    seen = since.get(tp)
    if waiting_for is None:
        since.pop(tp, None)
        return False
    if seen is None or seen[0] != waiting_for:
        since[tp] = (waiting_for, now)
        return False
    return now - seen[1] >= SKIPPED_PATIENCE


def _commit_waits_for(consumer: Consumer, tp: TP) -> int | None:
    """The offset ``tp``'s commit waits for although a record after it was processed (``None``:
    the commit can move, or no record after a hole is processed yet).

    The commit rule (:func:`_new_offset_after_every_fetched_offset`) waits for a fetched record
    that is not acked, and faust's for an offset more than one past the committed one; offsets
    faust found absent (its gaps) do not count.
    """
    acked = consumer._acked.get(tp)
    if not acked:
        return None
    committed = consumer._committed_offset.get(tp)
    floor = committed or 0
    first_acked = min((o for o in acked if o >= floor), default=None)  # below: a repeat, committed
    if first_acked is None:
        return None
    fetched = _unacked_fetched(consumer).get(tp, ())
    unprocessed = min((o for o in fetched if floor <= o < first_acked), default=None)
    if unprocessed is not None:
        return unprocessed
    if committed is None or first_acked - committed <= 1:
        return None
    gap = consumer._gap.get(tp)
    absent = 0
    if gap:
        for iv in gap.overlap(committed + 1, first_acked):
            absent += min(iv.end, first_acked) - max(iv.begin, committed + 1)
    return committed if absent < first_acked - committed - 1 else None


def _log_failed_seek(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("seeking back to a skipped record failed: %r", task.exception())


def ack_processed(consumer: Consumer, message: Message) -> None:
    """Mark ``message`` processed, so that its offset is committed with the ones before it.

    For a message taken from a stream without acking it (``stream.noack()``) and processed
    outside the stream loop, e.g. acked once the batch it belongs to is durable.  This is
    faust's own ``Consumer.ack`` -- the message itself is acked, whatever references other
    streams still hold -- and it works while a rebalance has suspended flow control: the
    message really was processed, and the revoke handler's ``consumer.wait_empty()`` waits
    for exactly these acks and commits them before the partition moves.  It also takes the
    offset out of the fetched-but-unacked offsets of the commit rule
    (:func:`_new_offset_after_every_fetched_offset`).
    """
    unacked = _unacked_fetched(consumer).get(message.tp)
    if message.generation_id != consumer.app.consumer_generation_id:
        # Fetched before the partitions last moved: its ack would land among the offsets of
        # the new assignment, whose committed offset is not known yet (a commit then passes
        # unprocessed records).  The revoke handler committed what could be; this record is
        # read again from the committed offset.  It is done with all the same.
        message.acked = True
        consumer._unacked_messages.discard(message)
        notify(consumer._waiting_for_ack)
        return
    if unacked is not None:
        unacked.discard(message.offset)
    _original_ack(consumer, message)


_POWERS_OF_TEN = frozenset(10**k for k in range(12))


def _add_gap_now(consumer: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
    """faust's ``Consumer._add_gap`` without its ``sleep(0)``: nothing can run between the
    check that a record is current and its gap being noted."""
    committed = consumer._committed_offset[tp]
    if committed is not None:
        offset_from = max(offset_from, committed + 1)
    if offset_from <= offset_to:
        gap = consumer._gap[tp]
        gap.addi(offset_from, offset_to + 1)  # faust's bounds, kept as they are
        gap.merge_overlaps()


# --- hand records to the streams without a task per record --------------------------------------


class _Resumed(Coroutine):
    """The rest of coroutine ``coro``, which already ran up to yielding ``yielded``.

    Run as a task (or awaited), it first hands ``yielded`` (the future ``coro`` waits for)
    to the event loop, as if it had run ``coro`` from the start, then drives ``coro``.  A
    cancellation, even before the task's first step, is thrown into ``coro`` where it waits.
    """

    __slots__ = ("_coro", "_yielded")

    _NOT_YET = object()

    def __init__(self, coro: Coroutine, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def send(self, value: Any) -> Any:
        yielded = self._yielded
        if yielded is not self._NOT_YET:
            self._yielded = self._NOT_YET
            return yielded
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._yielded = self._NOT_YET
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __await__(self) -> _Resumed:
        return self


async def _drain_messages_awaiting_directly(self: Consumer, fetcher: Any) -> None:
    """faust's ``Consumer._drain_messages``, without a task per record.

    faust hands every record to the streams with ``await self.wait_first(callback(message),
    self.suspend_flow.wait())``: four tasks created and three cancelled per record, a large
    part of a worker's per-record cost.  Here, while flow is not suspended, the hand-over
    coroutine is started in place, and when it completes without waiting for anything --
    the usual case: flow control open, producer buffer below its limit, stream queues not
    full -- no task is created at all.  Only when it would wait does it continue as a task,
    under faust's own ``wait_first`` against ``suspend_flow`` as before.

    Why this is safe: the hand-over (``Conductor.on_message`` -> the partition's
    ``ConductorHandler``) can wait at exactly these points -- the conductor's subscription
    lock, ``app.flow_control.acquire()`` while a rebalance has suspended flow, the
    producer buffer's ``wait_until_ebb``, and ``chan.put`` on a full stream queue.  A
    rebalance sets ``suspend_flow`` (``consumer.stop_flow()``), suspends flow control,
    clears the stream queues (cancelling blocked puts) and waits for in-flight events.
    A hand-over that waits is run exactly as faust runs it: a task raced against
    ``suspend_flow`` and cancelled when a rebalance begins, so the drain loop never sits
    in a blocked hand-over across a rebalance.  A hand-over that does not wait runs to
    completion without yielding to the event loop, so no rebalance step can run during
    it: it is the same as faust's task finishing before ``suspend_flow`` is set.  While
    ``suspend_flow`` is set, or for a record fetched for an earlier assignment, nothing is
    handed over and the read offset stays (faust moved it, and after the seek back to the
    committed offset the records below it were dropped as read).  (As before, a put into a full
    queue that the conductor started in a task of its own can outlive a revoke and land
    after the rebalance; the stream then skips the event as being of an older generation
    and does not ack it.)  Everything else the loop does (read offsets, gaps,
    ``commit_every``, yielding to the event loop every 100 records) is faust's code as it
    was.  The one difference is scheduling: faust's per-record ``wait_first`` let the agents
    run after every record; now they run at those yields every 100 records (about a
    millisecond of hand-overs) or whenever a hand-over waits.

    A record of a topic given to :func:`hand_over_directly` passes the same checks and is
    appended to its inbox instead (its read offset moves as after a hand-over); a full inbox
    is waited for like a blocked hand-over, raced against ``suspend_flow``.
    """
    app = self.app
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    flow_suspended = suspend_flow.is_set
    # The seek moves stream partitions only; changelog records are never stale by it.
    is_changelog = self._is_changelog_tp
    wait_first = self.wait_first
    inbox_of = _inboxes(app).get

    yield_every = 100
    num_since_yield = 0
    dropped_as_read = stale_skipped = 0
    sleep = asyncio.sleep
    # The safety net (under exactly_once faust's own rules are kept).
    order = (
        _HandOverOrder(self) if app.conf.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE else None
    )
    next_check = monotonic() + 1.0

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if order is not None and monotonic() >= next_check:
                next_check = monotonic() + 1.0
                order.check_stalled()
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()

                    # No await from this check to the hand-over (or the wait for it).
                    stale_by_seek = _seeks(self) != _batch_seeks(self) and not is_changelog(tp)
                    if stale_by_seek:
                        stale_skipped += 1
                        if stale_skipped in _POWERS_OF_TEN:
                            logger.info(
                                "%d fetched records skipped as fetched before a seek (latest %s[%d]@%d)",
                                stale_skipped, tp.topic, tp.partition, message.offset,
                            )  # fmt: skip
                    if (
                        message.generation_id != app.consumer_generation_id
                        or flow_suspended()
                        or stale_by_seek
                    ):
                        # Fetched for an earlier assignment, from before a seek, or arriving
                        # while a rebalance is under way: the stream would skip it or it is
                        # stale, and it is fetched again from the committed offset.  It must
                        # not move the read offset or mark a gap, or the re-fetched records
                        # below it are dropped as already read (seen here: decisions missing
                        # after a rebalance; see _seek_to_committed_or_beginning).
                        continue
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        if order is not None and not is_changelog(tp) and not order.may_hand_over(tp, offset):
                            continue  # records before it were skipped: all are fetched again
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            _add_gap_now(self, tp, r_offset + 1, offset)
                        inbox = inbox_of(tp.topic)
                        if inbox is not None:
                            set_read_offset(tp, offset)
                            if not inbox.put(message):  # full: the next record waits for room
                                await wait_first(inbox.room(), suspend_flow.wait())
                            continue
                        delivery = callback(message)
                        try:
                            waits_for = delivery.send(None)
                        except StopIteration:
                            pass  # handed over without waiting: no task
                        else:
                            await wait_first(_Resumed(delivery, waits_for), suspend_flow.wait())
                            if flow_suspended() or (
                                _seeks(self) != _batch_seeks(self) and not is_changelog(tp)
                            ):
                                continue  # interrupted by a rebalance: fetched again after it
                        set_read_offset(tp, offset)
                    else:
                        dropped_as_read += 1
                        if dropped_as_read in _POWERS_OF_TEN:
                            logger.warning(
                                "%d fetched records dropped as already read (latest %s[%d]@%d, "
                                "read offset %d): expected only after aiokafka re-fetches",
                                dropped_as_read,
                                tp.topic,
                                tp.partition,
                                offset,
                                r_offset,
                            )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


class _Inbox(Protocol):
    """What :func:`hand_over_directly` hands records to (:class:`app.stages.inbox.Inbox`)."""

    def put(self, message: Message) -> bool: ...

    async def room(self) -> None: ...

    def clear(self) -> None: ...


_INBOXES: weakref.WeakKeyDictionary[AppT, dict[str, _Inbox]] = weakref.WeakKeyDictionary()


def _inboxes(app: AppT) -> dict[str, _Inbox]:
    return _INBOXES.setdefault(app, {})


def hand_over_directly(app: AppT, topics: Iterable[str], inbox: _Inbox) -> None:
    """Hand the records of ``topics`` to ``inbox`` instead of faust's conductor and streams.

    The fetch loop (:func:`_drain_messages_awaiting_directly`) appends each record it would
    hand to the conductor, under exactly the same checks (current generation, flow not
    suspended, not fetched before a seek, hand-over order), and moves the read offset; when
    ``inbox.put`` reports it full, the loop waits for ``inbox.room()`` raced against
    ``suspend_flow`` as it waits for a blocked hand-over.  ``app.flow_control`` clears the
    inbox whenever it clears the stream queues.  The taker tracks each record it processes
    (``consumer.track_message``) and skips, as faust's Cython stream loop does, a record of
    an older generation or taken while flow control is suspended
    (:meth:`app.stages.inbox.Inbox.records`).
    """
    inboxes = _inboxes(app)
    for topic in topics:
        if topic in inboxes and inboxes[topic] is not inbox:
            raise ValueError(f"the records of {topic} are handed over to another inbox already")
        inboxes[topic] = inbox
    app.flow_control.manage_queue(inbox)


# --- nothing handed over while recovery seeks -------------------------------------------------


async def _on_recovery_completed_with_flow_stopped(self: Recovery, generation_id: int = 0) -> None:
    """faust's ``Recovery.on_recovery_completed``, with the consumer's flow stopped first.

    Recovery resumes the flow to read the changelogs and leaves it on.  Here faust then
    resumes the stream partitions, seeks them to their committed offsets, and only after
    the seek resumes flow control, which *clears every stream's queue*
    (``FlowControlEvent.resume``).  Records the drain loop fetched from the new positions and
    handed over in between were cleared unprocessed: never acked, never delivered again
    (they were handed over, so the read offset and the safety net had moved past them), and
    the partition's commit waited behind them for good.  Seen here: a second worker joined
    while transactions flowed and lost 18 records of each of its two partitions, the ones
    it fetched while its agent was still starting; the commit stayed at the first of them.

    With the flow stopped, nothing is handed over until faust resumes it after the seek and
    the clear, as on faust's path for an app without tables (``Recovery._resume_streams``).
    A batch being handed over meanwhile stops at its next record, which is fetched again
    from the committed offset.  Should the original return early (another rebalance began),
    that rebalance's recovery resumes the flow.

    The same clear empties the queue of changelog events, which standby partitions have
    been filling since recovery resumed them just before: a standby event cleared there is
    never applied, and the standby's persisted offset moves past it with the next one, a
    hole that stays when the standby is promoted.  So recovery first takes what is queued
    (:func:`_changelog_events_taken`).
    """
    self.app.consumer.stop_flow()
    await _changelog_events_taken(self.tables.changelog_queue)
    await _original_on_recovery_completed(self, generation_id)


#: Seconds recovery may take to empty the changelog queue before faust's resume clears it.
CHANGELOG_QUEUE_PATIENCE = 10.0


async def _changelog_events_taken(queue: Any, patience: float = CHANGELOG_QUEUE_PATIENCE) -> None:
    """Wait until recovery's changelog reader has taken every event in ``queue`` (none come
    while the flow is stopped); after ``patience`` seconds, warn and go on."""
    deadline = monotonic() + patience
    while not queue.empty():
        if monotonic() >= deadline:
            logger.warning(
                "%d changelog events still queued after %.0f s: resuming flow control clears them "
                "(a standby table partition misses them until it is restored again)",
                queue.qsize(), patience,
            )  # fmt: skip
            return
        await asyncio.sleep(0.005)


# --- skipped events are never acked ------------------------------------------------------------


def _stream_aiter_cython_loop(self: Stream) -> Any:
    """``Stream.__aiter__`` that always runs faust's Cython stream loop.

    A stream skips an event that was fetched in an older consumer generation, or that it
    receives while flow control is suspended for a rebalance (faust PR #223).  faust's
    pure-Python loop (``Stream._py_aiter``) *acks* the skipped event "so that lag does not
    grow": its offset is committed although it was never processed, and the record is lost
    (seen here: the first records of a partition never reached the agent when a second
    worker joined).  The Cython loop (``Stream._c_aiter`` with ``_cython/streams.pyx``)
    returns from ``_prepare_event`` before it makes the event current, so ``after()`` gets
    no event and acks nothing: the partition's next owner reads the record again from the
    committed offset (and the commit rule above never commits past it meanwhile).

    faust picks the Cython loop whenever its extension imports; this makes the choice
    explicit, and :func:`apply` refuses to start when the extension is unavailable
    (``NO_CYTHON`` set, or a faust build without it) rather than fall back to the loop
    that loses records.  The Cython loop acks processed events inline, even while flow
    control is suspended, which is what the revoke handler's ``wait_empty`` waits for.
    """
    it = self._c_aiter()
    self._active_agens.add(it)
    return it


# --- per-record-cheap monitor ---------------------------------------------------------------


class LeanMonitor(Monitor):
    """faust's Monitor sensor without its per-record bookkeeping.

    faust installs one Monitor per app and calls it for every message in and out, every
    event in and out of every stream, every produced record and every table get and set.
    faust's own Monitor keeps per-topic, per-stream and per-task counters (looked up
    through weak-key dictionaries), a timestamp and a state dict per event, and latency
    samples per produced record.  Only faust's statistics pages read them (``/`` with
    ``web_stats_enabled`` or ``debug``, ``/performance/`` with ``web_metrics_enabled``);
    eddy serves neither.

    Kept: ``stream_inbound_time`` (faust's livelock detector reads it to tell a stalled
    stream), plain totals (``messages_received_total``, ``events_total``,
    ``messages_sent`` and the per-second rates the sampler derives from them), read /
    committed / end offsets per partition, commit, assignment, rebalance and web latencies.
    Not kept: counts by topic, stream and task, ``messages_active``/``events_active``,
    event runtimes, send latencies, per-table key counts, per-message timestamps.
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.messages_received_total += 1
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.events_total += 1
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        self.messages_sent += 1
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


# --- the livelock detector must not crash on a partition that is being positioned ---------------


def _verify_event_path_once_positioned(self: AIOKafkaConsumerThread, now: float, tp: TP) -> Any:
    """faust's stalled-partition check, skipping a partition that has no fetch position yet.

    The check reads aiokafka's ``position``, which *asserts* that there is one; a partition
    just sought to the beginning (:func:`_seek_to_committed_or_beginning`) or reset after a
    rebalance has none until its offset is looked up.  faust runs the check every few seconds
    from a task whose exception crashes the worker (seen here: a worker stopped right after a
    rebalance).  Such a partition is checked again on the next round.
    """
    try:
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        state = subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
    except (AttributeError, KeyError):
        return None  # not (or no longer) assigned: nothing to check
    if state is None or not state.has_valid_position:
        return None
    return _original_verify_event_path(self, now, tp)


# --- installation ----------------------------------------------------------------------------

# --- one memory budget for every RocksDB store ------------------------------------------------


class SharedRocksDBMemory:
    """One block cache for every RocksDB store of this process, charged with their memtables.

    faust opens a RocksDB per table partition (active and standby), each with a block cache
    and up to ``max_write_buffer_number`` memtables of its own, so a worker's RocksDB memory
    grows with tables x partitions: 6 tables x 8 partitions x (16 MB cache + 2 x 8 MB
    memtables) is 1.5 GB.  Here the stores share one LRU cache of ``budget`` bytes; a
    write-buffer manager charges their memtables to it (flushing the largest when they pass
    half of it), and index and filter blocks live in it too, so RocksDB's memory stays near
    ``budget`` however many stores the worker opens.

    >>> memory = SharedRocksDBMemory(4 * 2**20)
    >>> memory.report()["budget_mb"], memory.report()["used_mb"] >= 0
    (4.0, True)
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.cache = rocksdict.Cache(budget)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget // 2, False, self.cache
        )

    def report(self) -> dict[str, float]:
        return {
            "budget_mb": round(self.budget / 2**20, 1),
            "used_mb": round(self.cache.get_usage() / 2**20, 1),
            "memtables_mb": round(self.write_buffers.get_usage() / 2**20, 1),
        }


DEFAULT_ROCKSDB_MEMORY = 256 * 2**20
_rocksdb_memory: SharedRocksDBMemory | None = None


def share_rocksdb_memory(budget: int = DEFAULT_ROCKSDB_MEMORY) -> SharedRocksDBMemory:
    """The budget every RocksDB store opened from now on draws on (set once, before any opens)."""
    global _rocksdb_memory
    if _rocksdb_memory is None or _rocksdb_memory.budget != budget:
        _rocksdb_memory = SharedRocksDBMemory(budget)
    return _rocksdb_memory


def shared_rocksdb_memory() -> SharedRocksDBMemory:
    """The budget of :func:`share_rocksdb_memory` (the default one if none was set)."""
    return _rocksdb_memory if _rocksdb_memory is not None else share_rocksdb_memory()


def _rocksdb_options_sharing_memory(self: RocksDBOptions) -> Any:
    """faust's rocksdict options with the shared cache and write-buffer manager
    (:class:`SharedRocksDBMemory`) in place of a cache of this store's own."""
    if not self.use_rocksdict:
        return _original_rocksdb_as_options(self)
    memory = shared_rocksdb_memory()
    db_options = rocksdict.Options(raw_mode=True)
    db_options.create_if_missing(True)
    db_options.set_max_open_files(self.max_open_files)
    db_options.set_write_buffer_size(self.write_buffer_size)
    db_options.set_target_file_size_base(self.target_file_size_base)
    db_options.set_max_write_buffer_number(self.max_write_buffer_number)
    db_options.set_write_buffer_manager(memory.write_buffers)
    table_factory_options = rocksdict.BlockBasedOptions()
    table_factory_options.set_bloom_filter(self.bloom_filter_size, block_based=True)
    table_factory_options.set_block_cache(memory.cache)
    table_factory_options.set_cache_index_and_filter_blocks(True)
    table_factory_options.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    db_options.set_block_based_table_factory(table_factory_options)
    return db_options


# --- fetches that wait for records to accumulate -------------------------------------------------

#: Bytes a fetch of the worker's consumer waits for (at most :func:`batch_fetches`' wait).
FETCH_MIN_BYTES = 1 << 20
_fetch_max_wait_ms = 0


def batch_fetches(max_wait_ms: int) -> None:
    """Let the worker's fetches wait up to ``max_wait_ms`` for :data:`FETCH_MIN_BYTES` of records
    (``0``: faust's fetches, answered as soon as one record is there).  Set before the app starts."""
    global _fetch_max_wait_ms
    if max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
    _fetch_max_wait_ms = max_wait_ms


def _worker_consumer_batching_fetches(self: AIOKafkaConsumerThread, transport: Any) -> AIOKafkaConsumer:
    """faust's worker consumer, with fetches that wait for records to accumulate (:func:`batch_fetches`).

    faust leaves aiokafka's ``fetch_min_bytes`` at 1: the broker answers a fetch as soon as
    one record is there on any of the partitions a worker reads (every pipeline's inputs and
    internal topics, about 60).  Records arriving one by one at 1,000 a second are then fetched
    one or two at a time, and faust and aiokafka do their per-fetch work over every partition
    for each: a worker fed 1,000 transactions a second fell behind (p99 3.7 s), and kept up with
    fetches waiting 50 ms (p99 0.3 s), at the price of that wait when traffic is light.
    """
    consumer = _original_create_worker_consumer(self, transport)
    if _fetch_max_wait_ms > 0:
        # Read by AIOKafkaConsumer.start, which hands them to its fetcher.
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
    return consumer


# --- larger fetches for the topics that need them -----------------------------------------------

#: topic -> the bytes a fetch takes from each of its partitions, when more than the consumer's size.
_larger_fetches: dict[str, int] = {}


def fetch_more_from(topic: str, max_bytes: int) -> None:
    """Let every consumer of this process fetch up to ``max_bytes`` from each partition of ``topic``
    (at least its own ``max_partition_fetch_bytes``), whatever its size for other topics."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
    _larger_fetches[topic] = max_bytes


def _actions_per_node_fetching_more(self: Fetcher, assignment: Any) -> Any:
    """aiokafka's fetch requests, with :func:`fetch_more_from`'s topics given their larger size.

    aiokafka asks every partition for ``max_partition_fetch_bytes`` and fetches again only once
    every fetched record is consumed, and faust hands a fetch's records over before asking for
    more: each partition gets that many bytes per round.  A learner's one training partition,
    whose records carry several times the bytes of the events that made them, then fell ever
    further behind a worker's eight input partitions on a backlog (1,408 training messages
    after 100,000 clicks).
    """
    fetch_requests, *rest = _original_get_actions_per_node(self, assignment)
    if _larger_fetches:
        for _, request in fetch_requests:
            request._topics = [(topic, _sized(topic, parts)) for topic, parts in request._topics]
    return (fetch_requests, *rest)


def _sized(topic: str, parts: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    larger = _larger_fetches.get(topic)
    if larger is None:
        return parts
    return [(partition, offset, max(size, larger)) for partition, offset, size in parts]


_PATCHES: list[tuple[type, str, Callable]] = [
    (AIOKafkaConsumerThread, "seek_to_committed", _seek_to_committed_or_beginning),
    (AIOKafkaConsumerDriver, "_to_message", _to_message_noting_fetched),
    (Consumer, "on_partitions_revoked", _on_partitions_revoked_committing_first),
    (Consumer, "_new_offset", _new_offset_after_every_fetched_offset),
    (Consumer, "_drain_messages", _drain_messages_awaiting_directly),
    (AIOKafkaConsumerThread, "_fetch_records", _fetch_records_counted),
    (Stream, "__aiter__", _stream_aiter_cython_loop),
    (AIOKafkaConsumerThread, "verify_event_path", _verify_event_path_once_positioned),
    (RocksDBOptions, "as_options", _rocksdb_options_sharing_memory),
    (Recovery, "on_recovery_completed", _on_recovery_completed_with_flow_stopped),
    (AIOKafkaConsumerThread, "_create_worker_consumer", _worker_consumer_batching_fetches),
    (Fetcher, "_get_actions_per_node", _actions_per_node_fetching_more),
]


def require_cython_stream_loop() -> None:
    """Refuse to run without faust's Cython stream loop (see :func:`_stream_aiter_cython_loop`)."""
    if faust.streams._CStreamIterator is None:
        raise RuntimeError(
            "faust's Cython stream loop is unavailable (NO_CYTHON is set, or faust-streaming was "
            "installed without its extensions): its pure-Python loop acks the events it skips "
            "during a rebalance, and their records are lost. Unset NO_CYTHON / install the "
            f"faust-streaming {FAUST_VERSION} wheel."
        )


def apply() -> None:
    """Install the patches (idempotent)."""
    require_cython_stream_loop()
    for owner, name, patch in _PATCHES:
        if getattr(owner, name) is not patch:
            setattr(owner, name, patch)


apply()

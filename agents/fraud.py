"""Fraud detection: one decision per transaction, in one hop, from live features and online models.

Data flows one way::

    transactions (key card_id)
      -> decide_transactions: card state, merchant view, score -> fraud-decisions (key tx_id)
                              per partition, per flush         -> fraud-merchant-events (its merchants)
                              traffic samples                  -> fraud-training (1 partition)
    fraud-merchant-events
      -> count_merchant_events: merchant activity table; its changelog -> every worker's merchant view
    fraud-decisions + fraud-labels (key tx_id)
      -> join_labels: point-in-time join  -> fraud-training, fraud-merchant-events (labels)
    fraud-training
      -> learner_stage: learn, measure    -> fraud-model-snapshots (compacted) -> every worker

Every stage is a :class:`~app.stages.stage.BatchedStage`: state written once per
key per flush, outputs in batches, offsets committed only after both are durable.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, defaultdict
from typing import Any

from faust.types import TP, Message
from faust.web import Request, Response, View

from app import codecs
from app.contracts import FraudDecision, MerchantEvents, parse_fraud_label, parse_transaction
from app.faust_app import app, declared_at_startup
from app.learning import LearnerLoop, TrainingLog
from app.pipeline import PARTITIONS, never_stops_the_worker, pipeline_topic, register_stage
from app.settings import settings
from app.stages.follower import TopicFollower
from app.stages.lag import LagSample
from app.stages.learner_process import LearnerProcess
from app.stages.outputs import key_partition
from app.stages.stage import BatchedStage
from app.stages.state import sweep, sweep_idle
from app.views import json_response, routed_to_key_owner
from models.fraud import FraudModel
from models.fraud_steps import (
    Decided,
    DecisionPolicy,
    apply_merchant_events,
    decide_transaction,
    held_for_label,
    learns_from,
    traffic_record,
)
from models.learner import MODEL_NAME, FraudLearner, decode_training_records
from models.snapshots import ScoringModel, Snapshot, SnapshotSubscriber, signing_key
from tables import label_join as join
from tables.card_features import ConflictingTransaction, card_features_at
from tables.card_state import CardState
from tables.fraud import card_state, decode_merchant, label_join_state, merchant_state
from tables.merchant_features import MerchantActivity
from tables.merchant_view import MerchantView
from tables.windows import DAY, PartitionWatermarks

logger = logging.getLogger(__name__)

if settings.processing_guarantee != "at_least_once":
    raise RuntimeError(
        "eddy's fraud pipeline gives exactly one decision per transaction on top of at-least-once "
        f"delivery; EDDY_PROCESSING_GUARANTEE={settings.processing_guarantee!r} is not supported"
    )

# --- topics ------------------------------------------------------------------------------

_topic = pipeline_topic

transactions_topic = _topic("transactions")
labels_topic = _topic("fraud-labels")
decisions_topic = declared_at_startup(_topic("fraud-decisions"))
join_inputs = _topic("fraud-decisions", "fraud-labels")
merchant_events_topic = _topic("fraud-merchant-events")
training_topic = _topic("fraud-training", partitions=1)
snapshots_topic = declared_at_startup(
    _topic(
        "fraud-model-snapshots",
        partitions=1,
        config={"cleanup.policy": "compact", "max.message.bytes": str(16 * 2**20)},
    )
)

TRANSACTIONS = transactions_topic.get_topic_name()
LABELS = labels_topic.get_topic_name()
DECISIONS = decisions_topic.get_topic_name()
MERCHANT_EVENTS = merchant_events_topic.get_topic_name()
TRAINING = training_topic.get_topic_name()
TRAINING_KEY = MODEL_NAME.encode()

policy = DecisionPolicy(settings.fraud_review_threshold, settings.fraud_block_threshold)
LABEL_TTL = settings.fraud_label_ttl_days * DAY
SNAPSHOT_INTERVAL = 5.0  # seconds: how stale the scoring model may be while labels flow

# --- stages ------------------------------------------------------------------------------

decide_stage = register_stage(
    BatchedStage(app, "decide_transactions", [card_state], flush_interval=0.02, max_flush_interval=0.1),
    [transactions_topic],
)
join_stage = register_stage(
    BatchedStage(app, "join_labels", [label_join_state], flush_interval=0.1), [join_inputs]
)
# Merchant activity is published once per flush per merchant: a longer interval coalesces
# more (fewer records for every worker to read) at the price of staler merchant features.
merchant_stage = register_stage(
    BatchedStage(app, "count_merchant_events", [merchant_state], flush_interval=0.5), [merchant_events_topic]
)

SNAPSHOT_KEY = signing_key()
snapshots = SnapshotSubscriber(settings.kafka_bootstrap, snapshots_topic.get_topic_name(), SNAPSHOT_KEY)
merchant_view = MerchantView(decode_merchant)
merchant_follower = TopicFollower(
    settings.kafka_bootstrap, merchant_state.changelog_topic, merchant_view.apply
)
merchant_input_lag = LagSample()

# Event time reached per partition by each stage: what the idle-state sweep measures against.
card_watermarks = PartitionWatermarks()
merchant_watermarks = PartitionWatermarks()
join_watermarks = PartitionWatermarks()
swept: Counter[str] = Counter()
decided: Counter[str] = Counter()


class _MerchantEventsBuffer:
    """Transactions and labels per merchant, sent as one record per merchant-events partition per flush."""

    def __init__(self, stage: BatchedStage) -> None:
        self.stage = stage
        self._events: dict[str, MerchantEvents] = defaultdict(lambda: MerchantEvents([], []))
        stage.before_flush.append(self.emit)

    def transaction(self, merchant_id: str, ts: float, amount: float) -> None:
        self._events[merchant_id].transactions.append((ts, amount))

    def label(self, merchant_id: str, label_ts: float, is_fraud: bool) -> None:
        self._events[merchant_id].labels.append((label_ts, is_fraud))

    def emit(self) -> None:
        events, self._events = self._events, defaultdict(lambda: MerchantEvents([], []))
        self.stage.emit_by_partition(MERCHANT_EVENTS, events, MerchantEvents.encode_batch)


decided_merchant_events = _MerchantEventsBuffer(decide_stage)
labelled_merchant_events = _MerchantEventsBuffer(join_stage)


# About 1.5 KB per record: 50 a message stays far below any fetch limit.
TrainingRecords = TrainingLog[dict[str, Any]]
decided_training: TrainingRecords = TrainingLog(decide_stage, TRAINING, TRAINING_KEY, codecs.dumps)
joined_training: TrainingRecords = TrainingLog(join_stage, TRAINING, TRAINING_KEY, codecs.dumps)


scoring = ScoringModel(snapshots, MODEL_NAME, FraudModel(legit_sample_rate=settings.fraud_legit_sample_rate))


# --- agents ------------------------------------------------------------------------------


@app.task
async def follow_model_snapshots() -> None:
    """Keep this worker's scoring model at the newest published snapshot."""
    await snapshots.run()


@app.task
async def follow_merchant_activity() -> None:
    """Keep this worker's merchant view at the merchants' newest published activity."""
    await merchant_follower.run()


@app.agent(transactions_topic)
async def decide_transactions(stream):
    """Validate a transaction, count it in its card, score it and publish its decision."""
    await decide_stage.prepare(
        [decisions_topic, merchant_events_topic, training_topic], keyed_inputs=[transactions_topic]
    )
    await decide_stage.run(stream, _decide)


def _decide(message: Message) -> None:
    try:
        tx = parse_transaction(message.key, message.value)
    except (ValueError, TypeError, KeyError) as exc:
        decide_stage.dead_letter(message, f"{type(exc).__name__}: {exc}")
        return
    partition, key = message.partition, message.key
    card_watermarks.observe(partition, tx.ts)
    card = card_state.get(partition, key) or CardState.decode(None)
    try:
        outcome = decide_transaction(
            card,
            tx,
            merchant_view.get(tx.merchant_id),
            scoring.current(),
            scoring.version,
            policy,
            received_at=message.timestamp,  # faust gives seconds
            now=time.time(),
            offset=message.offset,
            committed=decide_stage.committed_offset(message),
        )
    except ConflictingTransaction as exc:
        decide_stage.dead_letter(message, str(exc))
        return
    card_state.put(partition, key, card)
    tx_key = tx.tx_id.encode()
    if isinstance(outcome, Decided):
        decided["decisions"] += 1
        decide_stage.emit(DECISIONS, tx_key, outcome.encoded)
        decided_merchant_events.transaction(tx.merchant_id, tx.ts, tx.amount)
        if outcome.traffic_sample:
            decided_training.add(traffic_record(outcome.decision.features))
    elif outcome.encoded is not None:
        # Delivered again (a crash before its offset was committed): the same decision again.
        decided["redelivered_reemitted"] += 1
        decide_stage.emit(DECISIONS, tx_key, outcome.encoded)
    else:
        decided["duplicate_transactions"] += 1


@app.agent(merchant_events_topic)
async def count_merchant_events(stream):
    """Count each merchant's transactions and labels; the table's changelog publishes them."""
    await merchant_stage.prepare([], keyed_inputs=[merchant_events_topic])
    await merchant_stage.run(stream, _count_merchant_events)


def _count_merchant_events(message: Message) -> None:
    batch = MerchantEvents.decode_batch(message.key, message.value)
    if misplaced := merchant_stage.keys_elsewhere(message, batch):
        merchant_stage.dead_letter(message, misplaced)
        return
    partition = message.partition
    merchant_input_lag.add(max(0.0, time.time() - message.timestamp))
    for merchant_id, events in batch.items():
        for ts in (*(ts for ts, _ in events.transactions), *(ts for ts, _ in events.labels)):
            merchant_watermarks.observe(partition, ts)
        key = merchant_id.encode()
        merchant = merchant_state.get(partition, key) or MerchantActivity()
        apply_merchant_events(merchant, events)
        merchant_state.put(partition, key, merchant)


@app.agent(join_inputs)
async def join_labels(stream):
    """Join each label with the features its transaction was decided with."""
    await join_stage.prepare([training_topic, merchant_events_topic, decisions_topic])
    await join_stage.run(stream, _join)


def _join(message: Message) -> None:
    partition, key = message.partition, message.key
    try:
        if message.topic == LABELS:
            label = parse_fraud_label(key, message.value)
            if (expected := join_stage.partition_for(DECISIONS, key)) != partition:
                join_stage.dead_letter(message, _stranded(label.tx_id, partition, expected))
                return
            tx_id, arrival_ts = label.tx_id, label.ts
            entry, outputs = join.on_label(
                label_join_state.get(partition, key),
                tx_id,
                {"is_fraud": label.is_fraud, "ts": label.ts},
                source=(message.topic, message.offset),
            )
        else:
            decision = FraudDecision.decode(message.value)
            tx_id, arrival_ts = decision.tx_id, decision.event_ts
            entry, outputs = join.on_decision(
                label_join_state.get(partition, key),
                tx_id,
                held_for_label(decision),
                learns_from(tx_id, settings.fraud_legit_sample_rate),
                source=(message.topic, message.offset),
            )
    except (ValueError, TypeError, KeyError) as exc:
        join_stage.dead_letter(message, f"{type(exc).__name__}: {exc}")
        return
    join_watermarks.observe(partition, arrival_ts)
    label_join_state.put(partition, key, entry)
    for output in outputs:
        if output["kind"] == "conflicting_decision":
            join_stage.dead_letter(
                message,
                f"tx_id {tx_id!r} reused: already decided for card {output['first_card_id']!r}, "
                f"now for card {output['card_id']!r}; its label joins the first only",
            )
    _publish_training([output for output in outputs if output["kind"] != "conflicting_decision"])


def _stranded(tx_id: str, partition: int, expected: int) -> str:
    return (
        f"label for {tx_id!r} arrived on partition {partition}, but its decision is on partition "
        f"{expected} of {DECISIONS} (Kafka's default murmur2 partitioner): it could never be "
        f"joined. Produce labels keyed by tx_id with the murmur2 partitioner (librdkafka: "
        f"partitioner=murmur2_random), on a topic with as many partitions as {DECISIONS}"
    )


def _publish_training(outputs: list[dict[str, Any]]) -> None:
    for output in outputs:
        # A labelled record sent again (its label or decision delivered again) goes to the
        # learner, which recognises it if the first one arrived; the merchant's label count,
        # which cannot, is not sent twice.
        if output["kind"] == "labelled" and not output.get("again"):
            labelled_merchant_events.label(output["merchant_id"], output["label_ts"], output["is_fraud"])
        joined_training.add(output)


@never_stops_the_worker(settings.sweep_interval_s)
async def sweep_idle_state() -> None:
    """Drop what no window or join can reach any more, so state does not grow without bound.

    Cards and merchants go once their newest event is a month of event time behind
    every partition; label-join entries once past the label TTL (counted by the learner).
    The deletions go through each stage's flush, tombstones included.
    """
    if (watermark := card_watermarks.low) is not None:
        swept["idle_cards"] += await sweep_idle(card_state, lambda card: card.is_idle(watermark))
    if (watermark := merchant_watermarks.low) is not None:
        swept["idle_merchants"] += await sweep_idle(merchant_state, lambda m: m.is_idle(watermark))
    await sweep(label_join_state, functools.partial(_retire_join_entry, join_watermarks.low))


def _retire_join_entry(
    watermark: float | None, partition: int, key: bytes, entry: dict[str, Any]
) -> dict[str, Any] | None:
    """One pass over the join: forget what an answered entry kept for a redelivery once it is
    committed, and drop (``None``) an entry past the label TTL, publishing what its expiry says."""
    kept = _forget_emitted(partition, key, entry)
    if kept is not entry:
        swept["join_entries_answered"] += 1
    if watermark is not None:
        remaining, outputs = join.on_expiry(kept, key.decode(), watermark, LABEL_TTL)
        if remaining is None:
            swept["expired_join_entries"] += 1
            _publish_training(outputs)
            return None
    return kept


def _forget_emitted(partition: int, key: bytes, entry: dict[str, Any]) -> dict[str, Any]:
    """A matched entry without the training record it kept for a redelivery, once committed."""
    if "by" not in entry:
        return entry
    committed = app.consumer._committed_offset.get(TP(entry["by"][0], partition)) or 0
    return join.forget_emitted(entry, committed) or entry


# --- the learner -------------------------------------------------------------------------


fraud_learner: LearnerLoop[FraudLearner] = LearnerLoop(
    MODEL_NAME,
    training_topic,
    snapshots_topic,
    snapshots,
    SNAPSHOT_KEY,
    fresh=lambda: FraudLearner(FraudModel(legit_sample_rate=settings.fraud_legit_sample_rate)),
    restore=FraudLearner.from_snapshot,
    decode=decode_training_records,
    snapshot_every=settings.fraud_snapshot_every,
    snapshot_interval=SNAPSHOT_INTERVAL,
    # The one learner of the cluster, on a core of its own: this worker only hands it the bytes.
    process=LearnerProcess("models.learner:decode_training_records") if settings.learner_process else None,
    direct_handover=settings.direct_handover,
)


@app.agent(training_topic)
async def learner_stage(stream):
    """The one learner: apply training records in order, publish versioned snapshots."""
    await fraud_learner.run(stream)


# --- views -------------------------------------------------------------------------------


def _card_partition(card_id: str) -> int:
    return key_partition(card_id.encode(), PARTITIONS)


@app.page("/fraud/cards/{card_id}/")
@routed_to_key_owner(card_state.table, match_info="card_id")
async def card_view(web: View, request: Request, card_id: str) -> Response:
    """The card's live features as of its newest transaction."""
    card = card_state.peek(_card_partition(card_id), card_id.encode())
    if card is None or not card.log.ts:
        return json_response(web, {"error": f"unknown card {card_id!r}"}, status=404)
    log = card.log
    return json_response(
        web,
        {
            "card_id": card_id,
            "transactions_kept": len(log.ts),
            "newest_ts": log.newest,
            "features": card_features_at(log, len(log.ts) - 1),
        },
    )


@app.page("/fraud/merchants/{merchant_id}/")
async def merchant_view_page(web: View, request: Request, merchant_id: str) -> Response:
    """The merchant's published activity and fraud-rate features as of its newest bucket (any worker)."""
    merchant = merchant_view.get(merchant_id)
    if merchant is None:
        return json_response(web, {"error": f"unknown merchant {merchant_id!r}"}, status=404)
    state = merchant.to_state()
    newest_day = max((row[0] for row in state["days"]), default=0)
    ts = (newest_day + 1) * DAY - 1
    return json_response(web, {"merchant_id": merchant_id, "features": merchant.features_at(ts, 0.0)})


@app.page("/fraud/state/")
async def state_view(web: View, request: Request) -> Response:
    """This worker's stages, watermarks, merchant-feature staleness and sweeps."""
    return json_response(
        web,
        {
            "watermarks": {
                "cards": card_watermarks.low,
                "merchants": merchant_watermarks.low,
                "label_join": join_watermarks.low,
            },
            "swept": dict(swept),
            "decisions": dict(decided),
            "card_partitions": sorted(
                tp.partition for tp in app.assignor.assigned_actives() if tp.topic == TRANSACTIONS
            ),
            "stages": {stage.name: stage.report() for stage in (decide_stage, join_stage, merchant_stage)},
            "merchant_features": {
                "merchants_in_view": len(merchant_view),
                "undecodable_in_view": merchant_view.undecodable,
                "merchant_stage_input_lag": merchant_input_lag.report(),
                "view_lag_after_merchant_flush": merchant_view.lag.report(),
            },
            "learner": fraud_learner.report(),
        },
    )


@app.page("/fraud/model/")
async def model_view(web: View, request: Request) -> Response:
    """The newest model snapshot's version, counts and progressive metrics."""
    snapshot: Snapshot | None = snapshots.latest.get(MODEL_NAME)
    if snapshot is None:
        return json_response(web, {"model_version": 0, "status": "no snapshot yet (cold start)"})
    learner = FraudLearner.from_snapshot(snapshot)
    return json_response(web, {**learner.report(), "created_at": snapshot.created_at})

"""Fraud detection: one decision per transaction, from live features and online models.

Data flows one way::

    transactions (key card_id)
      -> card_stage:      card features            -> fraud-card-features (key merchant_id)
      -> merchant_stage:  merchant features, score -> fraud-scored (key tx_id)
                          traffic samples          -> fraud-training (1 partition)
    fraud-scored + fraud-labels (key tx_id)
      -> label_join_stage: first score of a tx     -> fraud-decisions (key tx_id), exactly one per tx
                           point-in-time join      -> fraud-training, fraud-merchant-labels
    fraud-training
      -> learner_stage:   learn, measure           -> fraud-model-snapshots (compacted)
    fraud-model-snapshots -> every worker hot-swaps the scoring model
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import Counter
from typing import Any

from faust.web import Request, Response, View

from app import codecs
from app.contracts import parse_fraud_label, parse_transaction
from app.dead_letters import send_dead_letter, valid_records
from app.faust_app import app, declared_at_startup, producer_knows_partitions
from app.settings import settings
from app.views import json_response, routed_to_key_owner
from models.fraud import FraudModel
from models.learner import MODEL_NAME, TRAFFIC_SAMPLE_RATE, FraudLearner, sampled
from models.snapshots import Snapshot, SnapshotSubscriber, read_partition_range
from tables import label_join as join
from tables.card_features import (
    ConflictingTransaction,
    DuplicateTransaction,
    add_transaction,
    card_features_at,
    card_is_idle,
    card_log,
    redelivered_features,
)
from tables.fraud import card_activity, label_join, merchant_activity
from tables.merchant_features import MerchantActivity
from tables.transaction_features import transaction_features
from tables.windows import DAY, PartitionWatermarks

logger = logging.getLogger(__name__)

# --- topics ------------------------------------------------------------------------------

PARTITIONS = settings.topic_partitions


def _topic(*names: str, **options: Any):
    """A topic this app declares (creates when missing) with the configured partitions."""
    options.setdefault("partitions", PARTITIONS)
    return app.topic(*(settings.topic_name(name) for name in names), internal=True, **options)


transactions_topic = _topic("transactions", key_type=bytes, value_serializer="raw")
labels_topic = _topic("fraud-labels", key_type=bytes, value_serializer="raw")
card_features_topic = _topic("fraud-card-features", key_type=str)
merchant_labels_topic = _topic("fraud-merchant-labels", key_type=str)
merchant_inputs = _topic("fraud-card-features", "fraud-merchant-labels", key_type=str)
scored_topic = _topic("fraud-scored", key_type=str)
decisions_topic = declared_at_startup(_topic("fraud-decisions", key_type=str))
join_inputs = _topic("fraud-scored", "fraud-labels", key_type=bytes, value_serializer="raw")
training_topic = _topic("fraud-training", key_type=str, partitions=1)
snapshots_topic = declared_at_startup(
    _topic(
        "fraud-model-snapshots",
        key_type=str,
        value_serializer="raw",
        partitions=1,
        config={"cleanup.policy": "compact", "max.message.bytes": str(16 * 2**20)},
    )
)

snapshots = SnapshotSubscriber(settings.kafka_bootstrap, snapshots_topic.get_topic_name())

LABEL_TTL = settings.fraud_label_ttl_days * DAY

# Event time reached per partition by each stage: what the idle-state sweep measures against.
card_watermarks = PartitionWatermarks()
merchant_watermarks = PartitionWatermarks()
join_watermarks = PartitionWatermarks()
swept: Counter[str] = Counter()
SNAPSHOT_INTERVAL = 5.0  # seconds: how stale the scoring model may be while labels flow


def decide(score: float) -> str:
    """``block``, ``review`` or ``approve`` for a score, by the configured thresholds."""
    if score >= settings.fraud_block_threshold:
        return "block"
    if score >= settings.fraud_review_threshold:
        return "review"
    return "approve"


class _ScoringModel:
    """The newest model snapshot this worker has, swapped in as snapshots arrive."""

    def __init__(self) -> None:
        self.version = 0
        self.model = FraudModel(legit_sample_rate=settings.fraud_legit_sample_rate)

    def current(self) -> FraudModel:
        snapshot = snapshots.latest.get(MODEL_NAME)
        if snapshot is not None and snapshot.version != self.version:
            self.model, self.version = snapshot.model, snapshot.version
        return self.model


scoring = _ScoringModel()


# --- agents ------------------------------------------------------------------------------


@app.task
async def follow_model_snapshots() -> None:
    """Keep this worker's scoring model at the newest snapshot (a compacted topic, not an agent)."""
    await snapshots.run()


@app.agent(transactions_topic)
async def card_stage(stream):
    """Validate transactions, update the card's log, forward card features by merchant."""
    async for tx, event in valid_records(stream, {transactions_topic.get_topic_name(): parse_transaction}):
        card_watermarks.observe(event.message.partition, tx.ts)
        log = card_log(card_activity.get(tx.card_id))
        try:
            try:
                features = add_transaction(
                    log,
                    tx_id=tx.tx_id,
                    ts=tx.ts,
                    amount=tx.amount,
                    merchant_id=tx.merchant_id,
                    country=tx.country,
                )
                card_activity.set(tx.card_id, log.to_state())
            except DuplicateTransaction:
                # Delivered again (rebalance, restart, producer retry): forward, don't count.
                # The join stage publishes one decision per tx_id whatever arrives twice.
                features = redelivered_features(
                    log, tx_id=tx.tx_id, ts=tx.ts, amount=tx.amount, merchant_id=tx.merchant_id
                )
        except ConflictingTransaction as exc:
            await send_dead_letter(event, str(exc))
            continue
        except Exception as exc:  # a bug must cost one record (kept, with the reason), not the worker
            logger.exception("card features failed for %s", tx.tx_id)
            await send_dead_letter(event, f"card features failed: {exc!r}")
            continue
        card_features_topic.send_soon(
            key=tx.merchant_id,
            value={
                "tx": {
                    "tx_id": tx.tx_id,
                    "card_id": tx.card_id,
                    "merchant_id": tx.merchant_id,
                    "amount": tx.amount,
                    "ts": tx.ts,
                    "channel": tx.channel,
                },
                "card_features": features,
                "received_at": event.message.timestamp,
            },
        )


@app.agent(merchant_inputs)
async def merchant_stage(stream):
    """Add merchant and time features and score; the join stage turns scores into decisions."""
    async for event in stream.events():
        record = event.value
        merchant_id = event.key
        merchant = MerchantActivity(merchant_activity.get(merchant_id))
        if event.message.topic == merchant_labels_topic.get_topic_name():
            merchant_watermarks.observe(event.message.partition, record["label_ts"])
            merchant.add_label(record["label_ts"], record["is_fraud"])
            merchant_activity.set(merchant_id, merchant.to_state())
            continue
        tx = record["tx"]
        merchant_watermarks.observe(event.message.partition, tx["ts"])
        features = transaction_features(
            amount=tx["amount"],
            ts=tx["ts"],
            channel=tx["channel"],
            card_features=record["card_features"],
            merchant_features=merchant.add_transaction(tx["ts"], tx["amount"]),
        )
        merchant_activity.set(merchant_id, merchant.to_state())
        model = scoring.current()
        result = model.score(features)
        scored_topic.send_soon(
            key=tx["tx_id"],
            value={
                "tx_id": tx["tx_id"],
                "card_id": tx["card_id"],
                "merchant_id": merchant_id,
                "score": result.score,
                "decision": decide(result.score),
                "reasons": result.reasons,
                "model_version": scoring.version,
                "p_fraud": result.p_fraud,
                "anomaly": result.anomaly,
                "features": features,
                "event_ts": tx["ts"],
                "received_at": record["received_at"],
            },
        )
        if sampled(tx["tx_id"], TRAFFIC_SAMPLE_RATE):
            training_topic.send_soon(key=MODEL_NAME, value={"kind": "traffic", "features": features})


@app.agent(join_inputs)
async def label_join_stage(stream):
    """Join each label with the features its transaction was scored with."""
    await producer_knows_partitions(label_join.table.changelog_topic.get_topic_name())
    parsers = {
        labels_topic.get_topic_name(): parse_fraud_label,
        scored_topic.get_topic_name(): _scored_fields,
    }
    async for arrival, event in valid_records(stream, parsers):
        message = event.message
        decision = None
        if message.topic == labels_topic.get_topic_name():
            tx_id = arrival.tx_id
            label = {"is_fraud": arrival.is_fraud, "ts": arrival.ts}
            entry, outputs = join.on_label(label_join.get(tx_id), tx_id, label)
            arrival_ts = arrival.ts
        else:
            tx_id = arrival["tx_id"]
            learn = arrival["decision_label_sampled"]
            entry, outputs = join.on_decision(label_join.get(tx_id), tx_id, arrival["held"], learn)
            arrival_ts = arrival["held"]["event_ts"]
            if not any(output["kind"] == "duplicate_decision" for output in outputs):
                decision = _published(arrival["decision"])
        join_watermarks.observe(message.partition, arrival_ts)
        # The entry is written before anything is sent: a redelivery after a rebalance
        # then finds it in the restored table and is not decided a second time.
        if entry is None:
            label_join.delete(tx_id)
        else:
            label_join.set(tx_id, entry)
        if decision is not None:
            decisions_topic.send_soon(key=tx_id, value=decision)
        _publish_training(outputs)


def _published(scored: dict[str, Any]) -> dict[str, Any]:
    """The public decision: the score with when it was decided and how long that took."""
    decision = dict(scored)
    received_at = decision.pop("received_at")
    decision["decided_at"] = time.time()
    decision["latency_ms"] = (decision["decided_at"] - received_at) * 1000.0
    return decision


def _scored_fields(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    decision = codecs.loads(value)
    tx_id = decision["tx_id"]
    return {
        "tx_id": tx_id,
        "decision": decision,
        # Legitimate transactions are learned from by a deterministic sample (frauds always).
        "decision_label_sampled": sampled(tx_id, settings.fraud_legit_sample_rate),
        "held": {
            "features": decision["features"],
            "score": decision["score"],
            "event_ts": decision["event_ts"],
            "merchant_id": decision["merchant_id"],
        },
    }


def _publish_training(outputs: list[dict[str, Any]]) -> None:
    for output in outputs:
        if output["kind"] == "labelled":
            merchant_labels_topic.send_soon(
                key=output["merchant_id"],
                value={"label_ts": output["label_ts"], "is_fraud": output["is_fraud"]},
            )
        training_topic.send_soon(key=MODEL_NAME, value=output)


@app.timer(interval=settings.fraud_sweep_interval_s)
async def sweep_idle_state() -> None:
    """Drop what no window or join can reach any more, so state does not grow without bound.

    Cards and merchants go once their newest event is a month of event time behind
    every partition; label-join entries once past the label TTL (counted by the learner).
    """
    if (watermark := card_watermarks.low) is not None:
        swept["idle_cards"] += await card_activity.sweep(lambda state: card_is_idle(state, watermark))
    if (watermark := merchant_watermarks.low) is not None:
        swept["idle_merchants"] += await merchant_activity.sweep(
            lambda state: MerchantActivity(state).is_idle(watermark)
        )
    if (watermark := join_watermarks.low) is not None:
        swept["expired_join_entries"] += await label_join.sweep(
            lambda entry: join.on_expiry(entry, "", watermark, LABEL_TTL)[0] is None,
            on_evicted=lambda tx_id, entry: _publish_training(
                join.on_expiry(entry, tx_id, watermark, LABEL_TTL)[1]
            ),
        )


class _LearnerState:
    learner: FraudLearner | None = None
    unsnapshotted: int = 0
    # Held while the learner changes and while a snapshot of it is encoded off the event loop.
    lock = asyncio.Lock()


learner_state = _LearnerState()


@app.agent(training_topic)
async def learner_stage(stream):
    """The one learner: apply training records in order, publish versioned snapshots.

    The learner is rebuilt from the newest snapshot whenever this worker (re)gains the
    training partition, then replays what that snapshot had not seen: whichever worker
    learned last, learning continues exactly where the log says it stopped.
    """
    async for event in stream.events():
        async with learner_state.lock:
            learner = learner_state.learner
            if learner is None:
                learner = learner_state.learner = await _restored_learner()
            offset = event.message.offset
            if offset <= learner.training_offset:
                continue  # already in the restored snapshot
            if offset > learner.training_offset + 1:
                await _replay_training(learner, event.message.partition, learner.training_offset + 1, offset)
            learner.apply(event.value)
            learner.training_offset = offset
            learner_state.unsnapshotted += 1
        if learner_state.unsnapshotted >= settings.fraud_snapshot_every:
            await _publish_snapshot(learner)


async def _restored_learner() -> FraudLearner:
    await snapshots.caught_up.wait()
    restored = snapshots.latest.get(MODEL_NAME)
    if restored is None:
        return FraudLearner(FraudModel(legit_sample_rate=settings.fraud_legit_sample_rate))
    return FraudLearner.from_snapshot(copy.deepcopy(restored))


@app.on_partitions_revoked.connect
async def hand_over_learner(app_: Any, revoked: set, **kwargs: Any) -> None:
    """When the training partition leaves this worker, publish what it learned and let go."""
    learner = learner_state.learner
    if learner is None or not any(tp.topic == training_topic.get_topic_name() for tp in revoked):
        return
    if learner_state.unsnapshotted:
        await _publish_snapshot(learner)
    learner_state.learner = None


@app.timer(interval=SNAPSHOT_INTERVAL)
async def publish_pending_snapshot() -> None:
    """Publish what the learner learned since its last snapshot, at least every few seconds."""
    learner = learner_state.learner
    if learner is not None and learner_state.unsnapshotted:
        await _publish_snapshot(learner)


async def _replay_training(learner: FraudLearner, partition: int, start: int, stop: int) -> None:
    replayed = 0
    async for offset, value in read_partition_range(
        settings.kafka_bootstrap, training_topic.get_topic_name(), partition, start, stop
    ):
        learner.apply(codecs.loads(value))
        learner.training_offset = offset
        replayed += 1
    learner.counts["replayed_after_restart"] += replayed
    logger.info("learner replayed %d training records (offsets %d..%d)", replayed, start, stop - 1)


async def _publish_snapshot(learner: FraudLearner) -> None:
    # Encoding takes tens of ms: a thread keeps decisions flowing meanwhile (the GIL is handed
    # back every few ms), and the lock keeps the learner still until the bytes are taken.
    async with learner_state.lock:
        snapshot = learner.snapshot()
        encoded = await asyncio.to_thread(snapshot.encode)
        learner_state.unsnapshotted = 0
        # Sent in version order: the compacted topic keeps the last one written.
        await snapshots_topic.send(key=MODEL_NAME, value=encoded)


# --- views -------------------------------------------------------------------------------


@app.page("/fraud/cards/{card_id}/")
@routed_to_key_owner(card_activity.table, match_info="card_id")
async def card_view(web: View, request: Request, card_id: str) -> Response:
    """The card's live features as of its newest transaction."""
    state = card_activity.get(card_id)
    if state is None:
        return json_response(web, {"error": f"unknown card {card_id!r}"}, status=404)
    log = card_log(state)
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
@routed_to_key_owner(merchant_activity.table, match_info="merchant_id")
async def merchant_view(web: View, request: Request, merchant_id: str) -> Response:
    """The merchant's live activity and fraud-rate features as of its newest bucket."""
    state = merchant_activity.get(merchant_id)
    if state is None:
        return json_response(web, {"error": f"unknown merchant {merchant_id!r}"}, status=404)
    merchant = MerchantActivity(state)
    newest_day = max((row[0] for row in state["days"]), default=0)
    ts = (newest_day + 1) * DAY - 1
    return json_response(web, {"merchant_id": merchant_id, "features": merchant.features_at(ts, 0.0)})


@app.page("/fraud/state/")
async def state_view(web: View, request: Request) -> Response:
    """This worker's event-time watermarks and what its sweeps dropped since it started."""
    return json_response(
        web,
        {
            "watermarks": {
                "cards": card_watermarks.low,
                "merchants": merchant_watermarks.low,
                "label_join": join_watermarks.low,
            },
            "swept": dict(swept),
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

"""Recommendations: after every interaction, the user's top items, from an online River model.

Data flows one way::

    clicks (key user_id)
      -> recommend_for_users: user history and factors, item popularity, the model
                              per flush, ranked together -> recommendations (key user_id)
                              per partition, flush  -> reco-item-events (items of the partition)
                              SGD steps' item half  -> reco-training (1 partition)
    reco-item-events
      -> count_item_events: item activity table; its changelog -> every worker's popularity view
    reco-training
      -> reco_learner: item factors    -> reco-model-snapshots (compacted) -> every worker

The user's half of the matrix factorisation lives with the user, the items' half with
the one learner (:mod:`models.recommender`).  Candidates come from what is trending
over the last hour and day and from items near the user's recent ones; cold-start
users get trending items; items a user bought are not recommended again
(:mod:`models.reco_steps`).  ``GET /recommendations/{user_id}/?k=10`` answers from
the worker that owns the user, from any worker.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from faust.types import Message
from faust.web import Request, Response, View

from app.contracts import parse_click
from app.faust_app import app, declared_at_startup
from app.learning import LearnerLoop, TrainingLog
from app.pipeline import PARTITIONS, never_stops_the_worker, pipeline_topic, register_stage
from app.settings import settings
from app.stages.flushed import FlushedOutputs, Offloaded
from app.stages.follower import TopicFollower
from app.stages.helper import HelperProcess
from app.stages.learner_process import LearnerProcess
from app.stages.outputs import key_partition
from app.stages.redelivery import Applied
from app.stages.stage import BatchedStage
from app.stages.state import sweep_idle
from app.views import json_response, routed_to_key_owner
from models.reco_ranking import RankingEntry, encoded_recommendations, ranking_context, wire_entry
from models.reco_steps import (
    RecoSettings,
    ranking_request,
    recommend,
    recommendations_for,
    record_interaction,
)
from models.recommender import (
    MODEL_NAME,
    RecoLearner,
    Recommender,
    TrainingExample,
    decode_training,
    encode_training,
)
from models.snapshots import ScoringModel, SnapshotSubscriber, signing_key
from tables.item_popularity import ItemDeltas, ItemPopularity
from tables.recommendations import count_item, decode_item_activity, item_state, user_state
from tables.user_history import UserHistory
from tables.windows import PartitionWatermarks

logger = logging.getLogger(__name__)

# --- topics ------------------------------------------------------------------------------

clicks_topic = pipeline_topic("clicks")
recommendations_topic = declared_at_startup(pipeline_topic("recommendations"))
item_events_topic = pipeline_topic("reco-item-events")
training_topic = pipeline_topic("reco-training", partitions=1)
snapshots_topic = declared_at_startup(
    pipeline_topic(
        "reco-model-snapshots",
        partitions=1,
        config={"cleanup.policy": "compact", "max.message.bytes": str(16 * 2**20)},
    )
)

RECOMMENDATIONS = recommendations_topic.get_topic_name()
ITEM_EVENTS = item_events_topic.get_topic_name()
TRAINING = training_topic.get_topic_name()

#: Items in each ``recommendations`` record.
TOP_K = 10
#: Largest ``k`` the web view serves.
MAX_K = 100
RECO_SETTINGS = RecoSettings()

# --- stages ------------------------------------------------------------------------------

user_stage = register_stage(
    BatchedStage(app, "recommend_for_users", [user_state], flush_interval=0.02, max_flush_interval=0.1),
    [clicks_topic],
)
# Item activity is published once per flush per item: staleness of trending is about this long.
item_stage = register_stage(
    BatchedStage(app, "count_item_events", [item_state], flush_interval=0.5), [item_events_topic]
)

SNAPSHOT_KEY = signing_key()
snapshots = SnapshotSubscriber(settings.kafka_bootstrap, snapshots_topic.get_topic_name(), SNAPSHOT_KEY)
scoring = ScoringModel(snapshots, MODEL_NAME, Recommender())
popularity = ItemPopularity()
user_watermarks = PartitionWatermarks()
item_watermarks = PartitionWatermarks()
counted: Counter[str] = Counter()


class _ItemDeltasBuffer:
    """The flush's interactions per item, sent as one record per item-events partition per flush."""

    def __init__(self, stage: BatchedStage) -> None:
        self.stage = stage
        self.deltas = ItemDeltas()
        stage.before_flush.append(self.emit)

    def emit(self) -> None:
        deltas, self.deltas = self.deltas, ItemDeltas()
        self.stage.emit_by_partition(ITEM_EVENTS, deltas.items, lambda items: ItemDeltas(items).encode())


def _encoded_recommendations(entries: Sequence[RankingEntry]) -> list[bytes]:
    return encoded_recommendations(entries, RECO_SETTINGS)


item_deltas = _ItemDeltasBuffer(user_stage)
# Ranking is most of a click's work: a child process on another core ranks the clicks in
# chunks while this one goes on with the next (the worker ranks a chunk the child loses).
ranking_helper = HelperProcess("models.reco_ranking:encoded_in_helper")
# Each click's recommendations, ranked with the flush's other clicks as the flush starts.
flushed_recommendations: FlushedOutputs[RankingEntry] = FlushedOutputs(
    user_stage,
    RECOMMENDATIONS,
    _encoded_recommendations,
    Offloaded(ranking_helper, functools.partial(ranking_context, settings=RECO_SETTINGS), wire_entry)
    if settings.reco_ranking_helper
    else None,
)
training: TrainingLog[TrainingExample] = TrainingLog(
    user_stage, TRAINING, MODEL_NAME.encode(), encode_training
)


def _follow_item_activity(records: list[ConsumerRecord]) -> None:
    for record in {record.key: record for record in records}.values():  # one decode per key
        item_id = record.key.decode()
        popularity.put(item_id, None if record.value is None else decode_item_activity(record.value))
    popularity.evict()


item_follower = TopicFollower(settings.kafka_bootstrap, item_state.changelog_topic, _follow_item_activity)

# --- agents ------------------------------------------------------------------------------


@app.task
async def follow_reco_snapshots() -> None:
    """Keep this worker's recommender at the newest published snapshot."""
    await snapshots.run()


@app.task
async def follow_item_popularity() -> None:
    """Keep this worker's popularity view at the items' newest published activity."""
    await item_follower.run()


@app.agent(clicks_topic)
async def recommend_for_users(stream):
    """Validate a click, learn it into its user, and publish the user's recommendations."""
    await user_stage.prepare(
        [recommendations_topic, item_events_topic, training_topic], keyed_inputs=[clicks_topic]
    )
    await user_stage.run(stream, _recommend)


def _recommend(message: Message) -> None:
    try:
        click = parse_click(message.key, message.value)
    except (ValueError, TypeError, KeyError) as exc:
        user_stage.dead_letter(message, f"{type(exc).__name__}: {exc}")
        return
    partition, key = message.partition, message.key
    applied = user_state.get(partition, key) or Applied(None)
    if applied.is_redelivered(message.offset):
        # Delivered again (a crash before its offset was committed): the same recommendations
        # again.  Its training examples and popularity are not sent twice: they almost always
        # left with the first delivery's flush (a crash between a flush's state and its outputs
        # would lose them, see the README's delivery guarantees).
        for output in applied.outputs_of(message.offset):
            user_stage.emit(RECOMMENDATIONS, key, output)
        counted["redelivered"] += 1
        return
    user = applied.value or UserHistory()
    model = scoring.current()
    examples = record_interaction(user, click, model, item_deltas.deltas, RECO_SETTINGS)
    request = ranking_request(user, popularity, model, TOP_K, click.ts, RECO_SETTINGS)
    # The recommendations follow at the flush, ranked with the flush's other clicks.
    applied.apply(user, offset=message.offset, outputs=(), committed=user_stage.committed_offset(message))
    user_state.put(partition, key, applied)
    flushed_recommendations.add(
        message, applied, RankingEntry(click.user_id, scoring.version, click.ts, request)
    )
    user_watermarks.observe(partition, click.ts)
    for example in examples:
        training.add(example)
    counted["clicks"] += 1


@app.agent(item_events_topic)
async def count_item_events(stream):
    """Count each item's interactions; the table's changelog publishes them to every worker."""
    await item_stage.prepare([], keyed_inputs=[item_events_topic])
    await item_stage.run(stream, _count_item_events)


def _count_item_events(message: Message) -> None:
    deltas = ItemDeltas.decode(message.value)
    if misplaced := item_stage.keys_elsewhere(message, deltas.items):
        item_stage.dead_letter(message, misplaced)
        return
    partition, offset = message.partition, message.offset
    for item_id, per_minute in deltas.items.items():
        key = item_id.encode()
        applied = count_item(item_state.get(partition, key), per_minute, offset)
        if applied is None:
            counted["redelivered_item_events"] += 1  # counted once already
            continue
        item_watermarks.observe(partition, applied.value.newest)
        item_state.put(partition, key, applied)


reco_learner: LearnerLoop[RecoLearner] = LearnerLoop(
    MODEL_NAME,
    training_topic,
    snapshots_topic,
    snapshots,
    SNAPSHOT_KEY,
    fresh=lambda: RecoLearner(Recommender()),
    restore=RecoLearner.from_snapshot,
    decode=decode_training,
    snapshot_every=settings.reco_snapshot_every,
    # The one learner of the cluster, on a core of its own: this worker only hands it the bytes.
    process=LearnerProcess("models.recommender:decode_training") if settings.learner_process else None,
    direct_handover=settings.direct_handover,
)


@app.agent(training_topic)
async def learn_item_factors(stream):
    """The one recommender learner: apply training examples in order, publish snapshots."""
    await reco_learner.run(stream)


@never_stops_the_worker(settings.sweep_interval_s)
async def sweep_idle_users_and_items() -> None:
    """Drop users and items no window can reach any more, so state does not grow without bound."""
    if (watermark := user_watermarks.low) is not None:
        counted["idle_users_swept"] += await sweep_idle(
            user_state, lambda applied: applied.value is None or applied.value.is_idle(watermark)
        )
    if (watermark := item_watermarks.low) is not None:
        counted["idle_items_swept"] += await sweep_idle(
            item_state, lambda applied: applied.value is None or applied.value.is_idle(watermark)
        )


# --- views -------------------------------------------------------------------------------


@app.page("/recommendations/{user_id}/")
@routed_to_key_owner(user_state.table, match_info="user_id")
async def recommendations_view(web: View, request: Request, user_id: str) -> Response:
    """The user's top ``k`` now (``?k=``, default 10); a user never seen gets trending items."""
    try:
        k = int(request.query.get("k", TOP_K))
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_K:
        return json_response(web, {"error": f"k must be an integer from 1 to {MAX_K}"}, status=400)
    applied = user_state.peek(key_partition(user_id.encode(), PARTITIONS), user_id.encode())
    user = (applied.value if applied is not None else None) or UserHistory()
    # Event time: the newest interaction seen, the user's or anyone's.
    now = max(popularity.newest, user.newest)
    if not math.isfinite(now):
        return json_response(
            web, {"user_id": user_id, "items": [], "model_version": scoring.version, "ts": None}
        )
    items = recommend(user, popularity, scoring.current(), k, now, RECO_SETTINGS)
    return web.bytes(
        recommendations_for(user_id, items, scoring.version, now).encode(), content_type="application/json"
    )


def _newest_snapshot() -> dict[str, object] | None:
    """What the newest model snapshot learned: its version, training offset and counts."""
    snapshot = snapshots.latest.get(MODEL_NAME)
    if snapshot is None:
        return None
    return {
        "version": snapshot.version,
        "training_offset": snapshot.training_offset,
        "counts": snapshot.state.get("counts", {}),
    }


@app.page("/reco/state/")
async def reco_state_view(web: View, request: Request) -> Response:
    """This worker's recommendation stages, popularity view and learner."""
    scoring.current()  # take the newest snapshot even while no click comes
    return json_response(
        web,
        {
            "watermarks": {"users": user_watermarks.low, "items": item_watermarks.low},
            "counts": dict(counted),
            "stages": {stage.name: stage.report() for stage in (user_stage, item_stage)},
            "items_in_popularity_view": len(popularity),
            "model_version": scoring.version,
            "model": _newest_snapshot(),
            "learner": reco_learner.report(),
            "ranking_helper": ranking_helper.report(),
        },
    )

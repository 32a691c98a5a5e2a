"""What the recommendations worker's own work costs per click, in one process, by batch size.

``python -m benchmarks.reco_in_process`` replays the benchmark's click stream (5,000
users, 2,000 items, as ``benchmarks.pipelines`` sends; ``--days`` of it) in event-time
order through the steps ``agents.recommendations`` calls per click - ``parse_click``,
``record_interaction``, ``ranking_request``, ``Applied.apply``, and at each flush ``rank``
of the flush's clicks and ``recommendations_for(...).encode()`` - and what the worker
does per flush of the user stage (``--batch`` clicks: one size or a comma-separated list):

* ``flush: users``: each user written in the flush encoded as its table value (with the
  outputs still kept for redelivery: those at or after the committed offset, which
  moves every ``COMMIT_EVERY`` clicks, as the consumer commits about once a second);
* ``flush: records``: the flush's item-event records (one per partition of its items) and training messages;
* ``item stage``: each item in those records counted into its activity (``count_item``),
  and every ``ITEM_FLUSH_EVERY`` clicks (its 0.5 s flush at 1,000 clicks/s) each item
  changed encoded as its table value;
* ``popularity view``: those changelog records decoded and put into the worker's
  :class:`~tables.item_popularity.ItemPopularity`, as ``agents.recommendations``'s
  follower does.

At 1,000 clicks/s offered one by one, the user stage's 20 ms flush holds about 20
clicks; a backlog fills flushes of thousands.  The learner (another stage, on one
partition) learns beside the replay so that the served model evolves as deployed, but
is not timed.  Printed: CPU microseconds per click (this process's CPU time: the
machine's other work disturbs it less than wall time), median of ``--runs`` replays,
per step and batch size; a digest of every recommendation emitted (equal across batch
sizes only if popularity were not delayed by the flushes, so compare it per batch size
between versions); and a cProfile of one more replay at the first batch size.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.contracts import Click, parse_click
from app.settings import settings
from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.stages.outputs import records_by_partition
from app.stages.redelivery import Applied
from models.reco_replay import UserStageReplay
from models.reco_steps import RankingRequest, RecoSettings, rank, ranking_request, recommendations_for
from models.recommender import Recommender, TrainingExample, encode_training
from tables.item_popularity import ItemDeltas, ItemPopularity
from tables.recommendations import ITEM_STATE_CODEC, count_item, decode_item_activity, user_state

STREAM = ClickStreamConfig(seed=0, n_users=5_000, n_items=2_000, days=1.0)
TOP_K = 10  # as agents.recommendations publishes
# Clicks per flush: 3,000 clicks/s over the user stage's 20 ms flush interval.
FLUSH_EVERY = 60
# Clicks between the consumer's commits (broker_commit_interval 1 s at 1,000 clicks/s).
COMMIT_EVERY = 1_000
# Clicks between the item stage's flushes (flush_interval 0.5 s at 1,000 clicks/s).
ITEM_FLUSH_EVERY = 500
TRAINING_PER_MESSAGE = 50  # as app.learning.TrainingLog sends them
ITEM_EVENT_PARTITIONS = 8  # one item-events record per partition per flush, as the agent sends them
STEPS = (
    "parse",
    "record",
    "recommend",
    "encode",
    "flush: users",
    "flush: records",
    "item stage",
    "popularity view",
)


@dataclass
class ReplayCost:
    """CPU seconds spent in each step over one replay of ``clicks`` clicks, and what it emitted."""

    clicks: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    digest: str = ""

    @property
    def us_per_click(self) -> float:
        return sum(self.seconds.values()) / self.clicks * 1e6


def click_records(config: ClickStreamConfig) -> list[tuple[bytes, bytes]]:
    """The stream as ``clicks`` records: (key, value) bytes, as the agent receives them."""
    return [(event.key.encode(), orjson.dumps(event.value)) for event in generate_click_stream(config)]


class _ItemStage:
    """The item stage and every worker's popularity view, as ``agents.recommendations`` runs them."""

    def __init__(self) -> None:
        self.items: dict[str, Applied] = {}
        self.dirty: dict[str, None] = {}
        self.offset = 0
        self.popularity = ItemPopularity()

    def count(self, records: list[bytes]) -> None:
        """``count_item_events`` on each record."""
        for value in records:
            for item_id, per_minute in ItemDeltas.decode(value).items.items():
                applied = count_item(self.items.get(item_id), per_minute, self.offset)
                if applied is not None:
                    self.items[item_id] = applied
                    self.dirty[item_id] = None
            self.offset += 1

    def flush(self) -> list[tuple[bytes, bytes]]:
        """The item stage's flush: each changed item's changelog record."""
        encode = ITEM_STATE_CODEC.encode
        records = [(item_id.encode(), encode(self.items[item_id])) for item_id in self.dirty]
        self.dirty.clear()
        return records

    def follow(self, records: list[tuple[bytes, bytes]]) -> None:
        """The follower's callback (``_follow_item_activity``) on one fetch."""
        popularity = self.popularity
        for key, value in dict(records).items():
            popularity.put(key.decode(), decode_item_activity(value))
        popularity.evict()


def replay_user_stage(
    records: list[tuple[bytes, bytes]],
    flush_every: int = FLUSH_EVERY,
    profile: cProfile.Profile | None = None,
) -> ReplayCost:
    """One replay of ``records`` with a fresh model and state, timing the worker's steps.

    ``profile``, when given, is enabled around the timed steps only.
    """
    replay = UserStageReplay(
        Recommender(),
        flush_every=flush_every,
        # As deployed on a backlog (full messages); the 5 s floor of slower traffic is not modelled.
        snapshot_every=settings.reco_snapshot_every * TRAINING_PER_MESSAGE,
    )
    items = _ItemStage()
    popularity = items.popularity
    encode_state = user_state.codec.encode
    cost = ReplayCost(clicks=len(records))
    seconds = cost.seconds
    digest = hashlib.blake2b(digest_size=16)
    applied_of: dict[str, Applied] = {}  # each user's table value
    written: dict[str, Applied] = {}  # the flush's users, as the table's write-behind holds them
    training: list[TrainingExample] = []
    waiting: list[tuple[Click, Applied, int, int, RankingRequest]] = []  # clicks to rank at the flush
    committed = 0
    clock = time.process_time
    for offset, (key, value) in enumerate(records):
        if profile is not None:
            profile.enable()
        t0 = clock()
        click = parse_click(key, value)
        t1 = clock()
        user = replay.user(click.user_id)
        examples = replay.record(user, click)
        t2 = clock()
        request = ranking_request(user, popularity, replay.served, TOP_K, click.ts, replay.settings)
        t3 = clock()
        applied = applied_of.get(click.user_id)
        if applied is None:
            applied = applied_of[click.user_id] = Applied(None)
        applied.apply(user, offset=offset, outputs=(), committed=committed)
        written[click.user_id] = applied
        waiting.append((click, applied, offset, replay.snapshots, request))
        training.extend(examples)
        t4 = clock()
        seconds["parse"] += t1 - t0
        seconds["record"] += t2 - t1
        seconds["recommend"] += t3 - t2
        seconds["encode"] += t4 - t3
        if replay.flush_due():
            t4 = _ranked_at_flush(waiting, replay.settings, committed, digest, seconds)
            for state in written.values():
                encode_state(state)
            t5 = clock()
            deltas, replay.deltas = replay.deltas, ItemDeltas()
            item_events = [
                record
                for _, record in records_by_partition(
                    deltas.items, ITEM_EVENT_PARTITIONS, lambda items: ItemDeltas(items).encode()
                )
            ]
            for start in range(0, len(training), TRAINING_PER_MESSAGE):
                encode_training(training[start : start + TRAINING_PER_MESSAGE])
            t6 = clock()
            items.count(item_events)
            t7 = clock()
            seconds["flush: users"] += t5 - t4
            seconds["flush: records"] += t6 - t5
            seconds["item stage"] += t7 - t6
            written.clear()
            training.clear()
            if offset + 1 - committed >= COMMIT_EVERY:
                committed = offset + 1
        if (offset + 1) % ITEM_FLUSH_EVERY == 0:
            t8 = clock()
            changelog = items.flush()
            t9 = clock()
            items.follow(changelog)
            t10 = clock()
            seconds["item stage"] += t9 - t8
            seconds["popularity view"] += t10 - t9
        if profile is not None:
            profile.disable()
        replay.learn(examples)
    _ranked_at_flush(waiting, replay.settings, committed, digest, seconds)  # the last, partial flush
    cost.digest = digest.hexdigest()
    return cost


def _ranked_at_flush(
    waiting: list[tuple[Click, Applied, int, int, RankingRequest]],
    reco_settings: RecoSettings,
    committed: int,
    digest: Any,
    seconds: dict[str, float],
) -> float:
    """As the agent's flush starts: the flush's clicks ranked together, then encoded (the clock after)."""
    clock = time.process_time
    started = clock()
    rankings = rank([request for *_, request in waiting], reco_settings)
    ranked = clock()
    for (click, applied, offset, version, _), recommended in zip(waiting, rankings, strict=True):
        encoded = recommendations_for(click.user_id, recommended, version, click.ts).encode()
        applied.add_outputs(offset, [encoded], committed=committed)
        digest.update(encoded)
    waiting.clear()
    encoded_at = clock()
    seconds["recommend"] += ranked - started
    seconds["encode"] += encoded_at - ranked
    return encoded_at


def _batch_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be integers >= 1")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed replays per batch size (default 3)")
    parser.add_argument("--days", type=float, default=STREAM.days, help="days of the stream (default 1)")
    parser.add_argument(
        "--batch",
        "--flush-every",
        type=_batch_sizes,
        default=[FLUSH_EVERY],
        help=f"clicks per user-stage flush, e.g. 1,5,20,100,500 (default {FLUSH_EVERY})",
    )
    parser.add_argument("--profile-lines", type=int, default=25, help="cProfile rows (0: no profile)")
    args = parser.parse_args(argv)

    config = ClickStreamConfig(
        seed=STREAM.seed, n_users=STREAM.n_users, n_items=STREAM.n_items, days=args.days
    )
    records = click_records(config)
    print(f"stream: {config}: {len(records):,} clicks, batches of {args.batch}", flush=True)
    # The records are the harness's input: kept out of the garbage collector's scans.
    gc.collect()
    gc.freeze()
    costs: dict[int, list[ReplayCost]] = {batch: [] for batch in args.batch}
    for run in range(args.runs):  # batch sizes interleaved: the machine's drift hits each alike
        for batch in args.batch:
            gc.collect()
            cost = replay_user_stage(records, batch)
            costs[batch].append(cost)
            print(f"run {run + 1}, batch {batch}: {cost.us_per_click:.1f} CPU µs per click", flush=True)
    print(f"\nCPU µs per click, median of {args.runs} runs, by clicks per flush:")
    print(f"  {'step':<18}" + "".join(f"{batch:>10}" for batch in args.batch))
    for step in STEPS:
        row = [statistics.median(c.seconds[step] / c.clicks * 1e6 for c in costs[b]) for b in args.batch]
        print(f"  {step:<18}" + "".join(f"{value:10.1f}" for value in row))
    totals = [statistics.median(c.us_per_click for c in costs[b]) for b in args.batch]
    print(f"  {'total':<18}" + "".join(f"{value:10.1f}" for value in totals))
    for batch in args.batch:
        digests = {cost.digest for cost in costs[batch]}
        print(f"  recommendations digest, batch {batch}: {', '.join(sorted(digests))}")
    if args.profile_lines > 0:
        profile = cProfile.Profile()
        replay_user_stage(records, args.batch[0], profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile_lines)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the recommendations user stage's own work costs per click, in one process.

``python -m benchmarks.reco_in_process`` replays the benchmark's click stream (5,000
users, 2,000 items, as ``benchmarks.pipelines`` sends; ``--days`` of it) in event-time
order through the steps ``agents.recommendations`` calls per click - ``parse_click``,
``record_interaction``, ``recommend``, ``recommendations_for(...).encode()`` - and, once
per simulated flush of ``--flush-every`` clicks, encodes each user written in the flush
as its table value and applies the flush's deltas to popularity
(:class:`~models.reco_replay.UserStageReplay`, as :mod:`models.reco_quality` replays).

The learner (another stage, on one partition) learns beside the replay so that the
served model evolves as deployed, but is not timed.  Printed: the user stage's
CPU microseconds per click (this process's CPU time: the machine's other work
disturbs it less than wall time) of each run and their median, per step, and a cProfile
of one more run (the timed steps only).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, field

import orjson

from app.contracts import parse_click
from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.stages.redelivery import Applied
from models.reco_replay import UserStageReplay
from models.reco_steps import recommend, recommendations_for
from models.recommender import Recommender
from tables.recommendations import user_state

STREAM = ClickStreamConfig(seed=0, n_users=5_000, n_items=2_000, days=1.0)
TOP_K = 10  # as agents.recommendations publishes
# Clicks per flush: 3,000 clicks/s over the user stage's 20 ms flush interval.
FLUSH_EVERY = 60
STEPS = ("parse", "record", "recommend", "encode", "flush: users", "flush: popularity")


@dataclass
class ReplayCost:
    """CPU seconds spent in each step over one replay of ``clicks`` clicks."""

    clicks: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    @property
    def us_per_click(self) -> float:
        return sum(self.seconds.values()) / self.clicks * 1e6


def click_records(config: ClickStreamConfig) -> list[tuple[bytes, bytes]]:
    """The stream as ``clicks`` records: (key, value) bytes, as the agent receives them."""
    return [(event.key.encode(), orjson.dumps(event.value)) for event in generate_click_stream(config)]


def replay_user_stage(
    records: list[tuple[bytes, bytes]],
    flush_every: int = FLUSH_EVERY,
    profile: cProfile.Profile | None = None,
) -> ReplayCost:
    """One replay of ``records`` with a fresh model and state, timing the user stage's steps.

    ``profile``, when given, is enabled around the timed steps only.
    """
    replay = UserStageReplay(Recommender(), flush_every=flush_every)
    encode_state = user_state.codec.encode
    cost = ReplayCost(clicks=len(records))
    seconds = cost.seconds
    written: dict[str, Applied] = {}  # the flush's users, as the table's write-behind holds them
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
        items = recommend(user, replay.popularity, replay.served, TOP_K, click.ts, replay.settings)
        t3 = clock()
        encoded = recommendations_for(click.user_id, items, replay.snapshots, click.ts).encode()
        applied = written.get(click.user_id) or Applied(None)
        applied.apply(user, offset=offset, outputs=[encoded], committed=0)
        written[click.user_id] = applied
        t4 = clock()
        seconds["parse"] += t1 - t0
        seconds["record"] += t2 - t1
        seconds["recommend"] += t3 - t2
        seconds["encode"] += t4 - t3
        if replay.flush_due():
            for state in written.values():
                encode_state(state)
            t5 = clock()
            replay.flush()
            t6 = clock()
            written.clear()
            seconds["flush: users"] += t5 - t4
            seconds["flush: popularity"] += t6 - t5
        if profile is not None:
            profile.disable()
        replay.learn(examples)
    return cost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed replays (default 3)")
    parser.add_argument("--days", type=float, default=STREAM.days, help="days of the stream (default 1)")
    parser.add_argument("--flush-every", type=int, default=FLUSH_EVERY, help="clicks per flush (default 60)")
    parser.add_argument("--profile-lines", type=int, default=25, help="cProfile rows (0: no profile)")
    args = parser.parse_args(argv)

    config = ClickStreamConfig(
        seed=STREAM.seed, n_users=STREAM.n_users, n_items=STREAM.n_items, days=args.days
    )
    records = click_records(config)
    print(f"stream: {config}: {len(records):,} clicks, flush every {args.flush_every}", flush=True)
    # The records are the harness's input: kept out of the garbage collector's scans.
    gc.collect()
    gc.freeze()
    costs = []
    for _ in range(args.runs):
        gc.collect()
        costs.append(replay_user_stage(records, args.flush_every))
        print(f"run: {costs[-1].us_per_click:.1f} CPU µs per click", flush=True)
    median = statistics.median(cost.us_per_click for cost in costs)
    print(f"median over {args.runs} runs: {median:.1f} CPU µs per click (the user stage's own work)")
    for step in STEPS:
        step_us = statistics.median(cost.seconds[step] / cost.clicks * 1e6 for cost in costs)
        print(f"  {step:<18} {step_us:8.1f} µs per click")
    if args.profile_lines > 0:
        profile = cProfile.Profile()
        replay_user_stage(records, args.flush_every, profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile_lines)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak of the recommendations pipeline: months of clicks through one worker at a steady rate.

``python -m benchmarks.soak --pipeline recommendations`` (``make soak-all``) streams
``--days`` of simulated clicks (:mod:`app.simulation.clicks`) through one worker at ``--rate``
clicks per second, in event-time order.  The simulator's users and catalogue are fixed, so
the stream is made of overlapping cohorts (:func:`benchmarks.soak_run.cohorts`): every
``--cohort-days / 2`` days a new shop of ``--users`` users and ``--items`` items opens and
the oldest closes, so that idle users and items are swept and the learner forgets items
once more than its cap (5,000) have factors.  It reports:

- completion: clicks fed, answered by a recommendation record, lost and repeated;
- the rate sustained and the latency from each click's Kafka timestamp to its
  recommendation's (overall and p99 per tenth of the run);
- hit-rate@10 over the last tenth of the stream: how often the user's next view is among
  the ten items recommended at their previous interaction;
- RSS, the user and item tables' live keys (replayed from their changelogs), the popularity
  view, the sweeps, the learner's lag, the snapshot's size and items with factors over time,
  and the largest record of each table.

The results are appended to BENCHMARKS.md (``--no-write`` prints only).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.simulation.transactions import SimulatedEvent
from benchmarks.fraud import _read_decisions, commit_of_checkout
from benchmarks.fraud import report as publish_report
from benchmarks.soak_run import (
    DAY,
    Hooks,
    Run,
    Sample,
    add_run_arguments,
    along,
    by_tenths,
    cell,
    changelog,
    changelog_view,
    cohorts,
    cpu_along,
    memory_along,
    percentiles,
    renamed,
    rss_along,
    run_soak,
    run_tenths,
    state_view,
    tenths,
)
from models.snapshots import IncompatibleSnapshot, Snapshot, signing_key

START = 1_767_225_600.0
STATE = "/reco/state/"
USER_STAGE, ITEM_STAGE = "recommend_for_users", "count_item_events"
USER_TABLE, ITEM_TABLE = "reco-user-history", "reco-item-activity"
TOP_K = 10


@dataclass(frozen=True, slots=True)
class RecoCompletion:
    """Clicks fed against the recommendation records answering them (matched by user and ``ts``)."""

    clicks: int
    answered: int
    repeated: int

    @property
    def lost(self) -> int:
        return self.clicks - self.answered


def reco_completion(fed: Iterable[tuple[str, float]], answers: Iterable[tuple[str, float]]) -> RecoCompletion:
    """Count answered, lost and repeated clicks: a click ``(user_id, ts)`` wants one answer of the same
    ``(user_id, ts)``; answers beyond that, or to no click, are repeats."""
    wanted = Counter(fed)
    got = Counter(answers)
    answered = sum(min(n, got[key]) for key, n in wanted.items())
    return RecoCompletion(
        clicks=sum(wanted.values()), answered=answered, repeated=sum(got.values()) - answered
    )


def click_latencies(
    clicks: Iterable[tuple[str, float, int]], answers: Iterable[tuple[str, float, int]]
) -> list[float]:
    """Milliseconds from each click's Kafka timestamp to its answer's, in the answers' timestamp order.

    Both are ``(user_id, ts, Kafka timestamp ms)``; the n-th click of a ``(user_id, ts)`` (by
    timestamp) pairs with its n-th answer, and an answer without a click is left out.
    """
    sent: dict[tuple[str, float], list[int]] = defaultdict(list)
    for user_id, ts, stamp in sorted(clicks, key=lambda click: click[2]):
        sent[(user_id, ts)].append(stamp)
    used: Counter[tuple[str, float]] = Counter()
    latencies = []
    for user_id, ts, stamp in sorted(answers, key=lambda answer: answer[2]):
        stamps = sent.get((user_id, ts), [])
        if used[(user_id, ts)] < len(stamps):
            latencies.append(float(stamp - stamps[used[(user_id, ts)]]))
            used[(user_id, ts)] += 1
    return latencies


def next_views(events: Iterable[SimulatedEvent]) -> dict[str, tuple[list[float], list[str]]]:
    """Per user, the times and items of their views, in time order (a view is a fresh choice of item:
    clicks, add-to-carts and purchases follow a view of the same item)."""
    views: dict[str, tuple[list[float], list[str]]] = {}
    for event in sorted(
        (e for e in events if e.value["action"] == "view"), key=lambda event: event.value["ts"]
    ):
        times, items = views.setdefault(event.value["user_id"], ([], []))
        times.append(event.value["ts"])
        items.append(event.value["item_id"])
    return views


def hit_rate(
    answers: Iterable[dict[str, Any]], views: dict[str, tuple[list[float], list[str]]], since: float
) -> tuple[int, int]:
    """``(recommendations scored, hits)``: each recommendation at or after ``since`` whose user views
    something later scores a hit when that next view's item is among its items."""
    scored = hits = 0
    for answer in answers:
        if answer["ts"] < since or answer["user_id"] not in views:
            continue
        times, items = views[answer["user_id"]]
        at = bisect.bisect_right(times, answer["ts"])
        if at == len(times):
            continue
        scored += 1
        hits += items[at] in {item["item_id"] for item in answer["items"]}
    return scored, hits


def reco_probe(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a soak keeps of a ``/reco/state/`` view: cached keys, popularity view, sweeps, learner lag."""
    if state is None:
        return None
    stages = state.get("stages", {})
    counts = state.get("counts", {})
    return {
        "users_cached": sum(stages.get(USER_STAGE, {}).get("cached_keys", {}).values()),
        "items_cached": sum(stages.get(ITEM_STAGE, {}).get("cached_keys", {}).values()),
        "popularity": state.get("items_in_popularity_view"),
        "users_swept": counts.get("idle_users_swept", 0),
        "items_swept": counts.get("idle_items_swept", 0),
        "behind": state.get("learner", {}).get("messages_behind"),
        "helper_rss": state.get("ranking_helper", {}).get("rss_mb"),
        "learner_rss": state.get("learner", {}).get("process", {}).get("rss_mb"),
        "dead_letters": stages.get(USER_STAGE, {}).get("counts", {}).get("dead_letters", 0),
    }


def snapshot_model(value: bytes | None, key: bytes) -> tuple[int, int] | None:
    """``(items with factors, items forgotten)`` of a recommender snapshot (``None``: unreadable)."""
    if not value:
        return None
    try:
        model = Snapshot.decode(value, key=key).model
    except (IncompatibleSnapshot, ValueError):
        return None
    return len(model.item_factors()), model.evicted


def click_stream(
    days: float, cohort_days: float, users: int, items: int, seed: int = 0
) -> list[SimulatedEvent]:
    """The soak's clicks: cohorts of ``users`` users and ``items`` items, ids prefixed per cohort."""

    def make(cohort_seed: int, start: float, cohort_span: float) -> Any:
        config = ClickStreamConfig(
            seed=cohort_seed, n_users=users, n_items=items, start=start, days=cohort_span
        )
        return generate_click_stream(config)

    def rename(event: SimulatedEvent, prefix: str) -> SimulatedEvent:
        return renamed(event, prefix, ("user_id", "item_id", "session_id", "event_id"), "user_id")

    return list(cohorts(make, rename, start=START, days=days, cohort_days=cohort_days, seed=seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--days", type=float, default=120.0)
    parser.add_argument("--cohort-days", type=float, default=20.0, help="how long a cohort lives")
    parser.add_argument("--users", type=int, default=160, help="users per cohort")
    parser.add_argument("--items", type=int, default=1_000, help="items per cohort")
    parser.add_argument("--rate", type=float, default=500.0, help="clicks per second offered")
    add_run_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    events = click_stream(args.days, args.cohort_days, args.users, args.items)
    speedup = args.days * DAY / (len(events) / args.rate)

    def first_output(bootstrap: str, prefix: str, port: int) -> None:
        asyncio.run(_read_decisions(bootstrap, f"{prefix}recommendations", 1, 120))

    def drain(bootstrap: str, prefix: str, port: int, worker: subprocess.Popen) -> tuple[list[Any], float]:
        answers = asyncio.run(_read_decisions(bootstrap, f"{prefix}recommendations", len(events), 600))
        last = time.monotonic()
        deadline = last + 600
        while time.monotonic() < deadline and worker.poll() is None:
            if (reco_probe(state_view(port, STATE)) or {}).get("behind") == 0:
                return answers, time.monotonic() - last
            time.sleep(0.5)
        return answers, float("nan")

    hooks = Hooks(
        topics=("clicks", "recommendations"),
        first_output=first_output,
        probe=lambda port: reco_probe(state_view(port, STATE)),
        drain=drain,
        read_after=lambda prefix: {
            "clicks": f"{prefix}clicks",
            "snapshots": f"{prefix}reco-model-snapshots",
            "users": changelog(prefix, USER_TABLE),
            "items": changelog(prefix, ITEM_TABLE),
        },
    )
    run = run_soak(events, speedup, hooks, hold=args.hold, keep_log=args.keep_log)
    report = reco_report(run, events, args.days, args.rate, signing_key())
    report["command"] = "python -m benchmarks.soak --pipeline recommendations " + " ".join(argv)
    report["cohorts"] = (args.cohort_days, args.users, args.items)
    text = reco_markdown(report)
    publish_report(text, record=not args.no_write)
    done: RecoCompletion = report["completion"]
    return 0 if run.alive and done.lost == 0 else 1


def reco_report(
    run: Run, events: Sequence[SimulatedEvent], days: float, rate: float, key: bytes
) -> dict[str, Any]:
    """The measures of a recommendations soak from what :func:`run_soak` saw."""
    records, catch_up = run.drained
    answers = [orjson.loads(record.value) for record in records]
    clicks = [orjson.loads(record.value) for record in run.topics["clicks"]]
    latencies = click_latencies(
        ((c["user_id"], c["ts"], r.timestamp) for c, r in zip(clicks, run.topics["clicks"], strict=True)),
        ((a["user_id"], a["ts"], r.timestamp) for a, r in zip(answers, records, strict=True)),
    )
    stamps = sorted(record.timestamp for record in records)
    span = (stamps[-1] - stamps[0]) / 1000.0 if len(stamps) > 1 else 0.0
    end = START + days * DAY
    scored, hits = hit_rate(answers, next_views(events), since=end - days * DAY / 10)
    at = run_tenths(run.began_at, run.fed_seconds)
    sampled = tenths(run.topics["snapshots"])
    return {
        "days": days,
        "offered": rate,
        "alive": run.alive,
        "fed_seconds": run.fed_seconds,
        "completion": reco_completion(
            ((e.value["user_id"], e.value["ts"]) for e in events), ((a["user_id"], a["ts"]) for a in answers)
        ),
        "sustained": (len(records) - 1) / span if span else float("nan"),
        "latency": percentiles(latencies),
        "p99_by_tenth": by_tenths(latencies),
        "learner_catch_up_seconds": catch_up,
        "hit_rate": (scored, hits),
        "snapshot_sizes": [len(r.value or b"") for r in run.topics["snapshots"]],
        "snapshot_models": [snapshot_model(r.value, key) for r in sampled],
        "users": changelog_view(run.topics["users"], at),
        "items": changelog_view(run.topics["items"], at),
        "samples": run.samples,
    }


def reco_markdown(report: dict[str, Any]) -> str:
    """The report as a BENCHMARKS.md section."""
    done: RecoCompletion = report["completion"]
    samples: list[Sample] = report["samples"]
    views = [s.view or {} for s in tenths(samples)]
    sizes = report["snapshot_sizes"]
    scored, hits = report["hit_rate"]
    cohort_days, users, items = report["cohorts"]
    when = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"\n## Soak, recommendations — {when}, commit {commit_of_checkout()}\n",
        f"Command: `{report['command'].strip()}`. One worker, {report['days']:g} days of clicks "
        f"({done.clicks} events; cohorts of {users} users and {items} items living {cohort_days:g} days, "
        f"a new one every {cohort_days / 2:g} days) fed in event-time order at {report['offered']:.0f}/s.\n",
        *reco_rows(report),
        f"| hit-rate@{TOP_K} of the next view, last tenth ({scored} recommendations) "
        f"| **{hits / scored if scored else float('nan'):.3f}** |",
        f"| model snapshot size (bytes): max; along the run | **{max(sizes, default=0)}**; {tenths(sizes)} |",
        f"| items with factors / forgotten, along the run | {report['snapshot_models']} |",
        f"| user table: live keys along the run (keys ever) "
        f"| {cell(report['users']['live_keys'])} ({report['users']['keys_ever']}) |",
        f"| item table: live keys along the run (keys ever) "
        f"| {cell(report['items']['live_keys'])} ({report['items']['keys_ever']}) |",
        f"| cached users / items / popularity view, along the run "
        f"| {along(views, 'users_cached', 'items_cached', 'popularity')} |",
        f"| users / items swept (total), along the run | {along(views, 'users_swept', 'items_swept')} |",
        f"| learner messages behind, along the run | {[v.get('behind') for v in views]} |",
        f"| worker RSS (MB) along the run | {rss_along(samples)} |",
        f"| worker memory (MB) along the run: RocksDB cache and memtables / malloc in use / malloc free "
        f"| {memory_along(samples)} |",
        f"| its children's RSS (MB), ranking helper / learner, along the run "
        f"| {along(views, 'helper_rss', 'learner_rss')} |",
        f"| worker CPU while fed | {cpu_along(samples, done.clicks)} |",
        f"| largest record: user / item table | {report['users']['largest_record']} / "
        f"{report['items']['largest_record']} bytes |",
        "",
    ]
    return "\n".join(rows)


def reco_rows(report: dict[str, Any]) -> list[str]:
    """The table's head and its completion, rate and latency rows."""
    done: RecoCompletion = report["completion"]
    lat = report["latency"]
    return [
        "| measure | value |",
        "|---|---|",
        f"| worker alive at the end | {report['alive']} |",
        f"| clicks answered / lost / repeated | {done.answered} / **{done.lost}** / {done.repeated} |",
        f"| rate sustained (recommendations' timestamps) | {report['sustained']:.0f}/s "
        f"(feed took {report['fed_seconds']:.0f} s) |",
        f"| click to recommendation (Kafka timestamps) | p50 {lat[0.5]:.0f} ms, p95 {lat[0.95]:.0f} ms, "
        f"**p99 {lat[0.99]:.0f} ms**, max {lat['max']:.0f} ms |",
        f"| p99 latency per tenth of the run (ms) | {cell(report['p99_by_tenth'], '.0f')} |",
        f"| learner caught up after the last recommendation | {report['learner_catch_up_seconds']:.1f} s |",
    ]


if __name__ == "__main__":
    sys.exit(main())

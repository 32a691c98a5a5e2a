"""Quality of the recommendations on a generated click stream whose tail the model has not seen.

Run ``python -m models.reco_quality`` (``--help`` for the stream's size).

The stream (:func:`~app.simulation.clicks.generate_click_stream`) is replayed in
event-time order through the pipeline's own steps (:mod:`models.reco_steps`) by
:class:`~models.reco_replay.UserStageReplay`, as deployed: the user stage learns
each user's half of the model with the newest *snapshot* of the learner (refreshed
every ``snapshot_every`` training examples), and popularity is updated once per
``flush_every`` interactions.  Over the head (the first ``head_fraction`` of the
span) everything only learns.  Over the tail, at each **view** - the moment a user
picks an item to look at - each method ranks its top ``k`` for the user from the
state just before the view (so the viewed item is unseen by the model, which goes
on learning after it, prequentially), and the viewed item's 1-based rank ``r`` in
that list (none when absent) scores:

* ``hit@k`` = 1 if ``r <= k`` else 0,
* ``NDCG@k`` = ``1 / log2(r + 1)`` if ``r <= k`` else 0 (one relevant item: the ideal
  DCG is 1).

Reported are the means over all tail views, and over the views that led to a click
and to a purchase (the click's or purchase's item ranked in the list shown just
before the user's latest view of it).  Methods: ``recommender`` (:func:`recommend`),
``trending`` (:func:`recommend_trending`) and ``history`` (:func:`recommend_from_history`).
"""

from __future__ import annotations

import argparse
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.contracts import Click, ScoredItem
from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from models.reco_replay import UserStageReplay
from models.reco_steps import (
    DEFAULT_SETTINGS,
    RecoSettings,
    recommend,
    recommend_from_history,
    recommend_trending,
)
from models.recommender import Recommender
from tables.user_history import UserHistory

METHODS = ("recommender", "trending", "history")
TARGETS = ("view", "click", "purchase")


def rank_of(item_id: str, ranking: Sequence[ScoredItem]) -> int | None:
    """The 1-based rank of ``item_id`` in ``ranking`` (``None``: absent).

    >>> rank_of("b", [ScoredItem("a", 2.0), ScoredItem("b", 1.0)]), rank_of("z", [])
    (2, None)
    """
    for rank, scored in enumerate(ranking, start=1):
        if scored.item_id == item_id:
            return rank
    return None


def ndcg_at(rank: int | None, k: int) -> float:
    """NDCG@k of one relevant item at 1-based ``rank``: ``1 / log2(rank + 1)`` within the top ``k``.

    >>> ndcg_at(1, 10), ndcg_at(3, 10), ndcg_at(11, 10), ndcg_at(None, 10)
    (1.0, 0.5, 0.0, 0.0)
    """
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


@dataclass
class RankingMetrics:
    """Mean hit@k and NDCG@k over the ranks seen.

    >>> metrics = RankingMetrics(k=10)
    >>> for rank in (1, 3, None, 12):
    ...     metrics.update(rank)
    >>> metrics.hit_rate, metrics.ndcg
    (0.5, 0.375)
    """

    k: int
    n: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0

    def update(self, rank: int | None) -> None:
        self.n += 1
        if rank is not None and rank <= self.k:
            self.hits += 1
            self.ndcg_sum += ndcg_at(rank, self.k)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.n if self.n else 0.0

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.n if self.n else 0.0


@dataclass
class QualityReport:
    """Metrics per target (``view``, ``click``, ``purchase``) and method, and what was replayed."""

    k: int
    metrics: dict[str, dict[str, RankingMetrics]]
    events: int = 0
    tail_events: int = 0
    items_in_model: int = 0
    snapshot_bytes: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        k = self.k
        header = f"{'method':<12}" + "".join(
            f" {target + f's (n={self.metrics[target][METHODS[0]].n:,})':>26}" for target in TARGETS
        )
        sub = f"{'':<12}" + f" {f'hit@{k}':>12} {f'NDCG@{k}':>13}" * len(TARGETS)
        rows = [header, sub]
        for method in METHODS:
            cells = "".join(
                f" {self.metrics[t][method].hit_rate:>12.3f} {self.metrics[t][method].ndcg:>13.3f}"
                for t in TARGETS
            )
            rows.append(f"{method:<12}{cells}")
        return "\n".join(rows)


def evaluate(
    config: ClickStreamConfig,
    *,
    head_fraction: float = 0.7,
    k: int = 10,
    model: Recommender | None = None,
    settings: RecoSettings = DEFAULT_SETTINGS,
    snapshot_every: int = 2_000,
    flush_every: int = 100,
) -> QualityReport:
    """Replay ``config``'s stream, learning over the head and scoring every method over the tail."""
    started = time.perf_counter()
    replay = UserStageReplay(
        model if model is not None else Recommender(),
        settings,
        snapshot_every=snapshot_every,
        flush_every=flush_every,
    )
    metrics = {target: {method: RankingMetrics(k) for method in METHODS} for target in TARGETS}
    last_view_rank: dict[tuple[str, str], dict[str, int | None]] = {}
    split = config.start + head_fraction * config.days * 86_400.0
    rankers: dict[str, Callable[[UserHistory, float], list[ScoredItem]]] = {
        "recommender": lambda user, now: recommend(user, replay.popularity, replay.served, k, now, settings),
        "trending": lambda user, now: recommend_trending(user, replay.popularity, k, now, settings),
        "history": lambda user, now: recommend_from_history(user, k, now, settings),
    }
    report = QualityReport(k, metrics)
    for n, event in enumerate(generate_click_stream(config), start=1):
        value = event.value
        click = Click(value["user_id"], value["item_id"], value["action"], float(value["ts"]))
        user = replay.user(click.user_id)
        if click.ts >= split:
            report.tail_events += 1
            key = (click.user_id, click.item_id)
            if click.action == "view":
                ranks = {m: rank_of(click.item_id, rank(user, click.ts)) for m, rank in rankers.items()}
                last_view_rank[key] = ranks
                for method, rank in ranks.items():
                    metrics["view"][method].update(rank)
            elif click.action in ("click", "purchase"):
                ranks = last_view_rank.get(key, {})
                for method in METHODS:
                    metrics[click.action][method].update(ranks.get(method))
        replay.learn(replay.record(user, click))
        if replay.flush_due():
            replay.flush()
        report.events = n
    report.items_in_model = len(replay.learner.item_factors())
    report.snapshot_bytes = len(pickle.dumps(replay.learner, protocol=pickle.HIGHEST_PROTOCOL))
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--negatives", type=int, default=DEFAULT_SETTINGS.negatives)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--factors", type=int, default=10)
    args = parser.parse_args(argv)
    config = ClickStreamConfig(seed=args.seed, n_users=args.users, n_items=args.items, days=args.days)
    settings = RecoSettings(negatives=args.negatives)
    model = Recommender(n_factors=args.factors, learning_rate=args.learning_rate)
    report = evaluate(config, model=model, settings=settings)
    print(
        f"{report.events:,} events ({report.tail_events:,} in the unseen tail), {args.users:,} users, "
        f"{args.items:,} items, {args.days:g} days, seed {args.seed}; {report.items_in_model:,} items in "
        f"the model, snapshot {report.snapshot_bytes / 1024:.0f} KB pickled; {report.seconds:.0f} s"
    )
    print(report.table())


if __name__ == "__main__":
    main()

"""What the fraud pipeline's feature and model logic costs in one process, and what it gets right.

``python -m benchmarks.in_process`` replays one simulated stream (:data:`STREAM`:
2,000 cards, 4,000 merchants, 120 days, labels 7 days late; ``--scenario handbook``
for the handbook's simulator, :mod:`app.simulation.handbook`, at the same size) through
:class:`~models.evaluation.InProcessFraudPipeline` several times, each run with a
fresh pipeline, and prints:

* the cost per transaction, labels included: wall time of the whole replay
  divided by its transactions, per run and the median over the runs (and the
  same in CPU time of this process, which a busy machine disturbs less);
* the quality of the decisions over the last 14 days (ROC AUC, average precision),
  which is the same in every run (the replay is deterministic).

The stream is generated once, before any timing, and kept out of the garbage
collector's way (see :func:`replay_costs`).  ``make bench`` reports
:func:`in_process_costs` (per-step medians) from here too.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from app.simulation.handbook import HandbookStreamConfig
from app.simulation.transactions import (
    SCENARIOS,
    TransactionStreamConfig,
    generate_transaction_stream,
    stream_config,
)
from models.evaluation import EvaluationReport, InProcessFraudPipeline, replay, report

STREAM = TransactionStreamConfig(seed=0, n_cards=2_000, n_merchants=4_000, days=120)


def replay_costs(events: list[Any], runs: int) -> tuple[list[float], list[float], EvaluationReport]:
    """Wall and CPU microseconds per transaction (labels included) of ``runs`` replays, and their quality."""
    scored: list[Any] = []

    def replay_once() -> int:
        scored[:] = replay(events, InProcessFraudPipeline())
        return len(scored)

    wall, cpu = timed_runs(replay_once, runs)
    return wall, cpu, report(scored)


def timed_runs(replay_once: Callable[[], int], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU microseconds per item of ``runs`` calls of ``replay_once`` (which returns its items).

    On a shared machine the CPU time (this process only) varies less than the wall time.
    The events a replay reads are the harness's input, held whole only to keep their
    generation out of the timing: they are frozen out of the garbage collector's scans
    (a worker holds one record at a time), and every run starts after a full collection.
    """
    gc.collect()
    gc.freeze()
    wall, cpu = [], []
    for _ in range(runs):
        gc.collect()
        started, started_cpu = time.perf_counter(), time.process_time()
        items = replay_once()
        wall.append((time.perf_counter() - started) / items * 1e6)
        cpu.append((time.process_time() - started_cpu) / items * 1e6)
    return wall, cpu


def in_process_costs(
    n_transactions: int, config: TransactionStreamConfig | HandbookStreamConfig = STREAM
) -> dict[str, float]:
    """Median microseconds per transaction for each step, from one replay of ``n_transactions``."""
    pipeline = InProcessFraudPipeline()
    per_tx: list[float] = []
    per_label: list[float] = []
    for event in generate_transaction_stream(config):
        started = time.perf_counter()
        if event.topic == "transactions":
            pipeline.transaction(event.value)
            per_tx.append(time.perf_counter() - started)
            if len(per_tx) >= n_transactions:
                break
        else:
            pipeline.label(event.value)
            per_label.append(time.perf_counter() - started)
    model = pipeline.learner.model
    _, features = pipeline.transaction(
        {"tx_id": "probe", "card_id": "card-0001", "merchant_id": "m-0001", "amount": 20.0, "ts": 1.78e9}
    )
    score_times = _timed(lambda: model.score(features), 2_000)
    learn_times = _timed(lambda: model.learn(features, False), 2_000)
    return {
        "transactions": len(per_tx),
        "transaction_us_median": statistics.median(per_tx) * 1e6,
        "transaction_us_p99": quantile(per_tx, 0.99) * 1e6,
        "label_us_median": statistics.median(per_label) * 1e6 if per_label else float("nan"),
        "score_us_median": statistics.median(score_times) * 1e6,
        "learn_us_median": statistics.median(learn_times) * 1e6,
    }


def _timed(step: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank from below).

    >>> quantile([3.0, 1.0, 2.0, 4.0], 0.5)
    3.0
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="replays of the stream (default 5)")
    parser.add_argument("--days", type=float, default=STREAM.days, help="days of the stream (default 120)")
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="default", help="the stream's simulator (default: default)"
    )
    args = parser.parse_args(argv)

    config = stream_config(
        args.scenario,
        seed=STREAM.seed,
        n_cards=STREAM.n_cards,
        n_merchants=STREAM.n_merchants,
        days=args.days,
    )
    events = list(generate_transaction_stream(config))
    n_tx = sum(1 for event in events if event.topic == "transactions")
    print(f"stream: {config}: {n_tx} transactions, {len(events) - n_tx} labels", flush=True)
    wall, cpu, quality = replay_costs(events, args.runs)
    print("µs per transaction (labels included), per run:", " ".join(f"{c:.1f}" for c in wall))
    print("CPU µs per transaction, per run:              ", " ".join(f"{c:.1f}" for c in cpu))
    print(
        f"median over {args.runs} runs: {statistics.median(wall):.1f} µs per transaction "
        f"({statistics.median(cpu):.1f} µs CPU)"
    )
    print(
        f"last {quality.tail_days:g} days: ROC AUC {quality.tail_roc_auc:.4f}, "
        f"average precision {quality.tail_average_precision:.4f}; "
        f"whole stream: ROC AUC {quality.roc_auc:.4f}, average precision {quality.average_precision:.4f}"
    )
    print("caught at 0.5 by kind:", {kind: round(share, 3) for kind, share in quality.caught_by_kind.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

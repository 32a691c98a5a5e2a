"""Streaming vs batch fraud detection on one simulated stream: replay, metrics, Markdown report, plots.

:func:`run_comparison` replays one generated stream once, feeding every event to
eddy's streaming logic (:class:`~models.evaluation.InProcessFraudPipeline`) and
to one :class:`~app.comparison.batch.BatchFraudBaseline` per job period.
:func:`summarize` measures, per pipeline, the time from event to decision, the
staleness of the features and the quality of the scores; :func:`write_report`
writes ``README.md`` and the plots.

Two batch flavours are measured from one batch run:

* lookup: each transaction is scored on arrival with the last job's feature rows
  and model (the run's scores); the decision is immediate, the features stale;
* scoring: the next job decides on each transaction that arrived since the
  previous one.  It is credited with the streaming score (point-in-time features
  that include the transaction, which a job can compute), so only the delay of
  the decision counts against it: an upper bound for batch scoring.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from app.comparison.batch import BatchFraudBaseline, BatchJob
from app.simulation.handbook import HandbookStreamConfig
from app.simulation.transactions import (
    TRANSACTIONS_TOPIC,
    TransactionStreamConfig,
    fraud_kinds,
    generate_transaction_stream,
)
from models.evaluation import InProcessFraudPipeline
from models.metrics import average_precision, roc_auc
from tables.windows import DAY, HOUR

DEFAULT_EVERY_HOURS = (1.0, 24.0)
TAIL_DAYS = 14.0
ROLLING_DAYS = 7.0
REVIEW_THRESHOLD = 0.5
PLOTS = ("quality_over_time.png", "staleness.png", "caught_by_kind.png")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


@dataclass(frozen=True)
class Run:
    """Per-transaction outcome of one pipeline, in stream order."""

    name: str
    every_hours: float | None  # None: streaming
    scores: np.ndarray
    compute_seconds: np.ndarray
    job_time: np.ndarray | None  # time of the job whose rows and model scored each transaction
    jobs: tuple[BatchJob, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One stream replayed through streaming and batch pipelines."""

    config: TransactionStreamConfig | HandbookStreamConfig
    ts: np.ndarray
    card_id: list[str]
    fraud_kind: np.ndarray  # "" for legitimate transactions
    runs: tuple[Run, ...]  # streaming first
    seconds: float

    @property
    def is_fraud(self) -> np.ndarray:
        return self.fraud_kind != ""

    @property
    def streaming(self) -> Run:
        return self.runs[0]


@dataclass(frozen=True)
class Summary:
    """The headline numbers of one pipeline; delays and staleness are 0 for streaming."""

    name: str
    compute_ms_median: float
    compute_ms_p99: float
    scoring_delay_hours_mean: float
    scoring_delay_hours_median: float
    staleness_hours_median: float
    staleness_hours_p95: float
    missing_1h_median: float
    missing_1h_p95: float
    missing_1h_fraud_mean: float
    roc_auc: float
    average_precision: float
    tail_roc_auc: float
    tail_average_precision: float
    caught: dict[str, float]
    caught_before_next: dict[str, float]
    jobs: int
    job_seconds: float


def run_comparison(
    config: TransactionStreamConfig | HandbookStreamConfig, every_hours: Sequence[float] = DEFAULT_EVERY_HOURS
) -> Comparison:
    """Replay the stream of ``config`` once through streaming and one batch baseline per period."""
    started = time.perf_counter()
    streaming = InProcessFraudPipeline()
    batches = [BatchFraudBaseline(hours) for hours in every_hours]
    ts: list[float] = []
    card_id: list[str] = []
    kinds: list[str] = []
    scores: list[list[float]] = [[] for _ in range(1 + len(batches))]
    compute: list[list[float]] = [[] for _ in range(1 + len(batches))]
    job_time: list[list[float]] = [[] for _ in batches]
    for event in generate_transaction_stream(config):
        if event.topic != TRANSACTIONS_TOPIC:
            streaming.label(event.value)
            for batch in batches:
                batch.label(event.value)
            continue
        tx = event.value
        ts.append(tx["ts"])
        card_id.append(tx["card_id"])
        kinds.append((event.truth or {}).get("fraud_kind") or "")
        began = time.perf_counter()
        result = streaming.transaction(tx)
        compute[0].append(time.perf_counter() - began)
        if result is None:
            raise ValueError(f"duplicate tx_id {tx['tx_id']!r} in the stream")
        scores[0].append(result[0])
        for i, batch in enumerate(batches, start=1):
            batch.advance(tx["ts"])  # the job is not part of the decision's compute
            began = time.perf_counter()
            score, _ = batch.transaction(tx)
            compute[i].append(time.perf_counter() - began)
            scores[i].append(score)
            job_time[i - 1].append(batch.last_job)
    runs = [Run("streaming", None, np.array(scores[0]), np.array(compute[0]), None)]
    for i, (hours, batch) in enumerate(zip(every_hours, batches, strict=True), start=1):
        runs.append(
            Run(
                f"batch {hours:g}h",
                hours,
                np.array(scores[i]),
                np.array(compute[i]),
                np.array(job_time[i - 1]),
                tuple(batch.jobs),
            )
        )
    return Comparison(
        config=config,
        ts=np.array(ts),
        card_id=card_id,
        fraud_kind=np.array(kinds, dtype=object),
        runs=tuple(runs),
        seconds=time.perf_counter() - started,
    )


def missing_last_hour(ts: np.ndarray, card_id: Sequence[str], job_time: np.ndarray) -> np.ndarray:
    """Per transaction: earlier transactions of its card in the hour before it that came at or after its job.

    >>> missing_last_hour(np.array([10.0, 20.0, 30.0, 5000.0]), ["a", "a", "b", "a"],
    ...                   np.array([0.0, 15.0, 0.0, 15.0]))
    array([0, 0, 0, 0])
    >>> missing_last_hour(np.array([10.0, 20.0, 30.0]), ["a", "a", "a"], np.array([0.0, 0.0, 0.0]))
    array([0, 1, 2])
    """
    seen: dict[str, list[float]] = {}
    missing = np.zeros(ts.size, dtype=int)
    for i, (moment, card, job) in enumerate(zip(ts.tolist(), card_id, job_time.tolist(), strict=True)):
        earlier = seen.setdefault(card, [])
        start = max(bisect_right(earlier, moment - HOUR), bisect_left(earlier, job))
        missing[i] = len(earlier) - start
        earlier.append(moment)
    return missing


def next_of_card(ts: np.ndarray, card_id: Sequence[str]) -> np.ndarray:
    """Per transaction: the time of its card's next transaction (``inf`` for the last one).

    >>> next_of_card(np.array([1.0, 2.0, 3.0]), ["a", "b", "a"])
    array([ 3., inf, inf])
    """
    following: dict[str, float] = {}
    result = np.full(ts.size, math.inf)
    for i in reversed(range(ts.size)):
        result[i] = following.get(card_id[i], math.inf)
        following[card_id[i]] = float(ts[i])
    return result


def summarize(comparison: Comparison, threshold: float = REVIEW_THRESHOLD) -> list[Summary]:
    """Headline numbers of every pipeline of ``comparison``, streaming first."""
    ts, is_fraud = comparison.ts, comparison.is_fraud
    tail = ts > ts.max() - TAIL_DAYS * DAY
    next_ts = next_of_card(ts, comparison.card_id)
    caught_streaming = comparison.streaming.scores >= threshold
    summaries = []
    for run in comparison.runs:
        caught = _share_by_kind(comparison, run.scores >= threshold)
        if run.job_time is None or run.every_hours is None:
            delay = staleness = np.zeros(ts.size)
            missing = np.zeros(ts.size, dtype=int)
            caught_before_next = caught
        else:
            decided = run.job_time + run.every_hours * HOUR
            delay = (decided - ts) / HOUR
            staleness = (ts - run.job_time) / HOUR
            missing = missing_last_hour(ts, comparison.card_id, run.job_time)
            caught_before_next = _share_by_kind(comparison, caught_streaming & (decided <= next_ts))
        summaries.append(
            Summary(
                name=run.name,
                compute_ms_median=float(np.median(run.compute_seconds)) * 1e3,
                compute_ms_p99=float(np.quantile(run.compute_seconds, 0.99)) * 1e3,
                scoring_delay_hours_mean=float(delay.mean()),
                scoring_delay_hours_median=float(np.median(delay)),
                staleness_hours_median=float(np.median(staleness)),
                staleness_hours_p95=float(np.quantile(staleness, 0.95)),
                missing_1h_median=float(np.median(missing)),
                missing_1h_p95=float(np.quantile(missing, 0.95)),
                missing_1h_fraud_mean=float(missing[is_fraud].mean()),
                roc_auc=roc_auc(is_fraud, run.scores),
                average_precision=average_precision(is_fraud, run.scores),
                tail_roc_auc=roc_auc(is_fraud[tail], run.scores[tail]),
                tail_average_precision=average_precision(is_fraud[tail], run.scores[tail]),
                caught=caught,
                caught_before_next=caught_before_next,
                jobs=len(run.jobs),
                job_seconds=sum(job.seconds for job in run.jobs),
            )
        )
    return summaries


def _share_by_kind(comparison: Comparison, flags: np.ndarray) -> dict[str, float]:
    """Share of flagged transactions among the frauds of each kind and among all frauds."""
    kinds = comparison.fraud_kind
    shares = {
        kind: float(flags[kinds == kind].mean())
        for kind in fraud_kinds(comparison.config)
        if (kinds == kind).any()
    }
    shares["all"] = float(flags[kinds != ""].mean())
    return shares


def rolling_quality(comparison: Comparison, days: float = ROLLING_DAYS) -> dict[str, np.ndarray]:
    """ROC AUC and AP per pipeline over trailing ``days`` windows, evaluated at the end of each day.

    Keys: ``day`` (days since the start), then ``<name> auc`` and ``<name> ap`` per pipeline.
    """
    ts, is_fraud = comparison.ts, comparison.is_fraud
    start = comparison.config.start
    ends = np.arange(start + days * DAY, ts.max() + DAY, DAY)
    series: dict[str, np.ndarray] = {"day": (ends - start) / DAY}
    for run in comparison.runs:
        auc, ap = [], []
        for end in ends:
            window = (ts > end - days * DAY) & (ts <= end)
            auc.append(roc_auc(is_fraud[window], run.scores[window]))
            ap.append(average_precision(is_fraud[window], run.scores[window]))
        series[f"{run.name} auc"] = np.array(auc)
        series[f"{run.name} ap"] = np.array(ap)
    return series


# Report


def write_report(comparison: Comparison, out: Path, command: str) -> list[Path]:
    """Write ``README.md`` and the plots of ``comparison`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarize(comparison)
    figures = (
        _plot_quality(comparison),
        _plot_staleness(comparison),
        _plot_caught(comparison, summaries),
    )
    paths = []
    for name, figure in zip(PLOTS, figures, strict=True):
        figure.savefig(out / name, dpi=110)
        paths.append(out / name)
    readme = out / "README.md"
    readme.write_text(render_markdown(comparison, summaries, command))
    return [readme, *paths]


def render_markdown(comparison: Comparison, summaries: list[Summary], command: str) -> str:
    """The report: how it was made, the stream, the results and what they mean."""
    config = comparison.config
    streaming, batches = summaries[0], summaries[1:]
    names = " | ".join(s.name for s in summaries)
    rule = "|---" * (len(summaries) + 1) + "|"

    def row(label: str, cells: Sequence[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [
        "# Streaming vs batch fraud detection",
        "",
        f"Generated {datetime.now(tz=UTC):%Y-%m-%d %H:%M UTC} by `{command}` "
        f"in {comparison.seconds:.0f} s (one replay of the stream through all pipelines).",
        "",
        "## Stream",
        "",
        f"{_stream_source(config)}: seed {config.seed}, "
        f"{config.n_cards} cards, {config.n_merchants} merchants, {config.days:g} days, "
        f"{_fraud_share(config)}labels {config.label_delay_seconds / DAY:g} days after "
        f"each transaction. {comparison.ts.size} transactions, {int(comparison.is_fraud.sum())} frauds.",
        "",
        "## Pipelines",
        "",
        "* **streaming**: eddy's logic in process (`models/evaluation.py`). Each transaction's "
        "features include the transaction itself and every earlier one; the model learns from each "
        "label as it arrives.",
        "* **batch N h** (`app/comparison/batch.py`): a job every N hours of event time (at multiples "
        "of N h since the epoch; daily jobs at midnight UTC) updates the feature row of every card and "
        "merchant (the row of its latest transaction before the job, from the same feature functions) "
        "and the model (same `FraudModel`, same training records: every label received before the job, "
        "joined with the features its transaction was scored with; one pass in arrival order, which is "
        "what a retrain from scratch gives). Two flavours:",
        "  * *lookup*: each transaction is scored on arrival with the last job's rows and model plus "
        "its own amount, time of day and channel. Decision immediate, features stale: no transaction "
        "since the job, not the transaction itself, and the row's fields that relate a transaction to "
        "the card's history (amount vs usual, merchant or country seen before) describe the card's "
        "latest transaction before the job. All quality numbers of `batch N h` are this flavour.",
        "  * *scoring*: the next job decides. We credit it with the streaming score (point-in-time "
        "features that include the transaction, which a job can compute), so only the delay counts "
        "against it: an upper bound.",
        "",
        "## Results",
        "",
        f"| | {names} |",
        rule,
        row(
            "compute per decision, median / p99 (ms)",
            [f"{s.compute_ms_median:.3f} / {s.compute_ms_p99:.3f}" for s in summaries],
        ),
        row(
            "event → decision, scoring flavour, mean / median (h)",
            ["immediate"]
            + [f"{s.scoring_delay_hours_mean:.2f} / {s.scoring_delay_hours_median:.2f}" for s in batches],
        ),
        row(
            "feature staleness: ts - last job, median / p95 (h)",
            ["0 / 0"] + [f"{s.staleness_hours_median:.2f} / {s.staleness_hours_p95:.2f}" for s in batches],
        ),
        row(
            "card's own transactions of the previous hour missing, median / p95 (mean on frauds)",
            [
                f"{s.missing_1h_median:g} / {s.missing_1h_p95:g} ({s.missing_1h_fraud_mean:.2f})"
                for s in summaries
            ],
        ),
        row("ROC AUC, all / last 14 days", [f"{s.roc_auc:.3f} / {s.tail_roc_auc:.3f}" for s in summaries]),
        row(
            "average precision, all / last 14 days",
            [f"{s.average_precision:.3f} / {s.tail_average_precision:.3f}" for s in summaries],
        ),
        row(
            f"frauds scored ≥ {REVIEW_THRESHOLD:g} (caught; batch: lookup)",
            [f"{s.caught['all']:.1%}" for s in summaries],
        ),
        row(
            "frauds caught before the card's next transaction",
            [f"{streaming.caught['all']:.1%}"]
            + [f"{s.caught_before_next['all']:.1%} (scoring)" for s in batches],
        ),
        row(
            "batch jobs, total compute (s; each replays only what is new)",
            ["—"] + [f"{s.jobs}, {s.job_seconds:.1f}" for s in batches],
        ),
        "",
        _kind_table(comparison, summaries),
        "",
        "![Rolling quality](quality_over_time.png)",
        "",
        "![Staleness](staleness.png)",
        "",
        "![Caught per fraud kind](caught_by_kind.png)",
        "",
        "## Reading the numbers",
        "",
        *_interpretation(comparison, streaming, batches),
        "",
    ]
    return "\n".join(lines)


def _stream_source(config: TransactionStreamConfig | HandbookStreamConfig) -> str:
    if config.scenario == "handbook":
        return "Simulated card payments, handbook scenario (`app/simulation/handbook.py`)"
    return "Simulated card payments (`app/simulation/transactions.py`)"


def _fraud_share(config: TransactionStreamConfig | HandbookStreamConfig) -> str:
    """The configured fraud share, as the report states it (the handbook's follows from its scenarios)."""
    return f"fraud share {config.fraud_share:g}, " if isinstance(config, TransactionStreamConfig) else ""


def _kind_table(comparison: Comparison, summaries: list[Summary]) -> str:
    """Caught shares per fraud kind: immediate for streaming and lookup, in time for scoring."""
    streaming, batches = summaries[0], summaries[1:]
    header = ["fraud kind", "frauds", *(f"{s.name} caught" for s in summaries)]
    header += [f"{s.name} scoring, before next tx" for s in batches]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for kind in streaming.caught:
        count = (
            int(comparison.is_fraud.sum()) if kind == "all" else int((comparison.fraud_kind == kind).sum())
        )
        cells = [kind, str(count), *(f"{s.caught[kind]:.1%}" for s in summaries)]
        cells += [f"{s.caught_before_next[kind]:.1%}" for s in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interpretation(comparison: Comparison, streaming: Summary, batches: list[Summary]) -> list[str]:
    """Short reading of the results, numbers included."""

    def each(template: str) -> str:
        return ", ".join(template.format(s=s) for s in batches)

    delay_days = comparison.config.label_delay_seconds / DAY
    return [
        f"* **Event to decision.** Streaming decides in {streaming.compute_ms_median:.2f} ms of compute "
        "per transaction (median, in process; Kafka and RocksDB come on top, see `make bench`), "
        "features and traffic learning included. The lookup flavour needs "
        + each("{s.compute_ms_median:.2f} ms ({s.name})")
        + " but decides on stale rows; the scoring flavour waits for the next job: "
        + each("{s.scoring_delay_hours_mean:.1f} h on average ({s.name})")
        + ".",
        "* **Staleness.** Streaming features include the transaction itself. Batch rows are as old as "
        "the last job and miss every transaction since, so bursts (card testing, stolen cards) are "
        "invisible to the lookup until the next job: on frauds, the card's own transactions of the "
        "previous hour missing from its row average "
        + each("{s.missing_1h_fraud_mean:.2f} ({s.name})")
        + "; the median transaction misses "
        + each("{s.missing_1h_median:g} ({s.name})")
        + " (cards pay a few times a day).",
        f"* **Quality.** Average precision over the last {TAIL_DAYS:g} days, after the cold start: "
        f"streaming {streaming.tail_average_precision:.3f}, "
        + each("{s.name} {s.tail_average_precision:.3f}")
        + f"; ROC AUC {streaming.tail_roc_auc:.3f}, "
        + each("{s.tail_roc_auc:.3f}")
        + f". Over the whole stream AP is {streaming.average_precision:.3f}, "
        + each("{s.average_precision:.3f}")
        + f": that includes the cold start (no label before day {delay_days:g}, then the classifier's "
        "weight grows with the labelled frauds; until then the anomaly detector scores alone). Model "
        "family, training records and label delay are the same, so differences come from the "
        "freshness of features; the model lag of one job period is small next to the label delay.",
        f"* **In time.** Streaming flags {streaming.caught['all']:.1%} of frauds before the card is used "
        "again. Batch scoring, even credited with streaming-quality scores, flags "
        + each("{s.caught_before_next[all]:.1%} ({s.name})")
        + " before the card's next transaction; the lookup flavour is in time but flags "
        + each("{s.caught[all]:.1%} ({s.name})")
        + ".",
        "* **Caveats.** One simulated stream; compute measured in one process on a shared machine. The "
        "batch jobs here replay only what is new since the previous job; a job recomputing every row "
        "from the full history costs more. A card or merchant with no transaction before the last job "
        "has no row: its features are absent, which the model reads as average values.",
    ]


# Plots


def _plot_quality(comparison: Comparison) -> Figure:
    series = rolling_quality(comparison)
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, metric, title in zip(axes, ("auc", "ap"), ("ROC AUC", "average precision"), strict=True):
        for run, color in zip(comparison.runs, _COLORS, strict=False):
            ax.plot(series["day"], series[f"{run.name} {metric}"], label=run.name, color=color)
        ax.set_title(f"{title}, trailing {ROLLING_DAYS:g} days")
        ax.set_xlabel("day of the stream")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    axes[0].legend()
    return figure


def _plot_staleness(comparison: Comparison) -> Figure:
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    groups = [*fraud_kinds(comparison.config), "legitimate"]
    kinds = np.where(comparison.is_fraud, comparison.fraud_kind, "legitimate")
    batches = [(run.name, run.job_time) for run in comparison.runs if run.job_time is not None]
    width = 0.8 / max(len(batches), 1)
    for i, ((name, job_time), color) in enumerate(zip(batches, _COLORS[1:], strict=False)):
        staleness = np.sort((comparison.ts - job_time) / HOUR)
        left.plot(staleness, np.arange(1, staleness.size + 1) / staleness.size, label=name, color=color)
        missing = missing_last_hour(comparison.ts, comparison.card_id, job_time)
        means = [missing[kinds == group].mean() if (kinds == group).any() else 0.0 for group in groups]
        right.bar(np.arange(len(groups)) + i * width, means, width, label=name, color=color)
    left.axvline(0.0, color=_COLORS[0], label="streaming (0)")
    left.set_title("feature staleness: ts - last job")
    left.set_xlabel("hours")
    left.set_ylabel("share of transactions (cumulative)")
    left.grid(alpha=0.3)
    left.legend()
    right.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [g.replace("_", "\n") for g in groups])
    right.set_title("card's own tx of the previous hour missing (mean)")
    right.grid(alpha=0.3, axis="y")
    right.legend()
    return figure


def _plot_caught(comparison: Comparison, summaries: list[Summary]) -> Figure:
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    ax = figure.subplots()
    kinds = list(summaries[0].caught)
    colors = _COLORS * (1 + len(summaries) // len(_COLORS))
    bars = [(s.name, s.caught, colors[i], None) for i, s in enumerate(summaries)]
    bars += [
        (f"{s.name} scoring, before next tx", s.caught_before_next, colors[i], "//")
        for i, s in enumerate(summaries)
        if i
    ]
    width = 0.8 / len(bars)
    for i, (label, shares, color, hatch) in enumerate(bars):
        values = [shares[kind] for kind in kinds]
        ax.bar(
            np.arange(len(kinds)) + i * width,
            values,
            width,
            label=label,
            color=color,
            hatch=hatch,
            alpha=0.55 if hatch else 1.0,
        )
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, [k.replace("_", "\n") for k in kinds])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of frauds scored ≥ {REVIEW_THRESHOLD:g}")
    ax.set_title("frauds caught per kind")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return figure

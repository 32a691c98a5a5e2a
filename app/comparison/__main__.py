"""``python -m app.comparison``: replay one simulated stream through streaming and batch, write the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.comparison.report import DEFAULT_EVERY_HOURS, run_comparison, summarize, write_report
from app.simulation.transactions import SCENARIOS, stream_config
from tables.windows import DAY


def _command(args: argparse.Namespace) -> str:
    """The full command line that reproduces the run."""
    hours = " ".join(f"{h:g}" for h in args.every_hours)
    return (
        f"python -m app.comparison --out {args.out} --seed {args.seed} --cards {args.cards} "
        f"--merchants {args.merchants} --days {args.days:g} --label-delay-days {args.label_delay_days:g} "
        f"--every-hours {hours}" + (f" --scenario {args.scenario}" if args.scenario != "default" else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/comparison"), help="report directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cards", type=int, default=3_000)
    parser.add_argument("--merchants", type=int, default=None, help="default: 400 (handbook: twice --cards)")
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument(
        "--every-hours", type=float, nargs="+", default=list(DEFAULT_EVERY_HOURS), help="batch job periods"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="default", help="the stream's simulator")
    args = parser.parse_args(argv)
    if args.merchants is None:
        args.merchants = 2 * args.cards if args.scenario == "handbook" else 400
    config = stream_config(
        args.scenario,
        seed=args.seed,
        n_cards=args.cards,
        n_merchants=args.merchants,
        days=args.days,
        label_delay_seconds=args.label_delay_days * DAY,
    )
    comparison = run_comparison(config, args.every_hours)
    paths = write_report(comparison, args.out, _command(args))
    for summary in summarize(comparison):
        print(
            f"{summary.name}: AP {summary.average_precision:.3f} "
            f"(last 14 d {summary.tail_average_precision:.3f}), ROC AUC {summary.roc_auc:.3f}, "
            f"caught {summary.caught['all']:.1%}, "
            f"compute {summary.compute_ms_median:.3f} ms"
        )
    print(f"replay {comparison.seconds:.0f} s; wrote", ", ".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

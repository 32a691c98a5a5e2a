"""``python -m benchmarks.floors``: the floors alone, on a running broker (``make bench`` runs them too)."""

from __future__ import annotations

import argparse
import dataclasses

from benchmarks.floors import FLOORS, markdown, measure_all
from broker import LocalKafka


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=LocalKafka.from_env().bootstrap)
    parser.add_argument("--events", type=int, default=30_000, help="backlog of each floor run")
    parser.add_argument("--only", nargs="+", default=[], help="floors whose name contains one of these")
    parser.add_argument("--modes", nargs="+", default=[], help="only these modes (noop, send, table, both)")
    parser.add_argument("--eddy-tx-per-second", type=float, default=float("nan"), help="for the ratio column")
    args = parser.parse_args(argv)
    floors = [
        dataclasses.replace(floor, modes=tuple(m for m in floor.modes if not args.modes or m in args.modes))
        for floor in FLOORS
        if not args.only or any(word.lower() in floor.name.lower() for word in args.only)
    ]
    results = measure_all(args.bootstrap, args.events, floors)
    print("\n".join(markdown(results, args.eddy_tx_per_second, args.events)))


if __name__ == "__main__":
    main()

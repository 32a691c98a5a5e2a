"""Command line: ``python -m broker {fetch,start,stop,status}``."""

from __future__ import annotations

import argparse
import sys

from broker.local_kafka import LocalKafka


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the broker")
    args = parser.parse_args(argv)
    kafka = LocalKafka.from_env()

    if args.command == "fetch":
        kafka.fetch()
    elif args.command == "start":
        started = kafka.start(timeout=args.timeout)
        verb = "started" if started else "already answering"
        print(f"kafka {verb} on {kafka.bootstrap} (data and logs in {kafka.home})")
    elif args.command == "stop":
        stopped = kafka.stop()
        print("kafka stopped" if stopped else "kafka was not running (no live pid file)")
    elif args.command == "status":
        up = kafka.answers()
        print(f"kafka on {kafka.bootstrap}: {'up' if up else 'down'}")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

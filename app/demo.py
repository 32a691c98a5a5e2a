"""``make run``: a local broker, one worker and a demo feed; Ctrl-C stops all it started.

Run as ``python -m app.demo``.  With ``KAFKA_BROKER`` set, that cluster is used
and no broker is started.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from app.settings import settings
from app.simulation.producer import ensure_topics, produce_events
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.worker_process import start_worker, stop_worker
from broker import LocalKafka

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKDIR = PROJECT_ROOT / ".eddy" / "workers" / "demo"
FEED_RATE = float(os.environ.get("EDDY_DEMO_RATE", "200"))


def _banner(bootstrap: str) -> None:
    names = ", ".join(settings.topic_name(t) for t in ("fraud-decisions", "dead-letters", "transactions"))
    url = f"http://{settings.web_host}:{settings.web_port}"
    print(
        f"\neddy is running against {bootstrap}\n"
        f"  worker log : {WORKDIR / 'worker.log'}\n"
        f"  web        : {url}/  {url}/fraud/model/  {url}/fraud/cards/card-0001/\n"
        f"  topics     : {names}\n"
        f"  watch      : .venv/bin/faust -A app tail fraud-decisions --from-end\n"
        f"  feed       : simulated card transactions at {FEED_RATE:.0f} events/s\n"
        "Ctrl-C stops the feed, the worker and the broker this command started.\n",
        flush=True,
    )


async def _feed(bootstrap: str) -> None:
    await ensure_topics(
        bootstrap,
        [settings.topic_name("transactions"), settings.topic_name("fraud-labels")],
        settings.topic_partitions,
    )
    stream = generate_transaction_stream(TransactionStreamConfig(seed=7, n_cards=2_000, days=90))
    await produce_events(stream, bootstrap, topic_prefix=settings.topic_prefix, rate=FEED_RATE, progress=True)


def main() -> int:
    kafka = None if os.environ.get("KAFKA_BROKER") else LocalKafka.from_env()
    started_kafka = kafka.start() if kafka else False
    bootstrap = kafka.bootstrap if kafka else settings.kafka_bootstrap
    worker = start_worker(
        WORKDIR, web_port=settings.web_port, web_host=settings.web_host, log_level=settings.log_level
    )
    try:
        _banner(bootstrap)
        asyncio.run(_feed(bootstrap))
        print("demo feed finished; the worker keeps running until Ctrl-C", flush=True)
        worker.wait()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop_worker(worker)
        if started_kafka and kafka:
            kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

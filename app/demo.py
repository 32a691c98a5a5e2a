"""``make run``: a local broker, one worker and demo feeds of all three pipelines.

Ctrl-C stops all it started.

Run as ``python -m app.demo``.  With ``KAFKA_BROKER`` set, that cluster is used
and no broker is started.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from app.settings import settings
from app.simulation.clicks import ClickStreamConfig, generate_click_stream
from app.simulation.producer import ensure_topics, produce_events
from app.simulation.sensors import SensorStreamConfig, generate_sensor_stream
from app.simulation.transactions import TransactionStreamConfig, generate_transaction_stream
from app.worker_process import start_worker, stop_worker
from broker import LocalKafka

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKDIR = PROJECT_ROOT / ".eddy" / "workers" / "demo"
FEED_RATE = float(os.environ.get("EDDY_DEMO_RATE", "200"))


def _banner(bootstrap: str) -> None:
    outputs = ("fraud-decisions", "recommendations", "alerts", "dead-letters")
    names = ", ".join(settings.topic_name(t) for t in outputs)
    url = f"http://{settings.web_host}:{settings.web_port}"
    print(
        f"\neddy is running against {bootstrap}\n"
        f"  worker log : {WORKDIR / 'worker.log'}\n"
        f"  fraud      : {url}/fraud/model/  {url}/fraud/cards/card-0001/\n"
        f"  reco       : {url}/recommendations/user-0001/?k=10  {url}/reco/state/\n"
        f"  alerts     : {url}/devices/dev-001/  {url}/alerts/state/\n"
        f"  outputs    : {names}\n"
        f"  watch      : .venv/bin/faust -A app tail alerts --from-end  (any output topic)\n"
        f"  feeds      : transactions {FEED_RATE:.0f}/s; clicks, sensor readings {FEED_RATE / 2:.0f}/s each\n"
        "Ctrl-C stops the feeds, the worker and the broker this command started.\n",
        flush=True,
    )


async def _feed(bootstrap: str) -> None:
    inputs = ("transactions", "fraud-labels", "clicks", "sensor-readings")
    await ensure_topics(bootstrap, [settings.topic_name(t) for t in inputs], settings.topic_partitions)
    streams = [
        (generate_transaction_stream(TransactionStreamConfig(seed=7, n_cards=2_000, days=90)), FEED_RATE),
        (generate_click_stream(ClickStreamConfig(seed=7, n_users=2_000, days=30)), FEED_RATE / 2),
        (generate_sensor_stream(SensorStreamConfig(seed=7, n_devices=100, days=30)), FEED_RATE / 2),
    ]
    await asyncio.gather(
        *(
            produce_events(stream, bootstrap, topic_prefix=settings.topic_prefix, rate=rate, progress=i == 0)
            for i, (stream, rate) in enumerate(streams)
        )
    )


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
        print("demo feeds finished; the worker keeps running until Ctrl-C", flush=True)
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

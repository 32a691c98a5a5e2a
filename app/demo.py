"""``make run``: a local broker, one worker and demo feeds of all three pipelines.

Ctrl-C stops all it started.

Run as ``python -m app.demo``.  With ``KAFKA_BROKER`` set, that cluster is used
and no broker is started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

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


async def _cluster_id(bootstrap: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()


def forget_tables_of_another_cluster(workdir: Path, cluster_id: str) -> bool:
    """Delete the worker's table state in ``workdir`` if it was built against another Kafka cluster.

    Tables are kept in step with their changelogs; against a new cluster (the local broker's
    data was deleted, say) the stored state is ahead of changelogs that no longer hold it,
    and faust's recovery stops the worker (``ConsistencyError``).  Returns whether it deleted.
    """
    marker = workdir / "cluster-id"
    # State without a note of its cluster predates the note: its cluster is unknown.
    stale = (workdir / "data").exists() and (not marker.exists() or marker.read_text() != cluster_id)
    if stale:
        shutil.rmtree(workdir / "data", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(cluster_id)
    return stale


def main() -> int:
    kafka = None if os.environ.get("KAFKA_BROKER") else LocalKafka.from_env()
    started_kafka = kafka.start() if kafka else False
    bootstrap = kafka.bootstrap if kafka else settings.kafka_bootstrap
    if forget_tables_of_another_cluster(WORKDIR, asyncio.run(_cluster_id(bootstrap))):
        print("a new Kafka cluster: the demo worker's tables from an earlier run were deleted", flush=True)
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

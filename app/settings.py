"""Settings read once from environment variables, with defaults for a laptop.

Every variable is listed in the README's configuration table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What a worker needs to know about its environment.

    >>> Settings.from_env({"EDDY_TOPIC_PARTITIONS": "4"}).topic_partitions
    4
    """

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "eddy"
    store: str = "rocksdb://"
    rocksdb_memory_mb: int = 256
    rocksdb_write_buffer_mb: int = 8
    topic_prefix: str = ""
    topic_partitions: int = 8
    processing_guarantee: str = "at_least_once"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_token: str | None = None
    log_level: str = "info"
    session_timeout_s: float = 15.0
    standby_replicas: int = 0
    fetch_max_wait_ms: int = 50
    fetch_partition_bytes: int = 256 * 1024
    training_fetch_bytes: int = 16 * 2**20
    fraud_review_threshold: float = 0.5
    fraud_block_threshold: float = 0.85
    fraud_label_ttl_days: float = 35.0
    fraud_snapshot_every: int = 2_000
    fraud_legit_sample_rate: float = 0.25
    reco_snapshot_every: int = 500
    reco_ranking_helper: bool = True
    learner_process: bool = True
    direct_handover: bool = True
    sweep_interval_s: float = 300.0
    gc_young_threshold: int = 10_000
    gc_freeze_survivors: bool = False
    gc_thaw_interval_s: float = 600.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default: object) -> str:
            return env.get(name, str(default))

        return cls(
            broker=get("KAFKA_BROKER", defaults.broker),
            app_id=get("EDDY_APP_ID", defaults.app_id),
            store=get("EDDY_STORE", defaults.store),
            rocksdb_memory_mb=int(get("EDDY_ROCKSDB_MEMORY_MB", defaults.rocksdb_memory_mb)),
            rocksdb_write_buffer_mb=int(
                get("EDDY_ROCKSDB_WRITE_BUFFER_MB", defaults.rocksdb_write_buffer_mb)
            ),
            topic_prefix=get("EDDY_TOPIC_PREFIX", defaults.topic_prefix),
            topic_partitions=int(get("EDDY_TOPIC_PARTITIONS", defaults.topic_partitions)),
            processing_guarantee=get("EDDY_PROCESSING_GUARANTEE", defaults.processing_guarantee),
            web_host=get("EDDY_WEB_HOST", defaults.web_host),
            web_port=int(get("EDDY_WEB_PORT", defaults.web_port)),
            web_token=env.get("EDDY_WEB_TOKEN") or None,
            log_level=get("EDDY_LOG_LEVEL", defaults.log_level),
            session_timeout_s=float(get("EDDY_SESSION_TIMEOUT_S", defaults.session_timeout_s)),
            standby_replicas=int(get("EDDY_STANDBY_REPLICAS", defaults.standby_replicas)),
            fetch_max_wait_ms=int(get("EDDY_FETCH_MAX_WAIT_MS", defaults.fetch_max_wait_ms)),
            fetch_partition_bytes=int(get("EDDY_FETCH_PARTITION_BYTES", defaults.fetch_partition_bytes)),
            training_fetch_bytes=int(get("EDDY_TRAINING_FETCH_BYTES", defaults.training_fetch_bytes)),
            fraud_review_threshold=float(get("EDDY_FRAUD_REVIEW_THRESHOLD", defaults.fraud_review_threshold)),
            fraud_block_threshold=float(get("EDDY_FRAUD_BLOCK_THRESHOLD", defaults.fraud_block_threshold)),
            fraud_label_ttl_days=float(get("EDDY_FRAUD_LABEL_TTL_DAYS", defaults.fraud_label_ttl_days)),
            fraud_snapshot_every=int(get("EDDY_FRAUD_SNAPSHOT_EVERY", defaults.fraud_snapshot_every)),
            fraud_legit_sample_rate=float(
                get("EDDY_FRAUD_LEGIT_SAMPLE_RATE", defaults.fraud_legit_sample_rate)
            ),
            reco_snapshot_every=int(get("EDDY_RECO_SNAPSHOT_EVERY", defaults.reco_snapshot_every)),
            # A helper process pays on a second core; on one it only adds its hand-over.
            reco_ranking_helper=get("EDDY_RECO_RANKING_HELPER", int((os.cpu_count() or 1) > 1)).lower()
            in ("1", "true", "yes"),
            learner_process=get("EDDY_LEARNER_PROCESS", int((os.cpu_count() or 1) > 1)).lower()
            in ("1", "true", "yes"),
            direct_handover=get("EDDY_DIRECT_HANDOVER", "1").lower() in ("1", "true", "yes"),
            # EDDY_FRAUD_SWEEP_INTERVAL_S: its name before the sweep served every pipeline.
            sweep_interval_s=float(
                get("EDDY_SWEEP_INTERVAL_S", get("EDDY_FRAUD_SWEEP_INTERVAL_S", defaults.sweep_interval_s))
            ),
            gc_young_threshold=int(get("EDDY_GC_YOUNG_THRESHOLD", defaults.gc_young_threshold)),
            gc_freeze_survivors=get("EDDY_GC_FREEZE_SURVIVORS", "0").lower() in ("1", "true", "yes"),
            gc_thaw_interval_s=float(get("EDDY_GC_THAW_INTERVAL_S", defaults.gc_thaw_interval_s)),
        )

    def topic_name(self, name: str) -> str:
        """The Kafka name of one of eddy's topics: ``name`` behind the configured prefix.

        >>> Settings(topic_prefix="staging.").topic_name("transactions")
        'staging.transactions'
        """
        return f"{self.topic_prefix}{name}"

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port[,host:port]`` for plain Kafka clients (``KAFKA_BROKER`` without scheme).

        >>> Settings(broker="kafka://a:9092;kafka://b:9092").kafka_bootstrap
        'a:9092,b:9092'
        """
        return ",".join(url.split("://", 1)[-1] for url in self.broker.replace(";", ",").split(","))

    @property
    def table_options(self) -> dict[str, object]:
        """Options for every RocksDB-backed table: the rocksdict driver and the memtable size.

        Faust opens one RocksDB per table partition (active and standby), each with its own
        block cache and memtables by default: a worker's RocksDB memory grew with tables x
        partitions (to about 1 GB of RSS in the soak, still rising).  The worker's stores
        share one budget instead, ``rocksdb_memory_mb`` (``app.faust_fixes``,
        :func:`~app.faust_fixes.shared_rocksdb_memory`); ``write_buffer_size`` is when one
        store's memtable is flushed.

        >>> Settings(rocksdb_write_buffer_mb=8).table_options["write_buffer_size"]
        8388608
        """
        if not self.store.startswith("rocksdb:"):
            return {}
        # A fresh dict per table: Faust's RocksDB store pops keys out of the dict it is given.
        return {
            "driver": "rocksdict",
            "write_buffer_size": self.rocksdb_write_buffer_mb * 2**20,
            "max_write_buffer_number": 2,
        }


settings = Settings.from_env()

import asyncio

from app.faust_app import declare_until_done


class FlakyTopic:
    """A topic whose declaration fails while the broker is away."""

    topics = ("decisions",)

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.declared = 0

    async def maybe_declare(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Connection at 127.0.0.1:9092 closed")
        self.declared += 1


async def test_a_topic_whose_declaration_fails_is_declared_once_the_broker_answers(caplog):
    topic = FlakyTopic(failures=3)
    await asyncio.wait_for(declare_until_done(topic, max_delay=0.01), 5)
    assert topic.declared == 1
    assert caplog.text.count("declaring ('decisions',) failed") == 3


def test_a_topic_missing_from_metadata_is_a_warning_once_a_minute_and_other_client_errors_stay_errors(caplog):
    import logging

    from app.faust_app import MissingTopicWarnings

    assert any(isinstance(f, MissingTopicWarnings) for f in logging.getLogger("aiokafka.cluster").filters)
    cluster_log = logging.getLogger("aiokafka.cluster.test")  # a fresh filter, not the app's
    cluster_log.addFilter(MissingTopicWarnings(every=60.0))
    missing = "Topic %s not found in cluster metadata"

    def log_at(created: float, level: int, message: str, topic: str) -> None:
        record = cluster_log.makeRecord(cluster_log.name, level, __file__, 0, message, (topic,), None)
        record.created = created
        cluster_log.handle(record)

    with caplog.at_level(logging.INFO, logger="aiokafka.cluster.test"):
        for created in (0.0, 0.1, 0.2, 59.9):
            log_at(created, logging.ERROR, missing, "eddy-x-changelog")
        log_at(0.3, logging.ERROR, missing, "eddy-y-changelog")
        log_at(60.0, logging.ERROR, missing, "eddy-x-changelog")
        log_at(0.4, logging.ERROR, "Topic %s is not authorized for this client", "secret")
    assert [(r.levelname, r.created, r.getMessage()) for r in caplog.records] == [
        ("WARNING", 0.0, "Topic eddy-x-changelog not found in cluster metadata"),
        ("WARNING", 0.3, "Topic eddy-y-changelog not found in cluster metadata"),
        ("WARNING", 60.0, "Topic eddy-x-changelog not found in cluster metadata"),
        ("ERROR", 0.4, "Topic secret is not authorized for this client"),
    ]


async def test_the_worker_consumer_fetches_at_most_the_configured_bytes_per_partition():
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from app.faust_app import app
    from app.settings import Settings, settings

    consumer = AIOKafkaConsumerThread(app.consumer)._create_worker_consumer(app.transport)
    assert consumer._max_partition_fetch_bytes == settings.fetch_partition_bytes
    # Below faust's 1 MiB: a backlog's first fetch must not hold every input's turn for ever.
    assert Settings().fetch_partition_bytes == 256 * 1024 < 1024**2
    assert Settings.from_env({"EDDY_FETCH_PARTITION_BYTES": "65536"}).fetch_partition_bytes == 65536

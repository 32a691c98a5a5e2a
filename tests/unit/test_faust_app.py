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


def test_a_topic_missing_from_metadata_is_a_warning_and_other_client_errors_stay_errors(caplog):
    import logging

    from app.faust_app import TopicsAppearingAsWarnings

    cluster_log = logging.getLogger("aiokafka.cluster")
    assert any(isinstance(f, TopicsAppearingAsWarnings) for f in cluster_log.filters)
    with caplog.at_level(logging.INFO, logger="aiokafka.cluster"):
        cluster_log.error("Topic %s not found in cluster metadata", "eddy-x-changelog")
        cluster_log.error("Topic %s is not authorized for this client", "secret")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Topic eddy-x-changelog not found in cluster metadata"),
        ("ERROR", "Topic secret is not authorized for this client"),
    ]

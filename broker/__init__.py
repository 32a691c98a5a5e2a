"""A single-node Apache Kafka broker (KRaft) that the project fetches and runs itself.

Only the standard library is used, so the broker can be managed before the
project's virtualenv exists.  See ``python -m broker --help``.
"""

from broker.local_kafka import LocalKafka, local_kafka, metadata_answers

__all__ = ["LocalKafka", "local_kafka", "metadata_answers"]

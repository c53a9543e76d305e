"""The maker of Herald's Kafka clients (a cluster node's, a :class:`KafkaSource`'s, a :class:`KafkaProducer`'s):
a dependency, so a test can hand them clients that fail."""

from __future__ import annotations

from typing import Any

__all__ = ["KafkaClients"]


class KafkaClients:
    """Makes producers and consumers (confluent-kafka's). Pass another to :class:`engine.host.Herald`
    (``kafka=``), :class:`engine.kafka.KafkaSource` or :class:`engine.kafka.KafkaProducer` (``clients=``)
    to wrap them, e.g. with a producer that reports a fatal error."""

    def producer(self, settings: dict[str, Any]) -> Any:
        import confluent_kafka

        return confluent_kafka.Producer(settings)

    def consumer(self, settings: dict[str, Any]) -> Any:
        import confluent_kafka

        return confluent_kafka.Consumer(settings)

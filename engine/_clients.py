"""The maker of a cluster node's Kafka clients: a dependency, so a test can hand a node clients that fail."""

from __future__ import annotations

from typing import Any

from ._kafka import _kafka

__all__ = ["KafkaClients"]


class KafkaClients:
    """Makes the producers and consumers of a cluster node (confluent-kafka's). Pass another to
    :class:`engine.host.Herald` (``kafka=``) to wrap them, e.g. with a producer that reports a fatal error."""

    def producer(self, settings: dict[str, Any]) -> Any:
        return _kafka().Producer(settings)

    def consumer(self, settings: dict[str, Any]) -> Any:
        return _kafka().Consumer(settings)

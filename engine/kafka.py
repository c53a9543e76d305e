"""Kafka at Herald's edges, for plugins that consume topics or produce to them.

- :class:`KafkaSource` consumes topics in a consumer group and hands each
  batch to the plugin's ``decode``; the events are accepted (journaled)
  before the offsets are committed, so a crash re-delivers and never loses,
  and :func:`kafka_event_id` gives each message an id deduplication
  recognises. A message ``decode`` refuses (it raises :class:`Refused`) goes
  to ``<topic>.dlq`` with the reason in a header.
- :class:`KafkaProducer` is an idempotent producer (``acks=all``): order per
  key holds and retries never duplicate.
- :func:`ensure_topics` creates topics that do not exist yet.
- A source whose consumer fails fatally ends with :class:`SourceFailed`, and
  Herald starts it again with a new consumer; :class:`KafkaClients` makes the
  clients (pass another, ``clients=``, to wrap them in tests).

Each builds its client from Herald's Kafka settings (``HERALD_KAFKA_CONFIG``
and the other ``HERALD_KAFKA_*`` variables: TLS, SASL, replication), given as
the ``engine.Config`` at hand; Herald's own guarantees win over the file's
keys. confluent-kafka is imported only when one is used. Part of the plugin API
(:data:`engine.API_VERSION`), kept apart because most plugins never need it.
"""

from ._clients import KafkaClients
from ._kafka import KafkaProducer, KafkaSource, Refused, SourceFailed, ensure_topics, kafka_event_id

__all__ = ["KafkaClients", "KafkaProducer", "KafkaSource", "Refused", "SourceFailed", "ensure_topics", "kafka_event_id"]

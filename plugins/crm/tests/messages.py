"""A Kafka message as :func:`plugins.crm.contracts.decode` reads one, without a broker."""

from __future__ import annotations

#: The stream's first instant (2023-06-01T06:00:00Z), in milliseconds: a message's time is this plus its offset.
START_MS = 1685599200000


class Message:
    """The parts of a confluent-kafka message that decoding reads; partition 0, appended at
    :data:`START_MS` plus ``offset`` milliseconds."""

    def __init__(self, topic: str, value: bytes, offset: int = 7) -> None:
        self._topic, self._value, self._offset = topic, value, offset

    def topic(self) -> str: return self._topic
    def value(self) -> bytes: return self._value
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._offset
    def timestamp(self) -> tuple[int, int]: return (1, START_MS + self._offset)

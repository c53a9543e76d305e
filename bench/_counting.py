"""A Herald plugin for benchmarks: count each user's events, publish every new count to Kafka.

The job of ``bench.peers`` written as Herald would have a user write it: a
pure handler ``(count, event) -> (count + 1, [Counted])``, and a sink that
produces each ``Counted`` to the output topic keyed by user. The sink is
flushed before every checkpoint of the cluster, like Quix's producer before
its commit.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine import Config, Context, EventType, hookimpl
from engine.kafka import KafkaProducer

#: Settings: HERALD_COUNTING_BOOTSTRAP and HERALD_COUNTING_TOPIC.
PLUGIN = "counting"


@attrs.frozen(slots=True)
class Counted:
    """A user's count went up."""

    key: str
    count: int


@attrs.frozen(slots=True)
class Count:
    """A user's state: how many events they sent."""

    n: int = 0


def count(state: Count, event: Any) -> tuple[Count, tuple[Counted, ...]]:
    n = state.n + 1
    return Count(n), (Counted(event.key, n),)


class CountSink:
    """Produces each ``Counted`` to the output topic (``flush`` waits for the broker)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap, **{"linger.ms": 5})

    def put(self, effect: Counted) -> None:
        self.producer.produce(self.topic, effect.key.encode(), b"%d" % effect.count)

    async def flush(self) -> None:
        await self.producer.flush(60)


@hookimpl
def herald_state_type() -> type:
    return Count


@hookimpl
def herald_event_types(config: Config) -> list[EventType]:
    return [EventType(t, count, description="counted") for t in
            ("app_launch", "training_program_started", "training_program_finished", "screen_view")]


@hookimpl
def herald_effect_sinks(context: Context) -> dict[type, Any]:
    config = context.config
    sink = context.part(PLUGIN, lambda: CountSink(config.plugin_setting(PLUGIN, "bootstrap", ""),
                                                  config.plugin_setting(PLUGIN, "topic", "counts")))
    return {Counted: sink}

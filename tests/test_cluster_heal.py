"""A cluster node meeting a fatal Kafka error or waking from a stall, without a broker: it gives up its
partitions at once (nothing more applied, checkpointed or delivered for them), announces none, refuses
with the reason, and after too many faults in a row ends the process with one line."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import trio

from engine import Config, Notify
from engine.host import Herald, PluginHost
from engine._cluster import Shard, is_fatal
from plugins.fitness import hooks as fitness


class _Recording:
    """A producer that records what it is given and acknowledges it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = 0, on_delivery: Any = None,
                headers: Any = None) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class _Message:
    def __init__(self, partition: int, offset: int, value: bytes | None) -> None:
        self._p, self._o, self._v = partition, offset, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_614_585_600_000


def node(**settings: Any) -> tuple[Herald, Any, list[str]]:
    config = Config(cluster="127.0.0.1:1", durability="memory", cluster_replicas=False, **settings)
    ended: list[str] = []
    herald = Herald(config, PluginHost.from_objects(config, [fitness]), give_up=ended.append)
    cluster = herald.cluster
    herald.status, herald.ready = "ready", True
    cluster._token = trio.lowlevel.current_trio_token()
    cluster._producer = cluster._changelog = _Recording()
    return herald, cluster, ended


def owning(cluster: Any, *partitions: int) -> dict[int, Shard]:
    for p in partitions:
        shard = Shard(cluster, p)
        shard.ready = shard.dirty = True
        cluster.shards[p] = shard
    return dict(cluster.shards)


def fatal(name: str) -> Any:
    from confluent_kafka import KafkaError

    return KafkaError(getattr(KafkaError, name), "injected", fatal=name == "_FATAL")


@pytest.mark.parametrize("name", ["_FATAL", "_FENCED", "PRODUCER_FENCED", "UNKNOWN_PRODUCER_ID",
                                  "OUT_OF_ORDER_SEQUENCE_NUMBER", "_MAX_POLL_EXCEEDED", "_AUTHENTICATION"])
def test_the_errors_a_client_cannot_go_on_after_are_fatal(name):
    assert is_fatal(fatal(name))


def test_errors_a_client_rides_out_are_not_fatal():
    from confluent_kafka import KafkaError

    assert not is_fatal(KafkaError(KafkaError._MSG_TIMED_OUT)) and not is_fatal(KafkaError(KafkaError._TRANSPORT))


async def test_a_fatal_error_gives_up_every_partition_at_once_and_refuses_with_the_reason():
    herald, cluster, ended = node()
    shards = owning(cluster, 0, 3)
    effect = Notify(url="http://receiver.test/", payload={}, idempotency_key="k1")
    shards[3].pending["k1"] = effect
    cluster.pending_of["k1"] = shards[3]
    assert cluster.claims(effect) and cluster.refusal() is None
    producer = cluster._producer
    cluster._fault("the producer failed: PRODUCER_FENCED", cluster._epoch)

    assert cluster.shards == {} and not cluster.singletons.is_set()
    assert not cluster.claims(effect)  # the outbox drops it: the new owner delivers it
    refusal = herald.refusal()
    assert refusal.code == "healing" and "PRODUCER_FENCED" in refusal.reason
    announced = orjson.loads([v for t, v in producer.sent if t == cluster.nodes_topic][-1])
    assert announced["partitions"] == []
    # The failed producer is retired: nothing more is produced on it (the heal drops it).
    assert cluster._producer is None and producer in cluster._retired
    # A checkpoint of a partition given up writes nothing; a message of it is not applied.
    sent = len(producer.sent)
    await cluster.checkpoint(shards[0])
    assert len(producer.sent) == sent and shards[0].dirty
    cluster._apply([_Message(0, 0, None)])
    assert shards[0].offset == 0
    # What the failed clients say afterwards changes nothing (an older generation's last words).
    cluster._fault("the consumer failed: late", cluster._epoch - 1)
    assert cluster._healing.reason == "the producer failed: PRODUCER_FENCED" and not ended


async def test_a_node_woken_from_a_stall_applies_nothing_and_heals():
    herald, cluster, ended = node()
    shards = owning(cluster, 1)
    producer = cluster._producer
    cluster._alive_at = time.monotonic() - 5 * cluster._stall_after  # the stall watch has not run since
    assert herald.refusal().code == "healing"
    cluster._apply([_Message(1, 0, None)])  # what the consumer fetched before the stall
    assert shards[1].offset == 0 and cluster.shards == {}
    assert "stopped for" in cluster._healing.reason
    cluster._tick(shards[1])
    assert not [t for t, _ in producer.sent if t == cluster.events_topic]  # no tick either


async def test_faults_in_a_row_end_the_process_with_one_line():
    herald, cluster, ended = node(cluster_heal_attempts=2)
    for attempt in range(3):
        cluster._fault("the producer failed: SASL authentication error", cluster._epoch)
    assert len(ended) == 1 and "\n" not in ended[0] and "3 times in a row" in ended[0]
    assert herald.refusal().code == "cluster_failed"


async def test_a_fault_long_after_a_heal_starts_the_count_again():
    herald, cluster, ended = node(cluster_heal_attempts=1)
    cluster._fault("fenced", cluster._epoch)
    cluster._healed("test")
    cluster._healed_at -= 60  # a minute of good health later
    cluster._fault("fenced", cluster._epoch)
    assert not ended and cluster.heals == 1

"""Faults a cluster node heals from, driven for sure: a fatal producer or consumer error injected through
the node's client factory (in process, on a real broker), and real processes stopped (SIGSTOP), a
paused broker, and a node whose network link is cut (in network namespaces this test makes).

Each checks what a client relies on: nothing acknowledged is lost, nothing is applied twice (every
user's view equals a single engine's fed the same events), every notification key is delivered with
one body, the faulted node answers 503 while it cannot accept and 200 soon after, and accepts again.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import httpx
import pytest
import trio

from engine import Config, Herald, PluginHost
from engine._clients import KafkaClients
from plugins.fitness import hooks as fitness
from tests.test_cluster import SETTINGS, comparable, expected_run, user_events

pytestmark = pytest.mark.kafka


class _FencedProducer:
    """A real producer that, once fenced, reports PRODUCER_FENCED for every event it delivers (as a
    producer the broker fenced does: it never recovers by itself)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.fenced = False

    def produce(self, topic: str, value: Any = None, on_delivery: Any = None, **kwargs: Any) -> None:
        if self.fenced and on_delivery is not None and topic.endswith(".events"):
            from confluent_kafka import KafkaError

            callback = on_delivery

            def on_delivery(error: Any, message: Any) -> None:  # noqa: F811 - the fenced report
                callback(KafkaError(KafkaError.PRODUCER_FENCED, "injected: the producer's epoch is fenced"), message)
        self.real.produce(topic, value=value, on_delivery=on_delivery, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FaultyClients(KafkaClients):
    """Real clients, each of which a test can make fail: the latest producer fenced, or the group
    consumer's error callback told of a fatal error (what librdkafka does)."""

    def __init__(self) -> None:
        self.producers: list[_FencedProducer] = []
        self.group_settings: list[dict[str, Any]] = []

    def producer(self, settings: dict[str, Any]) -> Any:
        producer = _FencedProducer(super().producer(settings))
        self.producers.append(producer)
        return producer

    def consumer(self, settings: dict[str, Any]) -> Any:
        if "error_cb" in settings:  # the group's consumer
            self.group_settings.append(settings)
        return super().consumer(settings)

    def fence_producer(self) -> None:
        self.producers[-2].fenced = True  # the events producer (the last one made is the changelog's)

    def fail_consumer(self) -> None:
        from confluent_kafka import KafkaError

        self.group_settings[-1]["error_cb"](KafkaError(KafkaError._FATAL, "injected: a fatal consumer error",
                                                       fatal=True))


async def owning_everything(herald: Herald, partitions: int) -> None:
    cluster = herald.cluster
    with trio.fail_after(60):
        while len(cluster.shards) < partitions or not all(s.ready for s in cluster.shards.values()) \
                or cluster.refusal() is not None:
            await trio.sleep(0.05)


@pytest.mark.parametrize("fault", ["producer", "consumer"])
async def test_a_fatal_client_error_heals_the_node_and_loses_nothing(kafka_bootstrap, fault, caplog):
    from server import create_app

    caplog.set_level(logging.INFO, logger="herald.cluster")
    rng = random.Random(25)
    users = [f"user{u}" for u in range(60)]
    per_user = [user_events(u, rng) for u in range(60)]
    ordered = [e for step in range(10) for events in per_user for e in events[step:step + 1]]
    batches = [ordered[i:i + 50] for i in range(0, len(ordered), 50)]
    expected, _ = await expected_run(ordered, users)

    clients, ended = FaultyClients(), []
    config = Config(cluster=kafka_bootstrap, durability="memory", allowed_lateness=float(SETTINGS["HERALD_ALLOWED_LATENESS"]),
                    cluster_partitions=3)
    herald = Herald(config, PluginHost.from_objects(config, [fitness]), kafka=clients, give_up=ended.append)
    async with herald.running():
        await herald.wait_ready()
        await owning_everything(herald, 3)
        transport = httpx.ASGITransport(app=create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            half = len(batches) // 2
            for batch in batches[:half]:
                assert (await client.post("/v1/events", json=batch)).status_code == 202
            if fault == "producer":
                clients.fence_producer()
                refused = await client.post("/v1/events", json=batches[half])  # reaches the broker, reported fenced
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "healing", refused.text
            else:
                clients.fail_consumer()  # (librdkafka calls it from its own thread: the node hears it soon)
                with trio.fail_after(1):
                    while herald.refusal() is None:
                        await trio.sleep(0)
            health = await client.get("/healthz")
            started = time.monotonic()
            assert health.status_code == 503 and health.json()["status"] in ("healing", "restoring"), health.text
            assert "injected" in health.json()["refusal"]["reason"]
            assert herald.cluster.shards == {}  # given up at once
            with trio.fail_after(10):
                while (await client.get("/healthz")).status_code != 200:
                    await trio.sleep(0.02)
            healed = time.monotonic() - started
            for batch in batches[half:]:  # the refused batch again (same ids), then the rest
                answer = await client.post("/v1/events", json=batch)
                assert answer.status_code == 202, answer.text
            print(f"\n{fault} fault: healed (200 on /healthz, then accepting) in {healed:.2f} s")
            await owning_everything(herald, 3)
            # Every user as a single engine holds them: nothing acknowledged lost, nothing applied twice.
            mismatched: list[str] = users
            with trio.move_on_after(30):
                while mismatched:
                    await trio.sleep(0.1)
                    mismatched = [key for key in users if comparable(
                        (await client.get(f"/v1/actors/{key}")).json()) != comparable(expected[key])]
            assert not mismatched, f"{len(mismatched)} users differ"
            assert herald.cluster.heals == 1 and not ended
    messages = [r.getMessage() for r in caplog.records if r.name == "herald.cluster"]
    assert sum(m.startswith("healing: ") for m in messages) == 1, messages
    assert sum(m.startswith("healed in ") for m in messages) == 1, messages

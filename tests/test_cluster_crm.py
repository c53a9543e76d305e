"""The crm plugin in a cluster: three ``herald serve --cluster`` nodes, the PostgreSQL key store.

The seed's internal stream (the producer's simulation, as ``herald crm-produce``
writes it) goes to the dev broker; one node is SIGKILLed mid-stream. Then the
mock CRM must hold what a single process fed the same stream sent it; a user
erased through any node is gone from the CRM (one delete, one tombstone, one
notice on the public topics) and their key from PostgreSQL;
and no copy Herald made (every topic on the broker, every node's data dir and
log) holds that user's e-mail or names in plaintext, before or after.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest
import trio
from confluent_kafka import Consumer, TopicPartition

from engine.kafka import KafkaProducer, ensure_topics
from engine.testing import serving
from plugins.crm import hooks as crm
from plugins.crm.contracts import BOOKING_TOPIC, USER_TOPIC, decode
from plugins.crm.mock_crm import CrmStore, standalone_app
from plugins.crm.producer import Simulation
from plugins.crm.sealing import SealingContext
from plugins.crm.tests.messages import Message as _Message
from plugins.crm.tests.postgres import PostgresServer, serve_or_skip
from web.testing import app_client

from .test_cluster import Node, settled, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

#: Messages of the seed's stream the test produces (about a tenth are users, the rest bookings).
MESSAGES = 3000
TOKEN = "crm-cluster-admin-token"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from serve_or_skip()


def stream() -> list[tuple[str, bytes, bytes]]:
    return [(t, k, v) for _, t, k, v in itertools.islice(Simulation(seed=28).messages(), MESSAGES)]


def victim_of(messages: list[tuple[str, bytes, bytes]]) -> tuple[str, list[bytes]]:
    """A user with long names and a trip: their id and what of them must never rest in plaintext."""
    trips = {orjson.loads(v)["Event"]["UserId"] for t, _, v in messages if t == BOOKING_TOPIC}
    for topic, _, value in messages:
        user = orjson.loads(value)["Event"]
        if topic == USER_TOPIC and user["Id"] in trips and all(len(user[f] or "") >= 8 for f in ("FirstName", "LastName")):
            secrets = [user["Email"], user["FirstName"], user["LastName"]]
            secrets += [orjson.loads(v)["Event"][f] for t, _, v in messages if t == USER_TOPIC
                        and orjson.loads(v)["Event"]["Id"] == user["Id"] for f in ("FirstName", "LastName", "Email")]
            return user["Id"], sorted({s.encode() for s in secrets if s and len(s) >= 8})
    raise AssertionError("no user with long names and a trip in the stream")


async def single_process(messages: list[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """What one in-process Herald, fed the same stream through the same sealing source, sends the CRM."""
    store = CrmStore()
    async with serving(standalone_app(store)) as crm_url, \
            app_client([("crm", crm)], environ={"HERALD_CRM_URL": crm_url}) as (herald, _):
        keys = herald.part("crm", lambda: None)["keys"]
        source = SealingContext(herald, keys)
        decoded = [e for n, (t, _, v) in enumerate(messages) for e in decode(_Message(t, v, n))]
        for i in range(0, len(decoded), 500):
            await source.accept(decoded[i:i + 500])
        assert await herald.flush_sinks(60)
    return {"users": dict(store.data["users"]), "trips": dict(store.data["trips"])}


def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap)
    for topic, key, value in messages:
        producer.produce(topic, key, value)
    producer.flush_blocking()


def broker_bytes(bootstrap: str) -> dict[str, bytes]:
    """Every message (key, value, headers) of every topic on the broker up to its end now, raw, by topic."""
    return {topic: b"\n".join(b"%s\0%s" % (key, value) + b"".join(headers) for key, value, headers in found)
            for topic, found in broker_messages(bootstrap).items()}


def broker_messages(bootstrap: str) -> dict[str, list[tuple[bytes, bytes, list[bytes]]]]:
    """Every message of every topic on the broker up to its end now: (key, value, header values) by topic
    (a tombstone's value is ``b""``)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"scan-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    try:
        topics = consumer.list_topics(timeout=10).topics
        ends = {}
        for name, meta in topics.items():
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                if high > low:
                    ends[(name, p)] = high
        consumer.assign([TopicPartition(name, p, 0) for name, p in ends])
        found: dict[str, list[tuple[bytes, bytes, list[bytes]]]] = {}
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error() is not None:
                    continue
                found.setdefault(m.topic(), []).append(
                    (m.key() or b"", m.value() or b"", [header or b"" for _, header in m.headers() or ()]))
                if m.offset() + 1 >= ends.get((m.topic(), m.partition()), 0):
                    ends.pop((m.topic(), m.partition()), None)
        assert not ends, f"could not read these to their end: {sorted(ends)}"
    finally:
        consumer.close()
    return found


def plaintext_in(bootstrap: str, nodes: list[Node], secrets: list[bytes], *, internal: bool) -> list[str]:
    """Where any of ``secrets`` rests in plaintext: topics (the producer's own internal topics aside:
    they are the platform's, not Herald's copies) and every node's directory (data and logs)."""
    where = []
    scanned = broker_bytes(bootstrap)
    assert {n for n in scanned if n.endswith((".events", ".changelog"))} and "public.users.v1" in scanned, sorted(scanned)
    for topic, raw in scanned.items():
        if not internal and topic in (USER_TOPIC, BOOKING_TOPIC):
            continue
        where += [f"topic {topic}" for s in secrets if s in raw]
    for node in nodes:
        for path in Path(node.dir).rglob("*"):
            if path.is_file():
                raw = path.read_bytes()
                where += [str(path) for s in secrets if s in raw]
    return where


def key_rows(url: str, user_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM herald_crm_keys WHERE subject = %s",
                            (hashlib.sha256(user_id.encode()).hexdigest(),)).fetchone()[0]


async def test_crm_on_three_nodes_with_a_kill_matches_one_process_and_erasure_leaves_no_plaintext(
        kafka_bootstrap, tmp_path, postgres):
    messages = stream()
    victim, secrets = victim_of(messages)
    assert secrets
    expected = await single_process(messages)
    assert victim in expected["users"] and len(expected["trips"]) > 100
    # The internal topics with one partition each: each topic's order is the order they were produced in,
    # for the cluster as for the single process (the producer's keys are counters, not users).
    await trio.to_thread.run_sync(lambda: ensure_topics(kafka_bootstrap, [(USER_TOPIC, 1, {}), (BOOKING_TOPIC, 1, {})]))

    import psycopg

    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE herald_cluster_crm")
    url = postgres.url("herald_cluster_crm")
    store = CrmStore()
    async with serving(standalone_app(store)) as crm_url:
        env = {"HERALD_PLUGINS": "crm", "HERALD_CRM_KEYSTORE": url, "HERALD_KAFKA_BOOTSTRAP": kafka_bootstrap,
               "HERALD_CRM_URL": crm_url, "HERALD_ADMIN_TOKEN": TOKEN, "HERALD_CRM_SESSION_TIMEOUT_MS": "6000"}
        nodes = [Node(tmp_path, f"n{i}", kafka_bootstrap, **env) for i in range(3)]
        try:
            for node in nodes:
                node.start()
            async with httpx.AsyncClient(timeout=30) as client:
                await wait_until(lambda: settled(client, nodes), 90, "three nodes sharing the partitions", nodes)
                healths = [await node.health(client) for node in nodes]
                assert all(h["sources"]["crm_keys"]["store"] == "postgresql" for h in healths)
                assert not any(postgres.password in orjson.dumps(h).decode() for h in healths)
                half = len(messages) // 2
                started = time.monotonic()
                await trio.to_thread.run_sync(produce, kafka_bootstrap, messages[:half])

                async def midstream() -> bool:
                    health = await nodes[1].health(client)
                    return len(store.data["users"]) > 20 and bool(health) and health["cluster"]["checkpoints"] >= 1

                await wait_until(midstream, 90, "the CRM filling and the victim's first checkpoint", nodes)
                nodes[1].kill()  # SIGKILL, mid-stream
                await trio.to_thread.run_sync(produce, kafka_bootstrap, messages[half:])
                survivors = [nodes[0], nodes[2]]

                async def same_as_one_process() -> bool:
                    return (store.data["users"], store.data["trips"]) == (expected["users"], expected["trips"])

                await wait_until(same_as_one_process, 180, "the CRM to hold what one process sent it", nodes)
                seconds = time.monotonic() - started
                print(f"\n3 nodes (one killed mid-stream): {len(messages)} messages in {seconds:.1f} s, "
                      f"{len(messages) / seconds:.0f} messages/s end to end")
                await wait_until(lambda: settled(client, survivors), 90, "the survivors caught up", nodes)
                assert await trio.to_thread.run_sync(lambda: plaintext_in(kafka_bootstrap, nodes, secrets, internal=False)) == []
                # The scan finds them where they are in the clear: the platform's own internal topics.
                assert await trio.to_thread.run_sync(lambda: plaintext_in(kafka_bootstrap, [], secrets, internal=True))

                # Every survivor reads the victim's key (one key, shared through PostgreSQL) and caches it.
                admin = {"authorization": f"Bearer {TOKEN}"}
                found = [await client.get(f"{node.url}/v1/subjects/{victim}/key", headers=admin) for node in survivors]
                assert [r.status_code for r in found] == [200, 200], [r.text for r in found]
                assert found[0].json()["key"] == found[1].json()["key"]

                erased = await client.delete(f"{nodes[2].url}/v1/subjects/{victim}", headers=admin)
                assert erased.status_code == 202, erased.text
                assert erased.json()["key_destroyed"] is True
                assert key_rows(url, victim) == 0

                async def forgotten_everywhere() -> bool:
                    answers = [await client.get(f"{node.url}/v1/subjects/{victim}/key", headers=admin) for node in survivors]
                    return [r.status_code for r in answers] == [404, 404]

                # The other survivor's cached copy goes with the erasure's notification, well within the TTL (30 s).
                await wait_until(forgotten_everywhere, 10, "every node to forget the erased key", nodes)

                async def gone() -> bool:
                    return victim not in store.data["users"] and not any(
                        t["UserId"] == victim for t in store.data["trips"].values())

                await wait_until(gone, 60, "the victim gone from the CRM", nodes)
                # The victim comes back on the internal topic: nothing of theirs reaches the CRM again.
                again = [(t, k, v) for t, k, v in messages if t == USER_TOPIC and orjson.loads(v)["Event"]["Id"] == victim]
                await trio.to_thread.run_sync(produce, kafka_bootstrap, again[-1:])
                await wait_until(lambda: settled(client, survivors), 90, "the cluster caught up", nodes)
                assert await forgotten_everywhere()
                assert victim not in store.data["users"]
                assert store.calls.get("delete_user", 0) == 1  # the erasure's CRM call ran once
                public = await trio.to_thread.run_sync(broker_messages, kafka_bootstrap)
                tombstones = [v for k, v, _ in public["public.users.v1"] if k == victim.encode() and not v]
                notices = [v for k, v, _ in public["public.trips.v1"] if k == victim.encode() and b"subject.erased" in v]
                assert (len(tombstones), len(notices)) == (1, 1)  # and its public messages were written once
                assert await trio.to_thread.run_sync(lambda: plaintext_in(kafka_bootstrap, nodes, secrets, internal=False)) == []
                assert key_rows(url, victim) == 0
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()

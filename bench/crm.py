"""CRM integration throughput: internal topics -> Herald -> mock CRM (HTTP) and public topics (Kafka).

A real Tansu broker on loopback, the mock CRM as its own server (hypercorn),
and ``herald serve --plugins crm``, in separate processes. Once Herald's
consumer has joined its group (a warm-up message went through), N messages in
the seed's format (from the producer stand-in, without its sleeps) are
written to the internal topics; the clock runs until the CRM holds every user
and Herald has delivered every effect (CRM calls and public messages). The
baseline, in the same run, is a bare confluent-kafka consumer, already in its
group, reading the same messages without processing them.

    python -m bench.crm [--messages 20000]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.crm")

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from engine._kafka import DevBroker, KafkaProducer, ensure_topics
from plugins.crm.contracts import BOOKING_TOPIC, USER_TOPIC
from plugins.crm.model import TRIPS_TOPIC, USERS_TOPIC
from plugins.crm.producer import Simulation

from ._common import print_table
from .http import _free_port, _process, _wait_ready


def _count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    total = 0
    for partition in (meta.partitions if meta else {}):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        total += high - low
    consumer.close()
    return total


def _bare_consume(bootstrap: str, expected: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-bare", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([USER_TOPIC, BOOKING_TOPIC])
    seen, started = 0, None
    while seen < expected:
        batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
        if batch and started is None:
            started = time.perf_counter()  # the group is joined: the clock starts at the first message
        seen += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args(argv)
    broker = DevBroker()
    bootstrap = broker.start()
    try:
        messages = [(t, k, v) for _, t, k, v in itertools.islice(Simulation(seed=11).messages(), args.messages)]
        users = {orjson.loads(v)["Event"]["Id"] for t, _, v in messages if t == USER_TOPIC}
        bookings = {}
        for t, _, v in messages:
            if t == BOOKING_TOPIC:
                event = orjson.loads(v)["Event"]
                bookings[event["Id"]] = event["UserId"]
        trips = {b for b, u in bookings.items() if u is not None}
        ensure_topics(bootstrap, [USER_TOPIC, BOOKING_TOPIC])
        producer = KafkaProducer(bootstrap, **{"linger.ms": 20})
        warm_up, messages = messages[:10], messages[10:]
        print(f"{len(messages):,} messages for the internal topics (after 10 to warm up): {len(users):,} users, "
              f"{len(bookings):,} bookings ({len(trips):,} with a user)")

        with tempfile.TemporaryDirectory(prefix="herald-bench-crm-") as tmp:
            work = Path(tmp)
            crm_port, port = _free_port(), _free_port()
            with _process([sys.executable, "-m", "server", "mock-crm", "--port", str(crm_port)],
                          work / "crm.log") as crm:
                _wait_ready(f"http://127.0.0.1:{crm_port}/users", crm, work / "crm.log")
                env = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(work / "data"),
                       "HERALD_PLUGINS": "crm", "HERALD_LOG_LEVEL": "WARNING", "HERALD_KAFKA_BOOTSTRAP": bootstrap,
                       "HERALD_CRM_URL": f"http://127.0.0.1:{crm_port}", "HERALD_CRM_MOCK": "off"}
                with _process([sys.executable, "-m", "server", "serve"], work / "herald.log", env) as herald, \
                        httpx.Client(timeout=30) as client:
                    _wait_ready(f"http://127.0.0.1:{port}/healthz", herald, work / "herald.log")

                    def sources() -> dict:
                        return client.get(f"http://127.0.0.1:{port}/healthz").json()["sources"]

                    for topic, key, value in warm_up:
                        producer.produce(topic, key, value)
                    producer.flush_blocking(60)
                    while sources()["crm-kafka"]["consumed"] < len(warm_up):
                        time.sleep(0.1)
                    started = time.perf_counter()
                    for topic, key, value in messages:
                        producer.produce(topic, key, value)
                    producer.flush_blocking(120)
                    produced = time.perf_counter() - started
                    while True:
                        health = sources()
                        if health["crm-kafka"]["consumed"] >= len(warm_up) + len(messages) and health["crm"]["pending"] == 0:
                            crm_users = len(client.get(f"http://127.0.0.1:{crm_port}/users").json())
                            if crm_users >= len(users):
                                break
                        time.sleep(0.1)
                    elapsed = time.perf_counter() - started
                    crm_trips = len(client.get(f"http://127.0.0.1:{crm_port}/trips").json())
                    delivered = health["crm"]["delivered"]
        bare = _bare_consume(bootstrap, len(warm_up) + len(messages))
        public = {topic: _count(bootstrap, topic) for topic in (USERS_TOPIC, TRIPS_TOPIC)}
    finally:
        broker.stop()
    print()
    print_table(("pipeline", "seconds", "messages/s"), [
        ("bare consumer, no processing (baseline)", f"{bare:.2f}", f"{len(messages) / bare:,.0f}"),
        ("producing them (the bench's own producer)", f"{produced:.2f}", f"{len(messages) / produced:,.0f}"),
        ("herald: Kafka -> actors -> CRM + public topics", f"{elapsed:.2f}", f"{len(messages) / elapsed:,.0f}"),
    ])
    print(f"\nCRM: {crm_users:,} users, {crm_trips:,} trips; {delivered:,} effects delivered "
          f"(CRM calls and public messages); public topics: {public[USERS_TOPIC]:,} user and "
          f"{public[TRIPS_TOPIC]:,} trip messages")
    print(f"the seed's producer writes ~0.8 messages/s: headroom {len(messages) / elapsed / 0.8:,.0f}x")


if __name__ == "__main__":
    main()

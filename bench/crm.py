"""CRM integration throughput: internal topics -> Herald -> mock CRM (HTTP) and public topics (Kafka).

A real Tansu broker on loopback, the mock CRM as its own server (hypercorn,
on core 1), and ``herald serve --plugins crm`` (core 0), in separate
processes. Once Herald's consumer has joined its group (a warm-up message
went through), N messages in the seed's format (from the producer stand-in,
without its sleeps) are written to the internal topics; the clock runs until
the CRM holds every user and Herald has delivered every effect (CRM calls and
public messages). The mock CRM records the write calls it served.

Baselines, in the same run:

* a bare confluent-kafka consumer, already in its group, reading the same
  messages without processing them (is the broker the limit?);
* a bare httpx client (on core 0, where Herald ran) replaying exactly the CRM
  calls Herald made, with the same users in flight and each user's calls in
  order, into a fresh mock CRM: Herald's target is >= 0.8x its call rate;
* the same replay into a bare ASGI app (``bench.bare_asgi``) on the same
  server and core as the mock: is the mock itself slower than a bare app?

The two replays alternate ``--repeat`` times (medians reported).

    python -m bench.crm [--messages 20000] [--concurrency 16] [--repeat 3]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.crm")

import argparse
import contextlib
import itertools
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import trio
from confluent_kafka import Consumer, TopicPartition

from engine._kafka import DevBroker, KafkaProducer, ensure_topics
from plugins.crm.contracts import BOOKING_TOPIC, USER_TOPIC
from plugins.crm.model import TRIPS_TOPIC, USERS_TOPIC
from plugins.crm.producer import Simulation

from ._common import print_table, stop_process, verdict
from .http import ROOT, _free_port, _wait_ready

HERALD_TARGET, MOCK_TARGET = 0.8, 0.8
#: Herald and the replaying client on core 0, the CRM (mock or bare app) on core 1: the same places for all.
CLIENT_CPU, CRM_CPU = 0, 1


def _on(cpu: int):
    return (lambda: os.sched_setaffinity(0, {cpu})) if (os.cpu_count() or 1) >= 2 else None


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str] | None = None, *, cpu: int) -> Iterator[subprocess.Popen]:
    """Run the server ``cmd`` on core ``cpu`` (output to ``log``) for the duration of the block."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_on(cpu))
    try:
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def _crm(work: Path, name: str, cmd: list[str]) -> Iterator[str]:
    """A CRM server (``cmd`` gets ``--port``) on :data:`CRM_CPU`; yields its base URL once it answers."""
    port = _free_port()
    with _process([*cmd, "--port", str(port)], work / f"{name}.log", cpu=CRM_CPU) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{url}/users", proc, work / f"{name}.log")
        yield url


def _owner(method: str, path: str, body: str) -> str:
    """Whose call this is (users: the user's id; trips: their UserId), to keep each user's calls in order."""
    _, collection, *rest = path.split("/")
    if collection == "trips" and body:
        return orjson.loads(body)["UserId"]
    return rest[0] if rest else orjson.loads(body)["Id"]


def _by_owner(calls: list[list[str]]) -> list[list[tuple[str, str, bytes]]]:
    owners: dict[str, list[tuple[str, str, bytes]]] = {}
    for method, path, body in calls:
        owners.setdefault(_owner(method, path, body), []).append((method, path, body.encode()))
    return list(owners.values())


async def _replay_async(base: str, before: list, users: list[list[tuple[str, str, bytes]]],
                        concurrency: int) -> tuple[float, Counter]:
    statuses: Counter = Counter()
    queue = iter(users)
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for method, path, body in itertools.chain.from_iterable(before):  # the warm-up's calls, untimed
            await client.request(method, path, content=body or None, headers=headers)

        async def worker() -> None:
            for calls in queue:
                for method, path, body in calls:
                    statuses[(await client.request(method, path, content=body or None, headers=headers)).status_code] += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.perf_counter() - started, statuses


def _replay(base: str, before: list, users: list[list[tuple[str, str, bytes]]],
            concurrency: int) -> tuple[float, Counter]:
    """The bare client: ``concurrency`` users at a time, each user's calls one after the other, on CLIENT_CPU."""
    cores = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        return trio.run(_replay_async, base, before, users, concurrency)
    finally:
        os.sched_setaffinity(0, cores)


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


def _wrk(url: str, calls: Path, seconds: float, connections: int) -> tuple[float, dict[int, int]]:
    """wrk (on CLIENT_CPU) sending ``calls`` in rotation: requests/s and the statuses."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(Path(__file__).with_name("crm_calls.lua")),
           url, "--", str(calls)]
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_on(CLIENT_CPU), check=True)
    rps = float(done.stdout.split("Requests/sec:")[1].split()[0])
    return rps, {int(c): int(n) for c, n in (line.split()[1:] for line in done.stdout.splitlines()
                                              if line.startswith("STATUS "))}


def _replays(work: Path, recorded: list[list[str]], warm: int, concurrency: int, repeat: int) -> dict[str, Any]:
    """The baselines on the calls Herald made: the bare httpx client into a fresh mock CRM, and wrk
    sending the replacement calls to that mock and to a bare ASGI app (alternating, ``repeat`` times)."""
    before, calls = _by_owner(recorded[:warm]), recorded[warm:]  # the warm-up's, then the timed ones
    users_calls = _by_owner(calls)
    replacements = work / "replacements.tsv"
    replacements.write_text("".join(f"{m}\t{p}\t{b}\n" for m, p, b in calls if m == "POST" and p.count("/") == 2))
    found: dict[str, Any] = {"calls": len(calls), "client": [], "mock": [], "bare": [], "mock_statuses": Counter(),
                             "bare_statuses": Counter()}
    mock = [sys.executable, "-m", "server", "mock-crm"]
    seconds = 5.0
    for _ in range(repeat):
        with _crm(work, "crm-replay", mock) as url:
            took, found["statuses"] = _replay(url, before, users_calls, concurrency)
            found["client"].append(took)
            found["users"] = len(httpx.get(f"{url}/users").json())
            rps, statuses = _wrk(url, replacements, seconds, concurrency)  # every one a 200 now
            found["mock"].append(rps)
            found["mock_statuses"].update(statuses)
        with _crm(work, "bare", [sys.executable, "-m", "bench.bare_asgi"]) as url:
            rps, statuses = _wrk(url, replacements, seconds, concurrency)
            found["bare"].append(rps)
            found["bare_statuses"].update(statuses)
    return found


def _report(found: dict[str, Any], elapsed: float | None, concurrency: int) -> None:
    n = found["calls"]
    client_s = statistics.median(found["client"])
    client_rate, mock_rate, bare_rate = n / client_s, statistics.median(found["mock"]), statistics.median(found["bare"])
    print(f"\nthe {n:,} CRM calls Herald made, {concurrency} users in flight, each user's calls in order:")
    rows = [] if elapsed is None else [("herald (the pipeline above)", f"{elapsed:.2f}", f"{n / elapsed:,.0f}", "")]
    rows.append(("bare httpx client -> mock CRM (baseline)", f"{client_s:.2f}", f"{client_rate:,.0f}",
                 " ".join(f"{r:.2f}" for r in found["client"])))
    print_table(("who sends them", "seconds", "calls/s", "runs (s)"), rows)
    print(f"replayed into a fresh mock CRM: statuses {dict(sorted(found['statuses'].items()))}, {found['users']:,} users")
    print(f"\nthe mock alone: wrk, {concurrency} connections, the replacement calls in rotation, 5 s each:")
    print_table(("server (hypercorn-trio, one core)", "calls/s", "runs (calls/s)", "statuses"), [
        ("mock CRM", f"{mock_rate:,.0f}", " ".join(f"{r:,.0f}" for r in found["mock"]),
         str(dict(sorted(found["mock_statuses"].items())))),
        ("bare ASGI app (baseline)", f"{bare_rate:,.0f}", " ".join(f"{r:,.0f}" for r in found["bare"]),
         str(dict(sorted(found["bare_statuses"].items())))),
    ])
    if elapsed is not None:
        ratio = n / elapsed / client_rate
        print(f"\nherald / bare httpx client: {ratio:.2f}x (target >= {HERALD_TARGET}x: {verdict(ratio, HERALD_TARGET)})")
    ratio = mock_rate / bare_rate
    print(f"mock CRM / bare ASGI app: {ratio:.2f}x (target >= {MOCK_TARGET}x: {verdict(ratio, MOCK_TARGET)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="users in flight, for Herald (HERALD_CRM_CONCURRENCY) and the bare client "
                             "(default: the plugin's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each replay (alternating)")
    parser.add_argument("--calls", help="only the replays, of calls a run kept (env BENCH_CRM_CALLS=FILE)")
    args = parser.parse_args(argv)
    from plugins.crm.delivery import CONCURRENCY

    concurrency = args.concurrency or CONCURRENCY
    if args.calls:
        kept = orjson.loads(Path(args.calls).read_bytes())
        with tempfile.TemporaryDirectory(prefix="herald-bench-crm-") as tmp:
            _report(_replays(Path(tmp), kept["calls"], kept["warm"], concurrency, args.repeat), None, concurrency)
        return
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
            port = _free_port()
            mock = [sys.executable, "-m", "server", "mock-crm"]
            with _crm(work, "crm", [*mock, "--record"]) as crm_url:
                env = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(work / "data"),
                       "HERALD_PLUGINS": "crm", "HERALD_LOG_LEVEL": "WARNING", "HERALD_KAFKA_BOOTSTRAP": bootstrap,
                       "HERALD_CRM_URL": crm_url, "HERALD_CRM_MOCK": "off",
                       "HERALD_CRM_CONCURRENCY": str(concurrency)}
                with _process([sys.executable, "-m", "server", "serve"], work / "herald.log", env,
                              cpu=CLIENT_CPU) as herald, httpx.Client(timeout=30) as client:
                    _wait_ready(f"http://127.0.0.1:{port}/healthz", herald, work / "herald.log")

                    def sources() -> dict:
                        return client.get(f"http://127.0.0.1:{port}/healthz").json()["sources"]

                    for topic, key, value in warm_up:
                        producer.produce(topic, key, value)
                    producer.flush_blocking(60)
                    while sources()["crm-kafka"]["consumed"] < len(warm_up) or sources()["crm"]["pending"]:
                        time.sleep(0.1)
                    warm = len(client.get(f"{crm_url}/_calls").json())
                    started = time.perf_counter()
                    for topic, key, value in messages:
                        producer.produce(topic, key, value)
                    producer.flush_blocking(120)
                    produced = time.perf_counter() - started
                    while True:
                        health = sources()
                        if health["crm-kafka"]["consumed"] >= len(warm_up) + len(messages) and health["crm"]["pending"] == 0:
                            crm_users = len(client.get(f"{crm_url}/users").json())
                            if crm_users >= len(users):
                                break
                        time.sleep(0.1)
                    elapsed = time.perf_counter() - started
                    crm_trips = len(client.get(f"{crm_url}/trips").json())
                    delivered = health["crm"]["delivered"]
                    recorded = client.get(f"{crm_url}/_calls").json()
            if os.environ.get("BENCH_CRM_CALLS"):  # keep them, to study the replays alone (--calls)
                Path(os.environ["BENCH_CRM_CALLS"]).write_bytes(orjson.dumps({"warm": warm, "calls": recorded}))
            replays = _replays(work, recorded, warm, concurrency, args.repeat)
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
    _report(replays, elapsed, concurrency)

if __name__ == "__main__":
    main()

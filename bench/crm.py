"""CRM integration throughput: internal topics -> Herald -> mock CRM (HTTP) and public topics (Kafka).

A real Tansu broker on loopback, the mock CRM as its own server (hypercorn),
and ``herald serve --plugins crm``, in separate processes (none pinned to a
core: the machine may be shared). Once Herald's consumer has joined its group (a warm-up message
went through), N messages in the seed's format (from the producer stand-in,
without its sleeps) are written to the internal topics; the clock runs until
the CRM holds every user and Herald has delivered every effect (CRM calls and
public messages). The mock CRM records the write calls it served.

Baselines, in the same run:

* a bare confluent-kafka consumer, already in its group, reading the same
  messages without processing them (is the broker the limit?);
* a bare httpx client (in the bench's process) replaying exactly the CRM
  calls Herald made, with the same users in flight and each user's calls in
  order, into a fresh mock CRM: Herald's target is >= 0.8x its call rate;
* wrk sending Herald's replacement calls (all 200s once the CRM holds their
  users and trips) to that mock, then to a bare ASGI app (``bench.bare_asgi``)
  on the same server: is the mock itself slower than a bare app would be?

Each of ``--repeat`` runs is Herald's pipeline on a fresh broker, then the
baselines on the calls it made; ratios are taken per run, medians reported.

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
import shutil
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

from engine.host import tune_gc
from engine.testing import free_port
from engine._kafka import DevBroker, KafkaProducer, ensure_topics
from plugins.crm.contracts import BOOKING_TOPIC, USER_TOPIC
from plugins.crm.model import TRIPS_TOPIC, USERS_TOPIC
from plugins.crm.producer import Simulation

from ._common import print_table, stop_process, verdict
from .http import ROOT, _wait_ready

HERALD_TARGET, MOCK_TARGET = 0.8, 0.8
WRK_SECONDS, WRK_SLICES = 6.0, 6


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run the server ``cmd`` (output to ``log``) for the duration of the block. Nothing is pinned to a core:
    the machine may be shared, and the scheduler places Herald, the CRM and the clients alike."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def _crm(work: Path, name: str, cmd: list[str]) -> Iterator[str]:
    """A CRM server (``cmd`` gets ``--port``); yields its base URL once it answers (its process id in
    :data:`_PIDS`, by URL)."""
    port = free_port()
    with _process([*cmd, "--port", str(port)], work / f"{name}.log") as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{url}/users", proc, work / f"{name}.log")
        _PIDS[url] = proc.pid
        yield url


_PIDS: dict[str, int] = {}


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
    # One client with one kept-alive connection per worker, as Herald's delivery has: a shared
    # pool of 16 looks over every connection on each call (measured slower), so this is the
    # stronger baseline.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=base, limits=limits, timeout=30))
                   for _ in range(concurrency)]
        for method, path, body in itertools.chain.from_iterable(before):  # the warm-up's calls, untimed
            await clients[0].request(method, path, content=body or None, headers=headers)

        async def call(client: httpx.AsyncClient, method: str, path: str, body: bytes) -> int:
            for attempt in range(5):  # as any client would: a kept-alive connection the server closed, again
                try:
                    return (await client.request(method, path, content=body or None, headers=headers)).status_code
                except httpx.TransportError:
                    statuses["retried"] += 1
            raise RuntimeError(f"{method} {path}: no answer after 5 attempts")

        async def worker(client: httpx.AsyncClient) -> None:
            for calls in queue:
                for method, path, body in calls:
                    statuses[await call(client, method, path, body)] += 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(worker, client)
        return time.perf_counter() - started, statuses


def _replay(base: str, before: list, users: list[list[tuple[str, str, bytes]]],
            concurrency: int) -> tuple[float, Counter]:
    """The bare client: ``concurrency`` users at a time, each user's calls one after the other (with the
    garbage-collector settings Herald runs with, as the heap here is no smaller)."""
    tune_gc()
    cpu = time.process_time()
    elapsed, statuses = trio.run(_replay_async, base, before, users, concurrency)
    statuses["cpu"] = time.process_time() - cpu  # the warm-up's few calls included
    return elapsed, statuses


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu(path: Path) -> tuple[str, float] | None:
    """(name, CPU seconds: user + system) of a process or thread from its ``/proc`` stat file."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / _TICK


def _cpu(pid: int) -> dict[str, float] | None:
    """CPU seconds of process ``pid``: ``total`` (its threads that ended included), ``main`` (its main
    thread), ``thread`` (its busiest other Python thread: the crm delivery's, when it has one),
    ``librdkafka`` (threads named rdk:*). None where there is no /proc (Linux only)."""
    found = _stat_cpu(Path(f"/proc/{pid}/stat"))
    if found is None:
        return None
    cpu = {"total": found[1], "main": 0.0, "librdkafka": 0.0, "threads": {}}
    for task in Path(f"/proc/{pid}/task").iterdir():
        one = _stat_cpu(task / "stat")
        if one is None:
            continue
        if int(task.name) == pid:
            cpu["main"] = one[1]
        elif one[0].startswith("rdk:"):
            cpu["librdkafka"] += one[1]
        else:
            cpu["threads"][task.name] = one[1]
    return cpu


def _cpu_spent(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """CPU seconds between two :func:`_cpu` readings (the busiest other thread by what it spent between)."""
    if before is None or after is None:
        return None
    threads = {t: v - before["threads"].get(t, 0.0) for t, v in after["threads"].items()}
    return {"total": after["total"] - before["total"], "main": after["main"] - before["main"],
            "librdkafka": after["librdkafka"] - before["librdkafka"], "thread": max(threads.values(), default=0.0)}


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
    """wrk sending ``calls`` in rotation: requests/s and the statuses."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(Path(__file__).with_name("crm_calls.lua")),
           url, "--", str(calls)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rps = float(done.stdout.split("Requests/sec:")[1].split()[0])
    return rps, {int(c): int(n) for c, n in (line.split()[1:] for line in done.stdout.splitlines()
                                              if line.startswith("STATUS "))}


def _replays(work: Path, recorded: list[list[str]], warm: int, concurrency: int) -> dict[str, Any]:
    """The baselines on the calls Herald made: the bare httpx client into a fresh mock CRM, then wrk
    sending the replacement calls to that mock (every one a 200 by then) and to a bare ASGI app."""
    before, calls = _by_owner(recorded[:warm]), recorded[warm:]  # the warm-up's, then the timed ones
    replacements = work / "replacements.tsv"
    replacements.write_text("".join(f"{m}\t{p}\t{b}\n" for m, p, b in calls if m == "POST" and p.count("/") == 2))
    found: dict[str, Any] = {"calls": len(calls)}
    with _crm(work, "crm-replay", [sys.executable, "-m", "server", "mock-crm"]) as url, \
            _crm(work, "bare", [sys.executable, "-m", "bench.bare_asgi"]) as bare_url:
        mock = _cpu(_PIDS[url])
        found["client"], found["statuses"] = _replay(url, before, _by_owner(calls), concurrency)
        found["client_cpu"] = found["statuses"].pop("cpu")
        mock = _cpu_spent(mock, _cpu(_PIDS[url]))
        found["mock_busy_bare"] = mock and mock["total"] / found["client"]
        found["users"] = len(httpx.get(f"{url}/users").json())
        # Short slices, alternating, so that a neighbour's load falls on both alike.
        rates: dict[str, list[float]] = {"mock": [], "bare": []}
        for name in ("mock_statuses", "bare_statuses"):
            found[name] = Counter()
        for _ in range(WRK_SLICES):
            for name, target in (("mock", url), ("bare", bare_url)):
                rps, statuses = _wrk(target, replacements, WRK_SECONDS / WRK_SLICES, concurrency)
                rates[name].append(rps)
                found[f"{name}_statuses"].update(statuses)
        found["mock"], found["bare"] = statistics.mean(rates["mock"]), statistics.mean(rates["bare"])
    return found


def _herald_run(work: Path, messages: list, warm_up: list, users: set, concurrency: int) -> dict[str, Any]:
    """One pipeline run on a fresh broker, mock CRM (recording) and Herald; what it did and how long."""
    broker = DevBroker()
    bootstrap = broker.start()
    try:
        ensure_topics(bootstrap, [USER_TOPIC, BOOKING_TOPIC])
        producer = KafkaProducer(bootstrap, **{"linger.ms": 20})
        port = free_port()
        with _crm(work, "crm", [sys.executable, "-m", "server", "mock-crm", "--record"]) as crm_url:
            env = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(work / "data"),
                   "HERALD_PLUGINS": "crm", "HERALD_LOG_LEVEL": "WARNING", "HERALD_KAFKA_BOOTSTRAP": bootstrap,
                   "HERALD_CRM_URL": crm_url, "HERALD_CRM_MOCK": "off", "HERALD_CRM_CONCURRENCY": str(concurrency)}
            with _process([sys.executable, "-m", "server", "serve"], work / "herald.log", env) as herald, \
                    httpx.Client(timeout=30) as client:
                _wait_ready(f"http://127.0.0.1:{port}/healthz", herald, work / "herald.log")

                def sources() -> dict:
                    return client.get(f"http://127.0.0.1:{port}/healthz").json()["sources"]

                for topic, key, value in warm_up:
                    producer.produce(topic, key, value)
                producer.flush_blocking(60)
                while sources()["crm-kafka"]["consumed"] < len(warm_up) or sources()["crm"]["pending"]:
                    time.sleep(0.1)
                warm = len(client.get(f"{crm_url}/_calls").json())
                cpu, mock = _cpu(herald.pid), _cpu(_PIDS[crm_url])
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
                cpu = _cpu_spent(cpu, _cpu(herald.pid))
                mock = _cpu_spent(mock, _cpu(_PIDS[crm_url]))
                found = {"elapsed": elapsed, "cpu": cpu, "mock_busy": mock and mock["total"] / elapsed, "produced": produced, "crm_users": crm_users,
                         "crm_trips": len(client.get(f"{crm_url}/trips").json()),
                         "delivered": health["crm"]["delivered"], "warm": warm,
                         "recorded": client.get(f"{crm_url}/_calls").json()}
        found["bare_consumer"] = _bare_consume(bootstrap, len(warm_up) + len(messages))
        found["public"] = {topic: _count(bootstrap, topic) for topic in (USERS_TOPIC, TRIPS_TOPIC)}
    finally:
        broker.stop()
    shutil.rmtree(work / "data", ignore_errors=True)
    return found


def _runs(values: list[float], spec: str) -> str:
    return " ".join(format(v, spec) for v in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="users in flight, for Herald (HERALD_CRM_CONCURRENCY) and the bare client "
                             "(default: the plugin's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs: Herald's, then the baselines on its calls")
    args = parser.parse_args(argv)
    from plugins.crm.delivery import CONCURRENCY

    concurrency = args.concurrency or CONCURRENCY
    messages = [(t, k, v) for _, t, k, v in itertools.islice(Simulation(seed=11).messages(), args.messages)]
    users = {orjson.loads(v)["Event"]["Id"] for t, _, v in messages if t == USER_TOPIC}
    bookings = {}
    for t, _, v in messages:
        if t == BOOKING_TOPIC:
            event = orjson.loads(v)["Event"]
            bookings[event["Id"]] = event["UserId"]
    trips = {b for b, u in bookings.items() if u is not None}
    warm_up, messages = messages[:10], messages[10:]
    print(f"{len(messages):,} messages for the internal topics (after 10 to warm up): {len(users):,} users, "
          f"{len(bookings):,} bookings ({len(trips):,} with a user); {concurrency} users in flight", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="herald-bench-crm-") as tmp:
        work = Path(tmp)
        for _ in range(args.repeat):
            run = _herald_run(work, messages, warm_up, users, concurrency)
            run.update(_replays(work, run.pop("recorded"), run["warm"], concurrency))
            runs.append(run)
            print(f"  herald {run['calls'] / run['elapsed']:,.0f} calls/s, bare client "
                  f"{run['calls'] / run['client']:,.0f}; mock {run['mock']:,.0f}/s, bare ASGI {run['bare']:,.0f}/s",
                  flush=True)
    n = len(messages)

    def median(name: str) -> float:
        return statistics.median(r[name] for r in runs)

    last = runs[-1]
    print()
    print_table(("pipeline (median of runs)", "seconds", "messages/s", "runs (s)"), [
        ("bare consumer, no processing (baseline)", f"{median('bare_consumer'):.2f}",
         f"{n / median('bare_consumer'):,.0f}", _runs([r["bare_consumer"] for r in runs], ".2f")),
        ("producing them (the bench's own producer)", f"{median('produced'):.2f}", f"{n / median('produced'):,.0f}",
         _runs([r["produced"] for r in runs], ".2f")),
        ("herald: Kafka -> actors -> CRM + public topics", f"{median('elapsed'):.2f}",
         f"{n / median('elapsed'):,.0f}", _runs([r["elapsed"] for r in runs], ".2f")),
    ])
    print(f"\nCRM: {last['crm_users']:,} users, {last['crm_trips']:,} trips; {last['delivered']:,} effects delivered "
          f"(CRM calls and public messages); public topics: {last['public'][USERS_TOPIC]:,} user and "
          f"{last['public'][TRIPS_TOPIC]:,} trip messages")
    print(f"the seed's producer writes ~0.8 messages/s: headroom {n / median('elapsed') / 0.8:,.0f}x")
    print(f"\nthe CRM calls Herald made ({_runs([r['calls'] for r in runs], ',')}), {concurrency} users in flight, "
          f"each user's calls in order, calls/s:")
    herald = [r["calls"] / r["elapsed"] for r in runs]
    client = [r["calls"] / r["client"] for r in runs]
    print_table(("who sends them", "median", "runs"), [
        ("herald (the pipeline above)", f"{statistics.median(herald):,.0f}", _runs(herald, ",.0f")),
        ("bare httpx client -> fresh mock CRM (baseline)", f"{statistics.median(client):,.0f}", _runs(client, ",.0f")),
    ])
    print(f"replayed into a fresh mock CRM: statuses {dict(sorted(last['statuses'].items(), key=str))}, "
          f"{last['users']:,} users")
    print(f"\nthe mock alone: wrk, {concurrency} connections, Herald's replacement calls in rotation, "
          f"{WRK_SECONDS:g} s each in {WRK_SLICES} alternating slices, calls/s:")
    print_table(("server (hypercorn-trio)", "median", "runs", "statuses (last run)"), [
        ("mock CRM", f"{median('mock'):,.0f}", _runs([r["mock"] for r in runs], ",.0f"),
         str(dict(sorted(last["mock_statuses"].items())))),
        ("bare ASGI app (baseline)", f"{median('bare'):,.0f}", _runs([r["bare"] for r in runs], ",.0f"),
         str(dict(sorted(last["bare_statuses"].items())))),
    ])
    if all(r["cpu"] for r in runs):
        print("\nCPU time of the two senders, µs per CRM call (a loaded machine stretches wall time, less so this):")
        def us(r: dict, part: str) -> float:
            return 1e6 * r["cpu"][part] / r["calls"]
        print_table(("who", "median", "runs"), [
            ("herald's process, all threads (also consumes, applies, journals, publishes)",
             f"{statistics.median(us(r, 'total') for r in runs):,.0f}", _runs([us(r, "total") for r in runs], ",.0f")),
            ("  its main thread (the engine's trio loop)", f"{statistics.median(us(r, 'main') for r in runs):,.0f}",
             _runs([us(r, "main") for r in runs], ",.0f")),
            ("  its busiest other Python thread (the delivery's, if any)",
             f"{statistics.median(us(r, 'thread') for r in runs):,.0f}", _runs([us(r, "thread") for r in runs], ",.0f")),
            ("  librdkafka's threads", f"{statistics.median(us(r, 'librdkafka') for r in runs):,.0f}",
             _runs([us(r, "librdkafka") for r in runs], ",.0f")),
            ("bare httpx client's process (baseline)",
             f"{statistics.median(1e6 * r['client_cpu'] / r['calls'] for r in runs):,.0f}",
             _runs([1e6 * r["client_cpu"] / r["calls"] for r in runs], ",.0f")),
        ])
        print(f"herald's wall-clock busy share: main thread "
              f"{_runs([r['cpu']['main'] / r['elapsed'] for r in runs], '.0%')}, whole process "
              f"{_runs([r['cpu']['total'] / r['elapsed'] for r in runs], '.0%')} of one core; the mock CRM "
              f"{_runs([r['mock_busy'] for r in runs], '.0%')} while Herald sends, "
              f"{_runs([r['mock_busy_bare'] for r in runs], '.0%')} while the bare client does (runs)")
    ratios = [h / c for h, c in zip(herald, client)]
    ratio = statistics.median(ratios)
    print(f"\nherald / bare httpx client: {ratio:.2f}x (runs {_runs(ratios, '.2f')}; target >= {HERALD_TARGET}x: "
          f"{verdict(ratio, HERALD_TARGET)})")
    ratios = [r["mock"] / r["bare"] for r in runs]
    ratio = statistics.median(ratios)
    print(f"mock CRM / bare ASGI app: {ratio:.2f}x (runs {_runs(ratios, '.2f')}; target >= {MOCK_TARGET}x: "
          f"{verdict(ratio, MOCK_TARGET)})")

if __name__ == "__main__":
    main()

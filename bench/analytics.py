"""The Eye: validated ingestion over HTTP batches (target >= 5,000 events/s) and queries
over 1M stored events (target <= 50 ms for a session, a category, a time range).

Ingestion: `herald serve --plugins analytics` (batch durability) and, in the same
run, the bare ASGI app on the same hypercorn-trio server as the baseline; a
client on the other core posts JSON arrays of 500 events (10 % invalid) over 8
connections. Herald's rate counts an event once it is *stored or logged as
invalid* (the 202 comes before the check), read from GET /api/stats.

Queries: 1M events (10k sessions, 30 days, 4 categories) written into the
store in process, then each query's median and p99 of 50 runs, against the
same query forced to scan the table (the baseline).

    python -m bench.analytics [--seconds 10] [--events 1000000]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.analytics")

import argparse
import os
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import trio

from plugins.analytics.model import StoredEvent
from plugins.analytics.store import Store

from engine.testing import free_port

from ._common import print_table, verdict
from .http import WRK_CPU as CLIENT_CPU, _pinned, _process, _wait_ready

INGEST_TARGET, QUERY_TARGET = 5_000, 0.050
CATEGORIES = {"page interaction": ["pageview", "cta click", "scroll"], "form interaction": ["submit", "focus"],
              "video": ["play", "pause"], "search": ["query"]}


def _payload(rng: random.Random, n: int) -> dict:
    category = rng.choice(list(CATEGORIES))
    name = rng.choice(CATEGORIES[category])
    data = {"host": "www.example.com", "path": f"/p/{n % 500}", "element": "chat bubble", "form": {"a": "b"}}
    stamp = datetime.fromtimestamp(1_609_459_200 + n * 0.01, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    payload = {"session_id": f"s-{rng.randrange(10_000):05d}", "category": category, "name": name, "data": data,
               "timestamp": stamp}
    if rng.random() < 0.1:
        payload["timestamp"] = "2099-01-01 00:00:00"  # invalid: in the future
    return payload


def _bodies(count: int, per_body: int) -> list[bytes]:
    rng = random.Random(3)
    return [orjson.dumps([_payload(rng, i * per_body + j) for j in range(per_body)]) for i in range(count)]


async def _blast(url: str, bodies: list[bytes], seconds: float, connections: int, headers: dict) -> tuple[int, float]:
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(index: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            n = index
            while time.perf_counter() < deadline:
                response = await client.post(url, content=bodies[n % len(bodies)],
                                             headers={"content-type": "application/json"})
                if response.status_code != 202:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
                sent += 1
                n += connections

    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(worker, index)
    return sent, time.perf_counter() - started


def _in_client_cpu(fn, *args):
    pin = _pinned(CLIENT_CPU)
    if pin is not None:
        pin()
    return fn(*args)


def ingestion(work: Path, seconds: float, per_body: int = 500, connections: int = 8) -> list[tuple]:
    bodies = _bodies(40, per_body)
    rows = []
    with ExitStack() as stack:
        port, bare_port = free_port(), free_port()
        env = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(work / "eye"),
               "HERALD_PLUGINS": "analytics", "HERALD_LOG_LEVEL": "WARNING"}
        herald = stack.enter_context(_process([sys.executable, "-m", "server", "serve"], work / "herald.log", env))
        bare = stack.enter_context(_process([sys.executable, "-m", "bench.bare_asgi", "--port", str(bare_port)],
                                            work / "bare.log"))
        url, bare_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        _wait_ready(url + "/healthz", herald, work / "herald.log")
        _wait_ready(bare_url + "/", bare, work / "bare.log")
        token = httpx.post(url + "/v1/admin/tokens", json={"name": "bench"}).json()["token"]
        auth = {"Authorization": f"Token {token}"}

        requests, elapsed = _in_client_cpu(trio.run, _blast, bare_url + "/api/events", bodies, seconds, connections, {})
        rows.append(("bare ASGI (baseline)", requests * per_body, elapsed, requests * per_body / elapsed))

        started = time.perf_counter()
        requests, _ = _in_client_cpu(trio.run, _blast, url + "/api/events", bodies, seconds, connections, auth)
        total = requests * per_body
        while True:  # until every event is stored or logged as invalid
            stats = httpx.get(url + "/api/stats", headers=auth).json()
            errors_events = stats["errors"]  # one error row per invalid event here (only the timestamp)
            if stats["events"] + errors_events >= total and stats["pending"] == 0:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rows.append(("herald analytics, checked and stored", total, elapsed, total / elapsed))
    return rows


def _fill(store: Store, events: int) -> None:
    rng = random.Random(7)
    start = 1_609_459_200.0
    span = 30 * 86_400
    batch = []
    for n in range(events):
        category = rng.choice(list(CATEGORIES))
        batch.append(StoredEvent(f"evt-{n:08d}", "bench", f"s-{rng.randrange(10_000):05d}", category,
                                 rng.choice(CATEGORIES[category]), {"host": "h", "path": f"/p/{n % 500}"},
                                 start + rng.random() * span, start + span))
        if len(batch) == 50_000:
            for effect in batch:
                store.put(effect)
            trio.run(store.flush)
            batch = []
    for effect in batch:
        store.put(effect)
    trio.run(store.flush)


def _time(fn, runs: int = 50) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def queries(work: Path, events: int) -> list[tuple]:
    store = Store(work / "analytics.db")
    started = time.perf_counter()
    _fill(store, events)
    print(f"stored {events:,} events in {time.perf_counter() - started:.1f} s")
    day = 1_609_459_200.0 + 10 * 86_400
    cases = [
        ("a session", dict(session_id="s-04242")),
        ("a category", dict(category="video")),
        ("a category and name", dict(category="page interaction", name="cta click")),
        ("a time range (1 hour)", dict(after=day, before=day + 3600)),
        ("a category in a time range", dict(category="search", after=day, before=day + 86_400)),
    ]
    rows = []
    for label, filters in cases:
        page, _ = store.events(**filters, limit=100)
        median, p99 = _time(lambda: store.events(**filters, limit=100))
        where = " AND ".join(f"{k if k not in ('after', 'before') else 'ts'} {'>=' if k == 'after' else '<' if k == 'before' else '='} ?"
                             for k in filters)
        scan_sql = f"SELECT id FROM events NOT INDEXED WHERE {where} ORDER BY ts, id LIMIT 101"
        scan, _ = _time(lambda: store._select(scan_sql, list(filters.values())), runs=3)
        rows.append((label, len(page), median, p99, scan))
    # A deep page: the cursor keeps it as cheap as the first.
    cursor = None
    for _ in range(50):
        _, cursor = store.events(category="video", limit=100, cursor=cursor)
    median, p99 = _time(lambda: store.events(category="video", limit=100, cursor=cursor))
    rows.append(("a category, page 51 (cursor)", 100, median, p99, float("nan")))
    store.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="herald-bench-eye-") as tmp:
        work = Path(tmp)
        ingest = ingestion(work, args.seconds)
        print_table(("server", "events", "seconds", "events/s"),
                    [(label, f"{n:,}", f"{s:.1f}", f"{rate:,.0f}") for label, n, s, rate in ingest])
        rate = ingest[-1][3]
        print(f"validated ingestion target >= {INGEST_TARGET:,}/s: {verdict(rate, INGEST_TARGET)} "
              f"({rate / INGEST_TARGET:.1f}x; {rate / ingest[0][3]:.2f}x the bare ASGI baseline)\n")
        results = queries(work, args.events)
        print_table(("query over the store", "rows", "median ms", "p99 ms", "table scan ms (baseline)"),
                    [(label, n, f"{m * 1000:.2f}", f"{p * 1000:.2f}", f"{s * 1000:.0f}") for label, n, m, p, s in results])
        worst = max(r[2] for r in results)
        print(f"query target <= {QUERY_TARGET * 1000:.0f} ms (median): {verdict(QUERY_TARGET, worst)} "
              f"(worst median {worst * 1000:.2f} ms)")


if __name__ == "__main__":
    main()

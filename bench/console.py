"""How fast the operator console's pages answer with 100k fitness actors loaded.

Starts ``herald serve`` (fitness plugin, journal in ``batch`` mode, data in a
temporary directory), loads one ``app_launch`` per user and then a day-like
mix of events (``bench._common``: program starts and finishes, some long
enough for a congratulation, which is delivered to Herald's own
``/v1/notify``) through ``POST /v1/events`` in arrays of 1,000 (nudges are set
a day after each launch, so every actor's timer stays pending and nothing is
delivered while the pages are timed), waits for the deliveries, then times
``--requests`` sequential GETs of each console page on one kept-alive
connection and prints p50 and p99 per page. Actor pages ask for a random user
each time. No figure has a target; the figures are in bench/RESULTS.md.

    python -m bench.console [--users 100000] [--events 200000] [--requests 200] [--snapshot-every 100000]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.console")

import argparse
import contextlib
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import orjson

from engine.testing import free_port

from ._common import SEED_START, _user, app_launches, generate_events, print_table
from .http import _process, _wait_ready

BATCH = 1000


@contextlib.contextmanager
def served(data: Path, **env: str) -> Iterator[str]:
    """A ``herald serve`` on a free loopback port with ``HERALD_*`` settings ``env``, its data and log in ``data``."""
    port = free_port()
    full = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(data / "data"),
            "HERALD_LOG_LEVEL": "WARNING", **env}
    with _process([sys.executable, "-m", "server", "serve"], data / "herald.log", full) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/healthz", proc, data / "herald.log", timeout=60)
        yield url


def post_all(client: httpx.Client, events: list[dict]) -> None:
    for i in range(0, len(events), BATCH):
        answer = client.post("/v1/events", content=orjson.dumps(events[i:i + BATCH]),
                             headers={"content-type": "application/json"})
        if answer.status_code != 202 or answer.json()["rejected"]:
            raise RuntimeError(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")


def _pending(url: str) -> int:
    """Effects not delivered yet (on a new connection each time: a busy server may close idle ones)."""
    try:
        return httpx.get(url + "/healthz", timeout=30).json()["effects_pending"]
    except httpx.TransportError:
        return 1


def timed(client: httpx.Client, paths: Iterator[str], count: int) -> tuple[float, float, int]:
    """p50 and p99 (milliseconds) of ``count`` GETs of the next path, and the size of the last answer."""
    seconds = []
    size = 0
    for _ in range(count):
        path = next(paths)
        started = time.perf_counter()
        answer = client.get(path)
        seconds.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
        size = len(answer.content)
    seconds.sort()
    return statistics.median(seconds) * 1e3, seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1e3, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000, help="events after the launches")
    parser.add_argument("--requests", type=int, default=200, help="GETs per page")
    parser.add_argument("--snapshot-every", type=int, default=100_000,
                        help="HERALD_SNAPSHOT_EVERY: above the events loaded, the journal keeps them all (the worst "
                             "case for an actor's recent events, found by scanning it)")
    args = parser.parse_args()

    launches = app_launches(args.users)
    mix = generate_events(args.events, args.users, start=SEED_START + args.users * 0.01 + 1)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp), HERALD_FITNESS_NUDGE_MINUTES="1440",
                                                  HERALD_SNAPSHOT_EVERY=str(args.snapshot_every),
                                                  HERALD_SNAPSHOT_INTERVAL="3600") as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        post_all(client, launches + mix)
        health = client.get("/healthz").json()
        print(f"loaded {len(launches) + len(mix):,} events in {time.perf_counter() - started:.1f} s: "
              f"{health['actors']:,} actors, {health['timers_pending']:,} timers pending")
        # Nudges and congratulations go to this server's own sink: time the pages once they are delivered.
        deadline = time.monotonic() + 600
        while _pending(url) and time.monotonic() < deadline:
            time.sleep(0.5)
        # The first listing after keys joined sorts them all: timed alone, then the cached ones below.
        cold = time.perf_counter()
        client.get("/ui/actors", params={"plugin": "fitness", "page": 1000})
        cold_ms = (time.perf_counter() - cold) * 1e3

        def users() -> Iterator[str]:
            while True:
                yield _user(rng.randrange(args.users))

        pages = {
            "/ui (overview)": iter(lambda: "/ui", None),
            "/ui/overview.json": iter(lambda: "/ui/overview.json", None),
            "/ui/actors?plugin=fitness&page=1000": iter(lambda: "/ui/actors?plugin=fitness&page=1000", None),
            "/ui/actors/{random user}": (f"/ui/actors/{u}" for u in users()),
            "/ui/actor.json?key={random user}": (f"/ui/actor.json?key={u}" for u in users()),
            "/ui/deliveries": iter(lambda: "/ui/deliveries", None),
            "/ui/deliveries?status=delivered&receiver=notify": iter(
                lambda: "/ui/deliveries?status=delivered&receiver=notify", None),
            "/ui/events": iter(lambda: "/ui/events", None),
            "/ui/events?key=user-00001": iter(lambda: "/ui/events?key=user-00001", None),
            "/ui/events.json?after=0": iter(lambda: "/ui/events.json?after=0", None),
        }
        rows = []
        for name, paths in pages.items():
            p50, p99, size = timed(client, paths, args.requests)
            rows.append((name, f"{p50:.1f}", f"{p99:.1f}", f"{size:,}"))
        journal = client.get("/v1/journal").json()
    print(f"journal: {journal['events']:,} events since the snapshot at seq {journal['snapshot_seq']}, "
          f"outbox {journal['outbox']}; first /ui/actors listing after the load (sorts the keys): {cold_ms:.0f} ms")
    print_table(("page", "p50 ms", "p99 ms", "bytes"), rows)


if __name__ == "__main__":
    main()

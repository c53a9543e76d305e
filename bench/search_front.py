"""GET /search behind the caching front (deploy/nginx.conf) against Herald alone, in the same run.

Starts a mock provider serving a generated feed (``--plans`` base events), one
``herald serve`` with the marketplace polling it (the default 60 s interval),
and Debian's nginx with ``deploy/nginx.conf`` as written (one worker, keep-alive
upstreams, a buffered access log as in production) in front of it, all on
loopback; Herald and nginx share CPU 0 and wrk runs on CPU 1. wrk asks:

* **repeated** windows: ``--popular`` one-day windows (the next days, many users
  asking the same ones) in rotation: after the first round nginx answers them
  from its cache;
* **distinct** windows: one-day windows whose query strings are all different
  (a counter in a bound's fraction of a second, see ``get_rotate.lua``): every
  request goes through to Herald.

Each way is measured against Herald alone and through the front, interleaved
over ``--rounds``; medians. Before measuring, the front's answer to every
popular window is checked to be Herald's byte for byte.

    python -m bench.search_front [--plans 10000] [--zones 10] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.search_front")

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx

from deploy.front import nginx_front
from engine.testing import free_port
from plugins.marketplace.mock import MockProvider

from ._common import print_table, verdict
from .http import SERVER_CPU, WRK_CPU, _pinned, _process, _wait_ready, cpu_seconds
from .marketplace import START, _windows, generate_feed

LUA = Path(__file__).with_name("get_rotate.lua")
#: Issue 27: the front answers repeated windows at least this fast (requests/s, this 2-core machine).
REPEATED_TARGET = 20_000


_RUNS = iter(range(1, 10**6))


def _wrk(url: str, paths: Path, seconds: float, connections: int) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) of ``seconds`` of wrk sending the paths of ``paths`` in rotation;
    each run numbers its distinct query strings from its own start (none was asked in an earlier run)."""
    first = str(next(_RUNS) * 10**9)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency", "-s",
                          str(LUA), url, "--", str(paths), first], capture_output=True, text=True, check=True,
                         preexec_fn=_pinned(WRK_CPU)).stdout
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if rate is None or p99 is None or "Non-2xx" in out or "Socket errors" in out:  # timeouts count as errors
        raise RuntimeError(f"wrk against {url}:\n{out}")
    return float(rate[1]), float(p99[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99[2]]


def _process_cpu(pid: int) -> float:
    """CPU seconds (user and system) that process ``pid`` and its children (nginx's workers) have used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(_process_cpu(int(c)) for c in children)


def _searchable(url: str) -> int:
    with httpx.Client(timeout=30) as client:
        return client.get(url + "/healthz").json()["sources"]["marketplace"]["searchable_plans"] or 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=10_000, help="base events in the generated feed")
    parser.add_argument("--zones", type=int, default=10, help="zones per plan (the feed's size, not the answers')")
    parser.add_argument("--popular", type=int, default=100, help="repeated one-day windows in rotation")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of wrk per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each target per way of asking")
    parser.add_argument("--connections", type=int, default=64, help="wrk's open connections")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        print(f"bench.search_front skipped: {' and '.join(missing)} not on PATH (Debian: apt-get install wrk nginx)")
        return
    with tempfile.TemporaryDirectory(prefix="herald-bench-front-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "feed").mkdir()
        generate_feed(work / "feed" / "feed.xml", args.plans, args.zones)
        provider = stack.enter_context(MockProvider(work / "feed", once=True).running())
        port = free_port()
        env = {**os.environ, "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(work / "data"),
               "HERALD_PLUGINS": "marketplace", "HERALD_LOG_LEVEL": "WARNING", "HERALD_TRUSTED_PROXIES": "127.0.0.1",
               "HERALD_MARKETPLACE_PROVIDER_URL": provider.url}
        herald = stack.enter_context(_process([sys.executable, "-m", "server", "serve"], work / "herald.log", env))
        herald_url = f"http://127.0.0.1:{port}"
        _wait_ready(herald_url + "/healthz", herald, work / "herald.log")
        while _searchable(herald_url) == 0:  # the first poll
            if herald.poll() is not None:
                raise RuntimeError((work / "herald.log").read_text()[-2000:])
        front_port = free_port()
        nginx = stack.enter_context(nginx_front(
            work / "front", f"127.0.0.1:{port}", port=front_port, preexec_fn=_pinned(SERVER_CPU),
            access_log=f"{work}/front/access.log combined buffer=64k flush=1s"))
        front_url = f"http://127.0.0.1:{front_port}"
        print(f"feed: {args.plans:,} base events x {args.zones} zones; searchable plans: {_searchable(herald_url):,}; "
              f"Herald and nginx (1 worker) on CPU {SERVER_CPU}, wrk -t1 -c{args.connections} on CPU {WRK_CPU}")

        # The next --popular days, each asked as the same query string by everyone.
        days = [START + timedelta(days=180 + n) for n in range(args.popular)]
        popular = [f"/search?starts_at={d.isoformat()}Z&ends_at={(d + timedelta(days=1)).isoformat()}Z" for d in days]
        (work / "repeated.txt").write_text("\n".join(popular) + "\n")
        (work / "distinct.txt").write_text("\n".join(f"{p}\t{s}" for p, s in _windows(timedelta(days=1), 400, 11)) + "\n")
        sizes = []
        with httpx.Client(timeout=30) as client:
            for path in popular:
                direct, front = client.get(herald_url + path), client.get(front_url + path)
                if direct.status_code != 200 or front.content != direct.content:
                    raise RuntimeError(f"the front's answer to {path} is not Herald's: {front.status_code} {front.text[:200]}")
                sizes.append(len(direct.content))
        print(f"the front answers each of the {len(popular)} popular windows as Herald does "
              f"({statistics.mean(sizes):,.0f} bytes on average)")

        rows = []
        for way in ("repeated", "distinct"):
            paths = work / f"{way}.txt"
            for url in (herald_url, front_url):
                _wrk(url + "/", paths, 2, args.connections)  # warm-up
            measured: dict[str, list[tuple[float, float, float, float]]] = {"herald": [], "front": []}
            for _ in range(args.rounds):
                for name, url in (("herald", herald_url), ("front", front_url)):
                    used, front_used = cpu_seconds(herald), _process_cpu(nginx.pid)
                    rate, p99 = _wrk(url + "/", paths, args.seconds, args.connections)
                    # Herald's share of a core, and nginx's CPU microseconds per request (a figure the
                    # machine's other load moves less than requests/s).
                    measured[name].append((rate, p99, (cpu_seconds(herald) - used) / args.seconds,
                                           (_process_cpu(nginx.pid) - front_used) / max(1.0, rate * args.seconds) * 1e6))
            alone, front = ([statistics.median(r[i] for r in measured[name]) for i in range(4)]
                            for name in ("herald", "front"))
            print(f"{way}: requests/s per round, Herald alone {', '.join(f'{r[0]:,.0f}' for r in measured['herald'])}; "
                  f"through the front {', '.join(f'{r[0]:,.0f}' for r in measured['front'])}", flush=True)
            rows.append((way, alone, front))
        # Herald's CPU share (of one core) while measured: how busy the front leaves it.
        print_table(("GET /search, one-day windows", "Herald alone req/s", "p99 ms", "Herald CPU", "through the front req/s",
                     "p99 ms", "Herald CPU", "nginx CPU us/req", "front / alone"),
                    [(way, f"{alone[0]:,.0f}", f"{alone[1]:.1f}", f"{alone[2]:.0%}", f"{front[0]:,.0f}", f"{front[1]:.1f}",
                      f"{front[2]:.0%}", f"{front[3]:.1f}", f"{front[0] / alone[0]:.1f}x") for way, alone, front in rows])
        print(f"nginx's CPU per cached answer ({rows[0][2][3]:.1f} us) is at most {1e6 / rows[0][2][3]:,.0f} requests/s "
              f"on a core of its own")
        repeated = rows[0][2][0]
        print(f"repeated windows through the front >= {REPEATED_TARGET:,} requests/s: "
              f"{verdict(repeated, REPEATED_TARGET)} ({repeated:,.0f})")
        print(f"distinct windows through the front: {rows[1][2][0]:,.0f} requests/s "
              f"({rows[1][2][0] / rows[1][1][0]:.2f}x Herald alone; every request reaches Herald)")


if __name__ == "__main__":
    main()

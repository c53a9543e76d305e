"""POST /v1/event latency at 80 % of the maximum rate: Herald (default durability) against a bare ASGI app.

1. The maximum rate: wrk loads ``herald serve`` (fitness plugin, ``batch``
   durability unless told otherwise) with single events, as ``bench.http`` does.
2. An open-loop client (:mod:`bench._openloop`: requests due at a constant
   rate, each timed from when it was due, so queueing counts) sends
   ``--load`` (80 %) of that rate for ``--seconds``, to Herald and then, at the
   same rate, to the bare ASGI app (``bench/bare_asgi.py``, same hypercorn-trio
   server); interleaved over ``--rounds``.

Printed: p50, p99 and p99.9 and the achieved rate of each, and the client's
own wake-up lag (p99 and max: how late its event loop woke a task due every
millisecond; what the client adds to the latencies itself); the verdict is on
Herald's median p99 over the rounds (target <= 20 ms). Servers on CPU 0, wrk and
the client on CPU 1 (the client alone there while it measures).

    python -m bench.latency [--seconds 10] [--rounds 3] [--durability batch]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.latency")

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from . import _openloop
from ._common import print_table
from .http import WRK_CPU, _bodies, _check, _start_servers, _wrk

P99_TARGET_MS = 20.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="seconds of open-loop load per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.8, help="share of the maximum rate to send")
    parser.add_argument("--durability", default="batch", help="Herald's journal mode (batch is the default)")
    parser.add_argument("--connections", type=int, default=64, help="the open-loop client's connections")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk): it measures the maximum rate")
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {WRK_CPU})  # the open-loop client runs in this process
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        urls = _start_servers(stack, tmp_path, [args.durability])
        herald = f"herald {args.durability}"
        single = _bodies(tmp_path / "single.txt", events=2_000, per_body=1, users=500, seed=1)
        bodies = [line for line in single.read_bytes().split(b"\n") if line]
        for url in urls.values():
            _check(url + "/v1/event", bodies[0], 1)
        _wrk(urls[herald] + "/v1/event", single, seconds=2, connections=32, threads=1)  # warm-up
        peak = _wrk(urls[herald] + "/v1/event", single, seconds=10, connections=32, threads=1)
        rate = round(peak["rps"] * args.load)
        print(f"maximum rate (wrk -t1 -c32 -d10s, {herald}): {peak['rps']:,.0f} requests/s; open-loop load at "
              f"{args.load:.0%}: {rate:,} requests/s for {args.seconds:g} s, {args.connections} connections, "
              f"{args.rounds} rounds; servers on CPU 0, client on CPU {WRK_CPU}", flush=True)
        rows, p99s, failed = [], {name: [] for name in urls}, False
        for round_ in range(1, args.rounds + 1):
            for name in (herald, "bare ASGI"):
                _openloop.run(urls[name] + "/v1/event", bodies, rate=rate, seconds=1,
                              connections=args.connections)  # warm-up
                r = _openloop.run(urls[name] + "/v1/event", bodies, rate=rate, seconds=args.seconds,
                                  connections=args.connections)
                lat = r["latencies"]
                p50, p99, p999 = (_openloop.percentile(lat, q) * 1e3 for q in (0.5, 0.99, 0.999))
                p99s[name].append(p99)
                non_202 = r["answered"] - r["statuses"].get(202, 0) + sum(r["errors"].values())
                failed |= non_202 > 0 or r["answered"] < r["sent"]
                lag = r["client_lag"]
                rows.append((name, round_, f"{rate:,}", f"{r['achieved']:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                             f"{p999:.2f}", f"{lat[-1] * 1e3:.2f}",
                             f"{_openloop.percentile(lag, 0.99) * 1e3:.2f} / {max(lag, default=0) * 1e3:.1f}",
                             f"{r['answered']:,}", f"{non_202:,}"))
    print()
    print_table(("server", "round", "rate asked", "achieved", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                 "client lag p99/max ms", "answers", "non-202"), rows, left=1)
    print()
    mine, bare = statistics.median(p99s[herald]), statistics.median(p99s["bare ASGI"])
    print(f"{herald}: POST /v1/event at {rate:,}/s ({args.load:.0%} of {peak['rps']:,.0f}): median p99 "
          f"{mine:.2f} ms (bare ASGI at the same rate: {bare:.2f} ms); target p99 <= {P99_TARGET_MS:g} ms: "
          f"{'met' if mine <= P99_TARGET_MS else 'MISSED'}")
    if failed:
        sys.exit("FAILED: some requests were not answered 202 (see non-202)")


if __name__ == "__main__":
    main()

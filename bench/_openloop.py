"""An open-loop HTTP/1.1 load generator: requests sent at a constant rate, timed from when each was due.

wrk and its kind are closed-loop: a connection sends its next request only once
the last one is answered, so a server that stalls is sent less, and the requests
it would have been sent while stalling are never timed (coordinated omission).
Here request ``i`` is due at ``start + i / rate`` whatever happened before; it
waits in a queue until one of ``connections`` kept-alive connections is free,
and its latency runs from when it was due to when its answer is complete, so
queueing (in the server or here) is counted. No well-kept tool doing this is
packaged for this machine's registries (Debian has neither wrk2 nor vegeta),
hence this small client; it only speaks what the benches need: POST with a
Content-Length, answers with a Content-Length.

The client's own scheduling noise is measured beside: a task asks to wake
every millisecond and records how late it wakes (``client_lag``). A late wake
delays sending and reading here, and shows up in the latencies as if the
server were slow; a bench should run the client on a core of its own and
quote this lag next to the latencies. Its garbage collector is off while it
runs (it makes little cyclic garbage; a collection would be its own pause).

    python -m bench._openloop URL BODIES_FILE --rate 2000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import time
from collections import Counter
from urllib.parse import urlsplit

__all__ = ["run", "percentile"]


def _requests(url: str, bodies: list[bytes], content_type: str) -> list[bytes]:
    parts = urlsplit(url)
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: ").encode()
    return [head + b"%d\r\n\r\n" % len(body) + body for body in bodies]


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def _load(url: str, requests: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    parts = urlsplit(url)
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = Counter()
    finished = 0.0

    async def connection() -> None:
        nonlocal finished
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, request = item
                try:
                    writer.write(request)
                    status = await _answer(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                    continue
                done = time.perf_counter()
                latencies.append(done - due)
                statuses[status] += 1
                finished = done
        finally:
            writer.close()

    lags: list[float] = []
    running = True

    async def monitor() -> None:
        """How late this client's event loop wakes a task due every millisecond."""
        while running:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            lags.append(max(0.0, time.perf_counter() - due))

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    watch = asyncio.create_task(monitor())
    start = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due_now = min(total, int((now - start) * rate) + 1)
        while sent < due_now:
            queue.put_nowait((start + sent / rate, requests[sent % len(requests)]))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    running = False
    await watch
    latencies.sort()
    lags.sort()
    return {"rate": rate, "sent": sent, "answered": len(latencies), "statuses": dict(statuses),
            "errors": dict(errors), "achieved": len(latencies) / (finished - start) if latencies else 0.0,
            "latencies": latencies, "client_lag": lags}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def run(url: str, bodies: list[bytes], *, rate: float, seconds: float, connections: int = 64,
        content_type: str = "application/json") -> dict:
    """Send ``rate`` requests/s for ``seconds`` (bodies in rotation); return the statuses, the achieved
    rate, every latency and the client's own wake-up lags (seconds, sorted)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(_load(url, _requests(url, bodies, content_type), rate, seconds, connections))
    finally:
        if enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("bodies", help="a file of request bodies, one a line")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--cpu", type=int, help="pin this client to that CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with open(args.bodies, "rb") as f:
        bodies = [line for line in f.read().split(b"\n") if line]
    result = run(args.url, bodies, rate=args.rate, seconds=args.seconds, connections=args.connections)
    lat = result["latencies"]
    print(f"rate {args.rate:,.0f}/s asked, {result['achieved']:,.0f}/s achieved; {result['answered']:,} answers "
          f"{result['statuses']} errors {result['errors']}; p50 {percentile(lat, .5) * 1e3:.2f} ms, "
          f"p99 {percentile(lat, .99) * 1e3:.2f} ms, p99.9 {percentile(lat, .999) * 1e3:.2f} ms, "
          f"max {lat[-1] * 1e3 if lat else float('nan'):.2f} ms; client lag p99 "
          f"{percentile(result['client_lag'], .99) * 1e3:.2f} ms, max {max(result['client_lag'], default=0) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

"""Customers: loading a seed-shaped file (target <= 2.5 s, journaled) and listing 10k customers (<= 200 ms).

In the same run, the baseline: decoding every line with ``orjson.loads`` and
nothing else (the floor of any Python loader). Then (1 and 2 alternate with
the baseline ``--repeat`` times; medians, and the ratio to the baseline per run):

1. the loader alone, in process, no journal (``--durability memory``);
2. ``herald load --data-dir`` path in process: loader + journal (batch durability);
3. ``herald load --url`` into a running ``herald serve`` (HTTP, 32 MiB chunks);
4. ``GET /customers?per_page=10000`` against that server (median of 20).

    python -m bench.customers [--file messages.2.data] [--repeat 3]   # default: generate one (bench.gen_customers)

The target is absolute and the machine may be shared: judge it on a quiet
run, where the baseline is near its quiet figure (about 0.6 s), and read the
ratio to the baseline on the others.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.customers")

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import trio

from engine import Config
from engine.host import Herald, tune_gc
from engine._bulk import iter_chunks, load_file

from ._common import print_table, verdict

LOAD_TARGET, LIST_TARGET = 2.5, 0.200


def _baseline(path: str) -> float:
    loads = orjson.loads
    started = time.perf_counter()
    for _first, chunk in iter_chunks(path):
        for line in chunk.split(b"\n"):
            if line:
                loads(line)
    return time.perf_counter() - started


async def _load_in_process(path: str, data_dir: str, durability: str) -> tuple[float, int]:
    tune_gc()  # as `herald serve` and `herald load --data-dir` do
    herald = Herald(Config(data_dir=data_dir, durability=durability, log_level="WARNING", plugins=["customers"]))
    async with herald.running():
        await herald.wait_ready()
        started = time.perf_counter()
        report = await load_file(herald, "customers", path)
        seconds = time.perf_counter() - started
    return seconds, report.applied


def _herald() -> list[str]:
    script = shutil.which("herald")
    return [script] if script else [sys.executable, "-m", "server"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="a messages file (default: generate the second dataset's shape)")
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of baseline, memory and journaled loads")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="herald-bench-customers-"))
    try:
        path = args.file
        if path is None:
            from .gen_customers import generate

            path = str(work / "messages.data")
            print("generating a file shaped like the seed's second dataset ...", flush=True)
            generate(path, None, users=10_000, attrs=20, events=300_000, max_events=500, dupes=0.10, seed=1560980000)
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 24), b""))
        print(f"file: {lines:,} lines, {size / 1e6:.1f} MB")

        rounds = []
        for index in range(args.repeat):
            round_baseline = _baseline(path)
            round_memory, applied = trio.run(_load_in_process, path, str(work / f"memory{index}"), "memory")
            round_batch, _ = trio.run(_load_in_process, path, str(work / f"batch{index}"), "batch")
            rounds.append((round_baseline, round_memory, round_batch))
            shutil.rmtree(work / f"memory{index}", ignore_errors=True)
            shutil.rmtree(work / f"batch{index}", ignore_errors=True)
            print(f"  round {index + 1}: baseline {round_baseline:.2f} s, memory {round_memory:.2f} s "
                  f"({round_memory / round_baseline:.2f}x), journaled {round_batch:.2f} s "
                  f"({round_batch / round_baseline:.2f}x)", flush=True)
        baseline, memory, batch = (statistics.median(r[i] for r in rounds) for i in range(3))
        ratio = statistics.median(r[2] / r[0] for r in rounds)

        env = {**os.environ, "HERALD_PORT": str(args.port), "HERALD_DATA_DIR": str(work / "served"),
               "HERALD_LOG_LEVEL": "WARNING", "HERALD_PLUGINS": "customers"}
        proc = subprocess.Popen([*_herald(), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{args.port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            started = time.perf_counter()
            subprocess.run([*_herald(), "load", "customers", path, "--url", url, "--quiet"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            http_load = time.perf_counter() - started
            timings, size_out, count = [], 0, 0
            with httpx.Client(base_url=url) as client:
                for _ in range(22):
                    started = time.perf_counter()
                    response = client.get("/customers", params={"per_page": 10000})
                    timings.append(time.perf_counter() - started)
                    size_out, count = len(response.content), len(response.json()["customers"])
            listing = statistics.median(timings[2:])
        finally:
            proc.terminate()
            proc.wait(timeout=20)

        print(f"applied {applied:,} lines\n")
        print_table(
            ("step", "seconds", "lines/s"),
            [
                ("orjson.loads of every line (baseline)", f"{baseline:.2f}", f"{lines / baseline:,.0f}"),  # medians
                ("loader, in process, --durability memory", f"{memory:.2f}", f"{lines / memory:,.0f}"),
                ("loader + journal, in process, batch", f"{batch:.2f}", f"{lines / batch:,.0f}"),
                ("herald load --url into herald serve", f"{http_load:.2f}", f"{lines / http_load:,.0f}"),
            ],
        )
        print()
        print(f"GET /customers?per_page=10000: {count:,} customers, {size_out / 1e6:.1f} MB, "
              f"median {listing * 1000:.1f} ms of 20")
        print(f"journaled load / baseline: {ratio:.2f}x (median of {len(rounds)} rounds; "
              f"{', '.join(f'{r[2] / r[0]:.2f}' for r in rounds)})")
        print(f"load target <= {LOAD_TARGET:g} s (journaled, in process): {verdict(LOAD_TARGET, batch)} "
              f"({batch:.2f} s, median; quickest {min(r[2] for r in rounds):.2f} s); over HTTP {http_load:.2f} s")
        print(f"list target <= {LIST_TARGET * 1000:g} ms: {verdict(LIST_TARGET, listing)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

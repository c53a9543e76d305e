"""Memory per idle actor with one pending timer (target: at most 1 KB).

Each of ``--actors`` users sends one ``app_launch``, which leaves an actor with
its fitness state and a pending nudge timer. The bodies are encoded before
tracing starts and kept alive until it ends, and the garbage is collected
before each reading, so the difference of tracemalloc's current size is what
the engine retains: actors, states, timers, the heap and the actor table.

    python -m bench.memory [--actors 100000]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.memory")

import argparse
import gc
import os
import tracemalloc

import orjson

from ._common import SEED_START, app_launches, build_engine, encode, print_table, verdict

TARGET = 1024


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=8, help="allocation sites to list")
    args = parser.parse_args(argv)

    # All launches within one minute, so that no nudge (due 10 minutes later) fires.
    warmup, *bodies = encode(app_launches(args.actors + 1, start=SEED_START, gap=60 / args.actors))
    effects = []
    eng = build_engine(effects.append)
    eng.apply(eng.parse(orjson.loads(warmup)))  # first-use caches (metric children) are not per-actor costs

    tracemalloc.start()
    before = _traced()
    for body in bodies:
        eng.apply(eng.parse(orjson.loads(body)))
    del body
    after = _traced()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()

    n = args.actors
    per_actor = (after - before) / n
    print(f"{n:,} actors, {len(eng.timers):,} timers pending, {len(effects)} effects emitted")
    print(f"retained: {(after - before) / 2**20:.1f} MiB = {per_actor:,.0f} bytes per actor")
    print(f"target <= {TARGET} bytes per idle actor with one pending timer: "
          f"{verdict(TARGET, per_actor)} ({per_actor / TARGET:.2f}x the budget)")
    print()
    stats = snapshot.statistics("lineno")[: args.top]
    print_table(
        ("allocation site", "bytes/actor", "blocks/actor"),
        [(f"{_site(s.traceback[0].filename)}:{s.traceback[0].lineno}", f"{s.size / n:.0f}", f"{s.count / n:.2f}")
         for s in stats],
    )
    print("(lines of bench/memory.py: what orjson.loads made and the engine kept, e.g. the key and device id)")


def _site(filename: str) -> str:
    """A file as a reader knows it: relative to the repository, or to site-packages."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if filename.startswith(root + os.sep):
        return os.path.relpath(filename, root)
    return filename.rsplit("/site-packages/", 1)[-1]


if __name__ == "__main__":
    main()

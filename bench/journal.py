"""Durability costs, in process (no HTTP): ingestion with the journal against
ingestion without it, replaying a journal, and writing a snapshot.

    python -m bench.journal [--events 1000000] [--users 100000] [--ingest 200000] [--skip-replay] [--repeat 1]

1. Ingestion: ``Herald.accept`` from 32 concurrent tasks (like 32 connections),
   in single events and in batches of 500, with ``--durability memory`` and
   ``batch`` in the same run (target: batch >= 0.75x memory). What the journal
   costs per event (1/batch - 1/memory) is set against a bare ``sqlite3``
   ``executemany`` of rows of the journal's shape (same pragmas: WAL,
   ``synchronous=NORMAL``; 500 rows per transaction), measured in the same run
   next to each pair (target: at most 2x the bare insert per row).
2. Replay: a journal of ``--events`` events over ``--users`` users is written,
   copied as a crash would leave it, and a fresh Herald recovers from it
   (target: 1M events <= 8 s, and faster than live ingestion, durable in
   batches of 500, in the same run).
3. Snapshot: the recovered Herald (``--users`` actors) writes a snapshot
   (target: 100k actors <= 2 s).

``--skip-replay`` measures the ingestion only (1.), e.g. while working on the write path;
``--repeat N`` takes N pairs of ingestion runs, alternating which mode goes first, and
reports the medians (the ratio: the median of the pairs' ratios, and their spread).
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.journal")

import argparse
import gc
import logging
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import trio

from engine import Config
from engine.host import Herald, PluginHost, tune_gc
from engine._journal import DB_NAME, connect
from plugins.fitness import hooks as fitness_hooks

from ._common import generate_events, print_table, verdict

RATIO_TARGET, REPLAY_TARGET, SNAPSHOT_TARGET = 0.75, 8.0, 2.0
#: The journal's cost per event, at most this many times a bare insert's per row (batches of 500).
BARE_TARGET = 2.0
TASKS = 32


def _herald(data_dir: Path, durability: str) -> Herald:
    config = Config(data_dir=str(data_dir), durability=durability, snapshot_every=10**12,
                    snapshot_interval=10**9, notify_url="http://127.0.0.1:9/", outbox_delays=(86_400.0,),
                    effect_workers=1)
    herald = Herald(config, PluginHost.from_objects(config, [fitness_hooks]))
    herald.outbox.pause()  # measure the journal, not deliveries to nowhere
    return herald


async def _ingest(herald: Herald, raws: list[dict], per_call: int) -> float:
    """Events/s through ``accept`` from TASKS concurrent callers."""
    events = [herald.engine.parse(raw) for raw in raws]
    chunks = [events[i : i + per_call] for i in range(0, len(events), per_call)]
    # Each run starts with the collector's counts at zero: otherwise whether a run meets one of the
    # (rare, long: ~0.5 s with 1M young objects) collections of the middle generation depends on
    # what ran before it, which made a run of either mode up to a third slower than its pair.
    gc.collect()
    started = time.perf_counter()

    async def caller(mine: list) -> None:
        for chunk in mine:
            await herald.accept(chunk)

    async with trio.open_nursery() as nursery:
        for t in range(TASKS):
            nursery.start_soon(caller, chunks[t::TASKS])
    return len(events) / (time.perf_counter() - started)


def _bare_insert(events: list, path: Path, per_transaction: int = 500) -> float:
    """Seconds per row of a bare ``executemany`` of the events as rows of the journal's record shape
    (seq, id, key, type, ts, received, arrival, data as JSON), ``per_transaction`` rows per transaction,
    with the journal's own pragmas; the rows are made before the clock starts."""
    received = time.time()
    rows = [(seq, e.id, e.key, e.type, e.at, received, received + seq * 1e-6, orjson.dumps(e.data))
            for seq, e in enumerate(events, 1)]
    conn = connect(path)
    try:
        conn.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT, key TEXT, type TEXT, ts REAL,"
                     " received REAL, arrival REAL, data BLOB)")
        started = time.perf_counter()
        for i in range(0, len(rows), per_transaction):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?)", rows[i : i + per_transaction])
            conn.execute("COMMIT")
        return (time.perf_counter() - started) / len(rows)
    finally:
        conn.close()


async def _ingestion(raws: list[dict], tmp: Path, repeat: int = 1) -> tuple[list[tuple], dict[tuple[int, str], float]]:
    """The table's rows, and each rate by (events per call, durability): medians of ``repeat``
    pairs of runs (memory then batch, batch then memory, ...), the ratio the median of the pairs'."""
    rows, measured = [], {}
    for per_call, label in ((1, "single events"), (500, "batches of 500")):
        rates: dict[str, list[float]] = {"memory": [], "batch": []}
        bare: list[float] = []
        for round_ in range(repeat):
            for durability in ("memory", "batch") if round_ % 2 == 0 else ("batch", "memory"):
                herald = _herald(tmp / f"ingest-{durability}-{per_call}-{round_}", durability)
                async with herald.running():
                    await herald.wait_ready()
                    rates[durability].append(
                        await _ingest(herald, [dict(r, id=f"{per_call}-{i}") for i, r in enumerate(raws)], per_call))
                    if durability == "memory" and per_call == 500:  # right after (or before) its pair's durable run
                        events = [herald.engine.parse(dict(r, id=f"bare-{i}")) for i, r in enumerate(raws)]
                        bare_dir = tmp / f"bare-{round_}"
                        bare_dir.mkdir()
                        bare.append(_bare_insert(events, bare_dir / "bare.db"))
        if bare:
            measured["bare"] = statistics.median(bare)
        measured.update({(per_call, d): statistics.median(r) for d, r in rates.items()})
        ratios = [b / m for m, b in zip(rates["memory"], rates["batch"])]
        ratio = statistics.median(ratios)
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if repeat > 1 else ""
        cost = 1e6 / measured[per_call, "batch"] - 1e6 / measured[per_call, "memory"]
        rows.append((label, f"{measured[per_call, 'memory']:,.0f}", f"{measured[per_call, 'batch']:,.0f}",
                     f"{ratio:.2f}{spread}", verdict(ratio, RATIO_TARGET), f"{cost:.1f}"))
    return rows, measured


async def _replay_and_snapshot(raws: list[dict], tmp: Path) -> tuple[float, float, dict, int]:
    live_dir, crashed = tmp / "live", tmp / "crashed"
    herald = _herald(live_dir, "batch")
    async with herald.running():
        await herald.wait_ready()
        events = [herald.engine.parse(raw) for raw in raws]
        for i in range(0, len(events), 2000):
            await herald.accept(events[i : i + 2000])  # applied, then durable
        crashed.mkdir()
        with sqlite3.connect(live_dir / DB_NAME) as a, sqlite3.connect(crashed / DB_NAME) as b:
            a.backup(b)  # what the disk holds if the process died now
        herald.seq = herald.snapshot_seq  # no final snapshot: this one is not measured
    again = _herald(crashed, "batch")
    started = time.perf_counter()
    async with again.running():
        await again.wait_ready()
        replay = time.perf_counter() - started
        snapshot = await again.snapshot()
        again.seq = again.snapshot_seq
        return replay, snapshot["seconds"], snapshot, again.progress["replayed"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the replayed journal")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--ingest", type=int, default=200_000, help="events per ingestion measurement")
    parser.add_argument("--skip-replay", action="store_true", help="measure the ingestion only (no replay, no snapshot)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of ingestion runs per measurement (medians; for a busy machine)")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # unknown types and undeliverable effects are part of the set-up
    tune_gc()  # as `herald serve` does

    print(f"generating {args.events:,} events over {args.users:,} users ...", flush=True)
    raws = generate_events(args.ingest if args.skip_replay else args.events, args.users)
    with tempfile.TemporaryDirectory(prefix="herald-journal-bench-") as tmp:
        tmp_path = Path(tmp)
        rows, measured = trio.run(_ingestion, raws[: args.ingest], tmp_path, args.repeat)
        print()
        print_table(("ingestion (in process, 32 callers)", "memory ev/s", "batch ev/s", "ratio", f"target >= {RATIO_TARGET}",
                     "journal us/ev"), rows)
        cost = 1e6 / measured[500, "batch"] - 1e6 / measured[500, "memory"]
        bare = measured["bare"] * 1e6
        print(f"\njournal cost per event, batches of 500 (1/batch - 1/memory): {cost:.2f} us; a bare executemany of rows "
              f"of its shape (500 per transaction, same pragmas): {bare:.2f} us per row; {cost / bare:.2f}x "
              f"(target <= {BARE_TARGET:g}x: {verdict(BARE_TARGET * bare, cost)})")
        if args.skip_replay:
            return
        replay, snap_seconds, snap, replayed = trio.run(_replay_and_snapshot, raws, tmp_path)
    print()
    print_table(
        ("measurement", "value", "target", "verdict"),
        [
            (f"replay of {replayed:,} journaled events", f"{replay:.2f} s ({replayed / replay:,.0f} ev/s)",
             f"<= {REPLAY_TARGET:g} s for 1M", verdict(REPLAY_TARGET * replayed / 1_000_000, replay)),
            (f"snapshot of {snap['actors']:,} actors ({snap['bytes'] / 2**20:.1f} MiB)", f"{snap_seconds:.2f} s",
             f"<= {SNAPSHOT_TARGET:g} s for 100k", verdict(SNAPSHOT_TARGET * snap["actors"] / 100_000, snap_seconds)),
            ("then compacting the journal behind it", f"{snap['compact_seconds']:.2f} s", "-", "-"),
        ],
    )
    live = measured[(500, "batch")]
    print(f"replay / live durable ingestion (batches of 500) in this run: {replayed / replay / live:.2f}x "
          f"(target > 1: {verdict(replayed / replay / live, 1.0 + 1e-9)})")


if __name__ == "__main__":
    main()

"""The trio thread's CPU per single-event commit through a batch-mode journal: event-loop stalls.

Commits ``--commits`` single events one after the other (a short sleep between
them, about the pace of ``bench.latency``'s requests) through
:class:`engine._journal.Journal` in ``batch`` mode, as ``/v1/event`` does, and
times each commit twice: the trio thread's CPU (``time.thread_time``: work that
stalls the event loop, whatever else runs on the machine) and the caller's wall
wait. Issue 27: SQLite's automatic checkpoint used to run in the trio thread
every ~7k commits (6-9 ms of CPU, ~40 ms of wall); a loaded machine hides that
in wall-clock latencies, not in this CPU figure.

    python -m bench.journal_stalls [--commits 20000]     # pin it: taskset -c 0 ...
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.journal_stalls")

import argparse
import tempfile
import time
from datetime import datetime, timezone

import trio

from engine._event import Event
from engine._journal import Durability, Journal
from engine.host import tune_gc

AT = datetime(2021, 3, 1, tzinfo=timezone.utc)
DATA = {"device_id": "device-000123", "training_program_id": "p-101", "training_program_title": "Morning Mobility"}


async def _run(commits: int) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        journal = Journal(tmp, Durability.BATCH)
        await trio.to_thread.run_sync(journal.open)
        timed = []
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            for seq in range(1, commits + 1):
                wall, cpu = time.perf_counter(), time.thread_time()
                journal.add_event(seq, Event(f"id{seq}", "app_launch", f"user-{seq % 500:06d}", AT, DATA, AT), float(seq))
                await journal.commit()
                timed.append((time.thread_time() - cpu, time.perf_counter() - wall))
                await trio.sleep(0.0002)
            nursery.cancel_scope.cancel()
        journal.close()
    return timed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=20_000)
    args = parser.parse_args(argv)
    tune_gc()  # as `herald serve` does
    timed = trio.run(_run, args.commits)[1:]  # the first commit creates the pages: not a stall under load
    cpu = sorted((c for c, _ in timed), reverse=True)
    wall = sorted((w for _, w in timed), reverse=True)
    ms = lambda values: ", ".join(f"{v * 1e3:.1f}" for v in values)  # noqa: E731
    print(f"{len(timed):,} single-event commits (batch mode): the trio thread's CPU per commit: median "
          f"{cpu[len(cpu) // 2] * 1e3:.3f} ms, largest {ms(cpu[:5])} ms; commits with > 5 ms of it: "
          f"{sum(c > 0.005 for c in cpu)}. The caller's wait, largest: {ms(wall[:5])} ms")


if __name__ == "__main__":
    main()

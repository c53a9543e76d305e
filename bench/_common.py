"""What the benchmarks share: a fitness event generator, the engine under test, output.

The generator replays a plausible day of the fitness app: users open the app,
start programs, finish (sometimes after more than 30 minutes, so that
congratulations are due) or cancel them, and a few clients send types no
plugin knows. Timestamps only increase. Most events use the seed's original
flat shape, the rest the improved one (ISO ``timestamp``, ``details`` object).
"""

from __future__ import annotations

import logging
import math
import random
import subprocess
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import orjson

import engine
import engine.host
from plugins.fitness import hooks as fitness_hooks

UTC = timezone.utc

#: The seed's first day: 2021-02-28T00:00:00Z.
SEED_START = datetime(2021, 2, 28, tzinfo=UTC).timestamp()

PROGRAMS = (
    ("p-101", "Morning Mobility"),
    ("p-202", "Core Blast"),
    ("p-303", "HIIT 45"),
    ("p-404", "Yoga Flow"),
    ("p-505", "Marathon Base Builder"),
    ("p-606", None),
)
UNKNOWN_TYPES = ("screen_view", "settings_changed", "push_opened")

#: Shares of the mix (the rest follows each user's session: launch, start, finish or cancel).
UNKNOWN_SHARE = 0.02
IMPROVED_SHARE = 0.3
START_AFTER_LAUNCH = 0.7
FINISH_NOT_CANCEL = 0.8


def _user(index: int) -> str:
    return f"user-{index:06d}"


def _event(number: int | None, user: int, type_: str, at: float, program: tuple[str, str | None] | None,
           improved: bool) -> dict[str, Any]:
    """One event in the seed's flat shape, or in the improved shape (with an id unless ``number`` is None)."""
    details: dict[str, Any] = {"device_id": f"device-{user:06d}"}
    if program is not None:
        details["training_program_id"], details["training_program_title"] = program
    stamp = datetime.fromtimestamp(at, UTC)
    if improved:
        iso = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event = {"user_id": _user(user), "type": type_, "timestamp": iso, "details": details}
        return event if number is None else {"id": f"evt-{number}", **event}
    return {"user_id": _user(user), "type": type_, "time_stamp": stamp.strftime("%Y-%m-%d %H:%M:%S"), **details}


def generate_events(
    n: int, users: int, *, start: float = SEED_START, user_gap: float = 500.0, seed: int = 2021, ids: bool = True
) -> list[dict[str, Any]]:
    """``n`` events of ``users`` users, ``start`` onwards (POSIX seconds).

    Gaps between consecutive events are log-normal around ``user_gap / users``
    (5 ms for 100k users: from under a millisecond to a few seconds); each
    event goes to a random user, so one user's events are about ``user_gap``
    seconds apart on median and ~25 minutes on average: some programs last
    more than 30 minutes, some launches get no start within 10. Without
    ``ids``, no event carries an id (Herald makes one up for each).
    """
    rng = random.Random(seed)
    mu = math.log(user_gap / users)
    launched: set[int] = set()
    running: dict[int, tuple[str, str | None]] = {}
    events = []
    at = start
    for number in range(n):
        at += rng.lognormvariate(mu, 1.5)
        user = rng.randrange(users)
        program = None
        if rng.random() < UNKNOWN_SHARE:
            type_ = rng.choice(UNKNOWN_TYPES)
        elif user in running:
            program = running.pop(user)
            type_ = "training_program_finished" if rng.random() < FINISH_NOT_CANCEL else "training_program_cancelled"
        elif user in launched and rng.random() < START_AFTER_LAUNCH:
            launched.discard(user)
            program = running[user] = rng.choice(PROGRAMS)
            type_ = "training_program_started"
        else:
            launched.add(user)
            type_ = "app_launch"
        improved = rng.random() < IMPROVED_SHARE
        events.append(_event(number if ids else None, user, type_, at, program, improved))
    return events


def app_launches(users: int, *, start: float = SEED_START, gap: float = 0.01) -> list[dict[str, Any]]:
    """One ``app_launch`` (flat shape) per user, ``gap`` seconds apart."""
    return [_event(i, i, "app_launch", start + i * gap, None, False) for i in range(users)]


def encode(events: Sequence[Any]) -> list[bytes]:
    """Each event as JSON bytes (done before timing, as a client would)."""
    return [orjson.dumps(e) for e in events]


def build_engine(emit: Callable[[Any], None]) -> engine.host.Engine:
    """The engine as the benchmarks test it: fitness plugin, default config."""
    logging.getLogger("herald.engine").setLevel(logging.ERROR)  # unknown types are part of the mix
    engine.host.tune_gc()  # as `herald serve` does
    host = engine.host.PluginHost.from_objects(engine.Config(), [fitness_hooks])
    return engine.host.Engine(host, emit=emit, wall=time.monotonic)


def stop_process(proc: Any, grace: float = 10.0) -> None:
    """SIGTERM a server the bench started, SIGKILL it if it is not gone within ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def verdict(value: float, target: float) -> str:
    """``met`` or ``MISSED`` for a higher-is-better measurement."""
    return "met" if value >= target else "MISSED"


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1) -> None:
    """Print rows under ``header``; the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * w for w in widths))

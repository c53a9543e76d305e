"""In-process throughput: JSON bytes -> ``orjson.loads`` -> ``Engine.parse`` -> ``Engine.apply`` -> fitness rules.

What one core can sustain without HTTP (target: at least 150k events/s, issue 17), and,
in the same run, two baselines: a loop that only decodes and dispatches on the
type through a dict, and a naive complete loop that does the same work the
plain way (decode, parse the time, the rules as plain functions over a dict
of per-user dicts, one heap of timers): the engine's rate is reported as a
ratio to it, so machines of different speed compare.

    python -m bench.engine [--events 1000000] [--users 100000]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.engine")

import argparse
import gc
import time
from collections import Counter
from typing import Any

import orjson

from engine import InvalidEvent, Notify

from ._common import build_engine, encode, generate_events, print_table, verdict

TARGET = 150_000


class _GCClock:
    """Seconds spent in the garbage collector while the block runs (part of the loop's time)."""

    def __enter__(self) -> "_GCClock":
        self.seconds, self._started = 0.0, 0.0
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._tick)

    def _tick(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def _time_engine(bodies: list[bytes]) -> tuple[float, Any, Counter[str], int]:
    """Run the measured loop; return seconds, the engine, effects by kind, rejections.

    Effects are counted, not kept: keeping them would make the benchmark, not
    the engine, hold hundreds of MB that every garbage collection walks.
    """
    effects: Counter[str] = Counter()

    def emit(effect: Any) -> None:
        effects[effect.payload.get("type") if isinstance(effect, Notify) else type(effect).__name__] += 1

    eng = build_engine(emit)
    parse, apply, loads = eng.parse, eng.apply, orjson.loads
    rejected = 0
    started = time.perf_counter()
    for body in bodies:
        try:
            apply(parse(loads(body)))
        except InvalidEvent:
            rejected += 1
    return time.perf_counter() - started, eng, effects, rejected


def _naive_complete(bodies: list[bytes]) -> tuple[float, Counter[str]]:
    """The same work written the plain way, with no framework: the reference for the engine.

    ``orjson.loads``, the timestamp parse, a dict of per-user dicts, the congratulate and
    nudge rules as plain functions, one ``heapq`` of timers (with the tie rule: a timer due
    exactly at an event's instant loses to it). No validation beyond what the rules need,
    no journal, no metrics: it is the physical limit of this work in Python.
    """
    import heapq
    from datetime import datetime, timezone

    utc = timezone.utc
    fromiso = datetime.fromisoformat
    users: dict[str, dict] = {}
    heap: list[tuple[float, int, str]] = []
    effects: Counter[str] = Counter()
    seq = 0
    nudge_after, long_enough = 600.0, 1800.0

    def fire_due(now: float) -> None:
        while heap and heap[0][0] < now:
            due, token, user = heapq.heappop(heap)
            state = users[user]
            if state.get("nudge") == token:  # not reset or cancelled since
                del state["nudge"]
                effects["nudge"] += 1

    started = time.perf_counter()
    for body in bodies:
        raw = orjson.loads(body)
        user = raw.get("user_id")
        stamp = raw.get("timestamp") or raw.get("time_stamp")
        moment = fromiso(stamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=utc)
        at = moment.timestamp()
        fire_due(at)
        state = users.get(user)
        if state is None:
            state = users[user] = {"running": {}}
        kind = raw["type"]
        details = raw.get("details") or raw
        if kind == "app_launch":
            seq += 1
            state["nudge"] = seq
            heapq.heappush(heap, (at + nudge_after, seq, user))
        elif kind == "training_program_started":
            state.pop("nudge", None)
            state["running"][details["training_program_id"]] = at
        elif kind == "training_program_finished":
            began = state["running"].pop(details["training_program_id"], None)
            if began is not None and at - began > long_enough:
                effects["congratulate"] += 1
        elif kind == "training_program_cancelled":
            state["running"].pop(details["training_program_id"], None)
    return time.perf_counter() - started, effects


def _handled(raw: dict) -> None:
    """The baseline's handler: does nothing, so the loop costs decode plus dispatch."""


def _time_baseline(bodies: list[bytes]) -> float:
    """The same loop with the engine replaced by a dict dispatch on ``type``."""
    handlers = dict.fromkeys(
        ("app_launch", "training_program_started", "training_program_finished", "training_program_cancelled"),
        _handled,
    )
    loads, get = orjson.loads, handlers.get
    started = time.perf_counter()
    for body in bodies:
        raw = loads(body)
        get(raw["type"], _handled)(raw)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args(argv)

    print(f"generating {args.events:,} events over {args.users:,} users ...", flush=True)
    events = generate_events(args.events, args.users)
    mix = Counter(e["type"] for e in events)
    improved = sum("details" in e for e in events)
    bodies = encode(events)
    del events
    print("mix: " + ", ".join(f"{t} {c / args.events:.1%}" for t, c in mix.most_common())
          + f"; improved shape {improved / args.events:.1%}; avg body {sum(map(len, bodies)) / len(bodies):.0f} B")

    baseline = _time_baseline(bodies)
    naive, naive_effects = _naive_complete(bodies)
    with _GCClock() as gc_clock:
        seconds, eng, effects, rejected = _time_engine(bodies)

    n = len(bodies)
    rate, base_rate = n / seconds, n / baseline
    print()
    print_table(
        ("loop", "seconds", "events/s", "us/event"),
        [
            ("orjson.loads + dict dispatch (baseline)", f"{baseline:.2f}", f"{base_rate:,.0f}", f"{1e6 / base_rate:.2f}"),
            ("naive complete loop (the reference)", f"{naive:.2f}", f"{n / naive:,.0f}", f"{1e6 * naive / n:.2f}"),
            ("orjson.loads + Engine.parse/apply", f"{seconds:.2f}", f"{rate:,.0f}", f"{1e6 / rate:.2f}"),
        ],
    )
    print()
    print(f"engine overhead over baseline: {1e6 * (seconds - baseline) / n:.2f} us/event "
          f"(garbage collection: {gc_clock.seconds:.2f} s of the {seconds:.2f} s)")
    detail = ", ".join(f"{k} {v:,}" for k, v in effects.most_common()) or "none"
    print(f"effects emitted: {effects.total():,} ({detail})")
    print(f"timers pending: {len(eng.timers):,}; actors: {len(eng.actors):,}; rejected: {rejected:,}")
    print(f"target >= {TARGET:,} events/s on one core: {verdict(rate, TARGET)} ({rate / TARGET:.2f}x)")
    ratio = naive / seconds
    print(f"engine / naive complete loop: {ratio:.2f}x the reference's rate (target >= 0.5x: {verdict(ratio, 0.5)}); "
          f"the reference emitted {', '.join(f'{k} {v:,}' for k, v in naive_effects.most_common()) or 'nothing'} "
          "(its one heap fires by the newest timestamp seen, one clock for everyone: the engine's clock per "
          "actor and watermark keep more timers pending, so their counts differ)")


if __name__ == "__main__":
    main()

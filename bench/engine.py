"""In-process throughput: JSON bytes -> ``orjson.loads`` -> ``Engine.parse`` -> ``Engine.apply`` -> fitness rules.

What one core can sustain without HTTP (target: at least 100k events/s), and,
in the same run, a baseline loop that only decodes and dispatches on the type
through a dict, so the engine's own cost per event shows.

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

TARGET = 100_000


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
    with _GCClock() as gc_clock:
        seconds, eng, effects, rejected = _time_engine(bodies)

    n = len(bodies)
    rate, base_rate = n / seconds, n / baseline
    print()
    print_table(
        ("loop", "seconds", "events/s", "us/event"),
        [
            ("orjson.loads + dict dispatch (baseline)", f"{baseline:.2f}", f"{base_rate:,.0f}", f"{1e6 / base_rate:.2f}"),
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


if __name__ == "__main__":
    main()

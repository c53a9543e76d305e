"""A stand-in for the seed's EventProducer: writes the internal topics at the seed's rate.

Two loops, one per topic; each sends one message, then sleeps a whole number
of seconds from 1 to 4 (divided by ``speed``). Users: 10 % new, 90 % a known
user re-sent with each name replaced 40 % of the time (from their *first*
version). Bookings: 70 % new, 30 % a known booking re-sent with a new To,
EndDate and Price; a booking made before any user exists has no UserId.
Values are ``{"Event": ..., "Id": n}`` (PascalCase), keys int32 big-endian
counters from 0, as the original does.

    herald crm-produce --bootstrap 127.0.0.1:9092 [--speed 10] [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import signal
import struct
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson

from .contracts import BOOKING_TOPIC, USER_TOPIC

__all__ = ["Simulation", "add_commands"]

#: Wall-clock seconds between two progress lines on stderr.
PROGRESS_SECONDS = 2.0

_SYLLABLES = ("ba", "ke", "lo", "mi", "nu", "sha", "ty", "ro", "ve", "zhi", "po", "da")


class Simulation:
    """The producer's behaviour as a generator of ``(seconds from start, topic, key, value)``."""

    def __init__(self, seed: int = 1, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.start = start or datetime(2023, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=3)))
        self.users: list[dict[str, Any]] = []
        self.bookings: list[dict[str, Any]] = []

    def _name(self) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(3, 6))).capitalize()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _maybe(self, value: Any) -> Any:
        return value if self.rng.random() < 0.4 else None

    def user(self) -> dict[str, Any]:
        if not self.users or self.rng.random() < 0.1:
            first = {"Id": self._uuid(), "LastName": self._maybe(self._name()), "FirstName": self._maybe(self._name()),
                     "Email": f"{self._name()}@trafi.com"}
            self.users.append(first)
            return dict(first)
        first = self.rng.choice(self.users)
        return {**first, "LastName": self._maybe(self._name()) or first["LastName"],
                "FirstName": self._maybe(self._name()) or first["FirstName"]}

    def booking(self, now: datetime) -> dict[str, Any]:
        index = self.rng.randrange(max(len(self.users), 1))
        if self.bookings and self.rng.random() < 0.3 and index < len(self.bookings):
            first = self.bookings[index]
            return {**first, "To": self._maybe(self._name()), "EndDate": self._end(now),
                    "Price": self._price()}
        first = {"Id": self._uuid(), "UserId": self.rng.choice(self.users)["Id"] if self.users else None,
                 "From": self._maybe(self._name()), "To": self._maybe(self._name()), "Type": self.rng.randrange(3),
                 "StartDate": now.isoformat(), "EndDate": self._end(now), "Price": self._price()}
        self.bookings.append(first)
        return dict(first)

    def _end(self, now: datetime) -> str | None:
        return self._maybe((now + timedelta(minutes=self.rng.randrange(31 * 24 * 60))).isoformat())

    def _price(self) -> float:
        return 0 if self.rng.random() < 0.6 else self.rng.random()

    def messages(self) -> Iterator[tuple[float, str, bytes, bytes]]:
        """Forever, in time order: (t, topic, key, value)."""
        clocks = {USER_TOPIC: 0.0, BOOKING_TOPIC: 0.0}
        counters = {USER_TOPIC: 0, BOOKING_TOPIC: 0}
        while True:
            topic = min(clocks, key=clocks.get)
            t = clocks[topic]
            now = self.start + timedelta(seconds=t)
            event = self.user() if topic == USER_TOPIC else self.booking(now)
            key = counters[topic]
            counters[topic] += 1
            yield t, topic, struct.pack(">i", key), orjson.dumps({"Event": event, "Id": key + 1})
            clocks[topic] += self.rng.randint(1, 4)


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("crm-produce", help="write the internal topics like the seed's EventProducer (crm)",
                                 description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers [env HERALD_KAFKA_BOOTSTRAP]")
    parser.add_argument("--speed", type=float, default=1.0, help="time runs this many times faster (0: no sleeping)")
    parser.add_argument("--seconds", type=float, default=None, help="simulated seconds to produce (default: forever)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed, the same messages (default 1)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    from engine.kafka import KafkaProducer, ensure_topics

    bootstrap = args.bootstrap or os.environ.get("HERALD_KAFKA_BOOTSTRAP")
    if not bootstrap:
        print("herald crm-produce: give --bootstrap (or HERALD_KAFKA_BOOTSTRAP)", file=sys.stderr)
        return 2
    ensure_topics(bootstrap, [USER_TOPIC, BOOKING_TOPIC])
    producer = KafkaProducer(bootstrap, **{"client.id": "trail-day-producer"})
    started = time.monotonic()
    sent = 0
    counts = {USER_TOPIC: 0, BOOKING_TOPIC: 0}
    simulated = 0.0
    due = started  # the first line right after the first message, then one every PROGRESS_SECONDS

    def progress(final: bool = False) -> None:
        nonlocal due
        now = time.monotonic()
        if not final and now < due:
            return
        due = now + PROGRESS_SECONDS
        print(f"produced {sent:,} message{'' if sent == 1 else 's'} ({counts[USER_TOPIC]:,} to {USER_TOPIC}, "
              f"{counts[BOOKING_TOPIC]:,} to {BOOKING_TOPIC}; {simulated:,.0f} simulated s, "
              f"{now - started:,.0f} s)", file=sys.stderr, flush=True)

    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        # Ctrl-C or SIGTERM: stop after the current step, flush, report. Not an exception: one raised inside
        # librdkafka's flush surfaces as a SystemError. A second signal kills at once.
        nonlocal stopping
        stopping = True
        signal.signal(signum, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        for t, topic, key, value in Simulation(args.seed).messages():
            if stopping or (args.seconds is not None and t > args.seconds):
                break
            if args.speed > 0 and started + t / args.speed > time.monotonic():
                producer.flush_blocking()
                while not stopping and (left := started + t / args.speed - time.monotonic()) > 0:
                    progress()
                    time.sleep(min(left, 0.2, max(due - time.monotonic(), 0.01)))
                if stopping:
                    break
            producer.produce(topic, key, value)
            sent += 1
            counts[topic] += 1
            simulated = t
            progress()
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush_blocking()
    progress(final=True)
    return 0

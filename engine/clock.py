"""The engine clock: event time that keeps running between events.

It starts at the first event's timestamp, jumps forward to every newer
timestamp, advances at wall-clock speed in between, and never goes back. A live
app (timestamps close to now) therefore sees timers fire in real time, while a
replay of old events at full speed fires exactly the same timers at exactly the
same engine instants as living through them.
"""

from __future__ import annotations

import math
import time
from typing import Callable

__all__ = ["EngineClock"]


class EngineClock:
    """Event-time watermark; instants are POSIX seconds (floats).

    ``wall`` is a monotonic seconds source. Inside trio it should be
    ``trio.current_time`` so that tests can drive it with ``autojump_clock``.
    """

    __slots__ = ("_wall", "_base", "_wall_base")

    def __init__(self, wall: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._base: float | None = None
        self._wall_base = 0.0

    @property
    def started(self) -> bool:
        return self._base is not None

    def now(self) -> float | None:
        """The current engine instant, or ``None`` before the first event."""
        if self._base is None:
            return None
        return self._base + (self._wall() - self._wall_base)

    def observe(self, instant: float) -> float:
        """Move forward to ``instant`` if it is newer; return the engine time."""
        if self._base is None:
            self._base, self._wall_base = instant, self._wall()
            return instant
        wall = self._wall()
        now = self._base + (wall - self._wall_base)
        if instant > now:
            self._base, self._wall_base = instant, wall
            return instant
        return now

    def arrive(self, instant: float, arrival: float | None = None) -> float | None:
        """Observe an event at ``instant``; return its arrival instant (the clock
        reading before it, or the journaled ``arrival`` given by a replay).

        Same as ``now()`` then ``observe()`` of both, with one wall reading:
        this runs once per event.
        """
        wall = self._wall()
        if self._base is None:
            self._base = instant if arrival is None or instant > arrival else arrival
            self._wall_base = wall
            return arrival
        now = self._base + (wall - self._wall_base)
        if arrival is None:
            arrival = now
        target = instant if instant > arrival else arrival
        if target > now:
            self._base, self._wall_base = target, wall
        return arrival

    def wall_deadline(self, instant: float) -> float:
        """The ``wall`` reading at which the engine clock will reach ``instant``."""
        if self._base is None:
            return math.inf
        return self._wall_base + (instant - self._base)

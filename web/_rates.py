"""Rates over the last hour (events in, effects out) from counters sampled every few seconds.

Prometheus counters only grow; the console wants a per-second rate over time.
:class:`Rates` keeps the last hour of samples in a ring buffer, taken by a
background task that the console starts with the app.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Sequence

import trio

__all__ = ["Rates"]


class Rates:
    """A ring buffer of ``(time, counter, ...)`` samples of ``read()``, every ``interval`` seconds
    over ``window`` seconds; rates are the counters' growth per second between samples."""

    def __init__(self, read: Callable[[], Sequence[float]], *, interval: float = 10.0, window: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read, self.interval, self.window, self.clock = read, interval, window, clock
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=int(window / interval) + 1)
        self._scope: trio.CancelScope | None = None

    def sample(self) -> None:
        self.samples.append((self.clock(), tuple(self.read())))

    def _with_now(self) -> list[tuple[float, tuple[float, ...]]]:
        """The samples and a reading now (unless the last sample is under a second old)."""
        points = list(self.samples)
        now = self.clock()
        if not points or now - points[-1][0] >= 1.0:
            points.append((now, tuple(self.read())))
        return points

    def series(self) -> tuple[float, list[tuple[float, tuple[float, ...]]]]:
        """The time now and ``(age in seconds, rates)`` of each interval of the window, oldest first."""
        points = self._with_now()
        now = points[-1][0]
        out = []
        for (t0, c0), (t1, c1) in zip(points, points[1:]):
            if t1 - t0 > 0 and now - t1 <= self.window:
                out.append((now - t1, tuple(max(b - a, 0) / (t1 - t0) for a, b in zip(c0, c1))))
        return now, out

    def recent(self, seconds: float = 60.0) -> tuple[float, ...] | None:
        """The rates over the last ``seconds`` (or since the oldest sample, if younger); None before two readings."""
        points = self._with_now()
        if len(points) < 2:
            return None
        t1, c1 = points[-1]
        t0, c0 = next(((t, c) for t, c in points if t1 - t <= seconds + 1e-9), points[-2])
        if t0 == t1:
            t0, c0 = points[-2]
        return tuple(max(b - a, 0) / (t1 - t0) for a, b in zip(c0, c1))

    async def run(self) -> None:
        """Sample every ``interval`` seconds until :meth:`stop`."""
        with trio.CancelScope() as self._scope:
            while True:
                self.sample()
                await trio.sleep(self.interval)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

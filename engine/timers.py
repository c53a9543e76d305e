"""All actors' timers in one heap, keyed by engine-clock instants."""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterator

from .actor import Actor

__all__ = ["TimerQueue", "PendingTimer"]


class PendingTimer:
    """One scheduled timer. Cancelled or reset timers are marked dead and
    skipped when they reach the top of the heap (lazy deletion)."""

    __slots__ = ("due", "actor", "plugin", "name", "data", "live")

    def __init__(self, due: float, actor: Actor, plugin: str, name: str, data: Any) -> None:
        self.due = due
        self.actor = actor
        self.plugin = plugin
        self.name = name
        self.data = data
        self.live = True


class TimerQueue:
    """Named per-actor timers: set (or reset), cancel, and pop those due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PendingTimer]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def set(self, actor: Actor, plugin: str, name: str, due: float, data: Any = None) -> None:
        timers = actor.timers
        if timers is None:
            timers = actor.timers = {}
        old = timers.get((plugin, name))
        if old is not None:
            old.live = False
            self._live -= 1
        timer = PendingTimer(due, actor, plugin, name, data)
        timers[(plugin, name)] = timer
        heapq.heappush(self._heap, (due, next(self._seq), timer))
        self._live += 1
        self._maybe_compact()

    def cancel(self, actor: Actor, plugin: str, name: str) -> bool:
        if not actor.timers:
            return False
        timer = actor.timers.pop((plugin, name), None)
        if timer is None:
            return False
        timer.live = False
        self._live -= 1
        if not actor.timers:
            actor.timers = None
        self._maybe_compact()
        return True

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, limit: float, *, inclusive: bool) -> Iterator[PendingTimer]:
        """Yield live timers due before ``limit`` (or at it, if inclusive), in
        due order; each is removed from its actor before it is yielded, so the
        consumer may set a timer of the same name again."""
        heap = self._heap
        while heap:
            due, _, timer = heap[0]
            if due > limit or (due == limit and not inclusive):
                return
            heapq.heappop(heap)
            if not timer.live:
                continue
            timer.live = False
            self._live -= 1
            timers = timer.actor.timers
            if timers is not None:
                timers.pop((timer.plugin, timer.name), None)
                if not timers:
                    timer.actor.timers = None
            yield timer

    def _maybe_compact(self) -> None:
        # Resets leave dead entries behind; rebuild when they dominate.
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 2 * self._live:
            self._heap = [entry for entry in heap if entry[2].live]
            heapq.heapify(self._heap)

"""All actors' timers in one heap, keyed by engine-clock instants."""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterator

from .actor import Actor

__all__ = ["TimerQueue", "PendingTimer", "timers_of"]


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


def timers_of(actor: Actor) -> list[PendingTimer]:
    """An actor's pending timers."""
    held = actor.timers
    if held is None:
        return []
    if held.__class__ is PendingTimer:
        return [held]
    return list(held.values())


def _lookup(actor: Actor, plugin: str, name: str) -> PendingTimer | None:
    held = actor.timers
    if held is None:
        return None
    if held.__class__ is PendingTimer:
        return held if held.name == name and held.plugin == plugin else None
    return held.get((plugin, name))


def _store(actor: Actor, timer: PendingTimer) -> None:
    # One timer sits on the actor as is; a dict only when an actor has several
    # (saves ~300 bytes per idle actor, the common case).
    held = actor.timers
    if held is None or (held.__class__ is PendingTimer and held.name == timer.name and held.plugin == timer.plugin):
        actor.timers = timer
    elif held.__class__ is PendingTimer:
        actor.timers = {(held.plugin, held.name): held, (timer.plugin, timer.name): timer}
    else:
        held[(timer.plugin, timer.name)] = timer


def _remove(actor: Actor, timer: PendingTimer) -> None:
    held = actor.timers
    if held is timer:
        actor.timers = None
    elif held is not None and held.__class__ is not PendingTimer:
        key = (timer.plugin, timer.name)
        if held.get(key) is timer:
            del held[key]
            if len(held) == 1:
                actor.timers = next(iter(held.values()))


class TimerQueue:
    """Named per-actor timers: set (or reset), cancel, and pop those due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PendingTimer]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def set(self, actor: Actor, plugin: str, name: str, due: float, data: Any = None) -> None:
        old = _lookup(actor, plugin, name)
        if old is not None:
            old.live = False
            self._live -= 1
        timer = PendingTimer(due, actor, plugin, name, data)
        _store(actor, timer)
        heapq.heappush(self._heap, (due, next(self._seq), timer))
        self._live += 1
        self._maybe_compact()

    def cancel(self, actor: Actor, plugin: str, name: str) -> bool:
        timer = _lookup(actor, plugin, name)
        if timer is None:
            return False
        timer.live = False
        self._live -= 1
        _remove(actor, timer)
        self._maybe_compact()
        return True

    def cancel_plugin(self, actor: Actor, plugin: str) -> int:
        """Cancel every timer ``plugin`` holds on ``actor`` (its state is going away)."""
        doomed = [t for t in timers_of(actor) if t.plugin == plugin]
        for timer in doomed:
            self.cancel(actor, plugin, timer.name)
        return len(doomed)

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
            _remove(timer.actor, timer)
            yield timer

    def _maybe_compact(self) -> None:
        # Resets leave dead entries behind; rebuild when they dominate.
        heap = self._heap
        if len(heap) > 1024 and len(heap) > 2 * self._live:
            self._heap = [entry for entry in heap if entry[2].live]
            heapq.heapify(self._heap)

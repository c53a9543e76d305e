"""All actors' timers, in two heaps: by when their actor's clock reaches them, and by event time.

A timer is due when its **actor's clock** reaches it (wall deadline ``due -
actor.offset``) or when the **watermark** does (``due - watermark offset``),
whichever comes first (see :mod:`engine.clock`). The first heap is keyed by
the wall deadline and re-keyed (lazily: a new entry, the old one skipped)
when an actor's clock jumps forward; the second is keyed by the due instant
itself, because the watermark moves every timer at once. Cancelled, reset
and fired timers are marked dead and skipped when they reach the top.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

from .actor import Actor

__all__ = ["TimerQueue", "PendingTimer", "timers_of"]


class PendingTimer:
    """One scheduled timer: its due instant in its actor's event time, and its current wall deadline."""

    __slots__ = ("due", "actor", "plugin", "name", "data", "live", "deadline", "seq")

    def __init__(self, due: float, actor: Actor, plugin: str, name: str, data: Any, deadline: float, seq: int) -> None:
        self.due = due
        self.actor = actor
        self.plugin = plugin
        self.name = name
        self.data = data
        self.live = True
        self.deadline = deadline
        self.seq = seq


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
    """Named per-actor timers: set (or reset), cancel, re-key, and take those that are ripe."""

    def __init__(self) -> None:
        self._by_wall: list[tuple[float, int, PendingTimer]] = []  # (wall deadline, seq, timer)
        self._by_due: list[tuple[float, int, PendingTimer]] = []  # (due instant, seq, timer)
        self._seq = itertools.count()
        self._live = 0
        self._compact_at = 1024  # heap length that triggers a look for dead entries

    def __len__(self) -> int:
        return self._live

    def set(self, actor: Actor, plugin: str, name: str, due: float, data: Any, offset: float) -> PendingTimer:
        """Set (or reset) ``actor``'s timer ``name`` of ``plugin``; ``offset`` is the actor's clock offset."""
        old = _lookup(actor, plugin, name)
        if old is not None:
            old.live = False
            self._live -= 1
        seq = next(self._seq)
        timer = PendingTimer(due, actor, plugin, name, data, due - offset, seq)
        _store(actor, timer)
        heapq.heappush(self._by_wall, (timer.deadline, seq, timer))
        heapq.heappush(self._by_due, (due, seq, timer))
        self._live += 1
        self._maybe_compact()
        return timer

    def cancel(self, actor: Actor, plugin: str, name: str) -> bool:
        timer = _lookup(actor, plugin, name)
        if timer is None:
            return False
        self.take(timer)
        self._maybe_compact()
        return True

    def cancel_plugin(self, actor: Actor, plugin: str) -> int:
        """Cancel every timer ``plugin`` holds on ``actor`` (its state is going away)."""
        doomed = [t for t in timers_of(actor) if t.plugin == plugin]
        for timer in doomed:
            self.cancel(actor, plugin, timer.name)
        return len(doomed)

    def take(self, timer: PendingTimer) -> None:
        """Remove a live timer (it is about to fire, or is cancelled); its heap entries go stale."""
        timer.live = False
        self._live -= 1
        _remove(timer.actor, timer)

    def rekey(self, actor: Actor, offset: float) -> float:
        """The actor's clock jumped forward: its timers' wall deadlines come earlier.
        Returns the earliest of them (``inf`` if none)."""
        earliest = math.inf
        for timer in timers_of(actor):
            deadline = timer.due - offset
            if deadline != timer.deadline:
                timer.deadline = deadline
                heapq.heappush(self._by_wall, (deadline, timer.seq, timer))
            if deadline < earliest:
                earliest = deadline
        self._maybe_compact()
        return earliest

    def due_before(self, actor: Actor, instant: float) -> list[PendingTimer]:
        """``actor``'s timers due strictly before ``instant``, in due order."""
        held = actor.timers
        if held is None:
            return []
        if held.__class__ is PendingTimer:
            return [held] if held.due < instant else []
        return sorted((t for t in held.values() if t.due < instant), key=lambda t: (t.due, t.seq))

    def _head_by_wall(self) -> PendingTimer | None:
        heap = self._by_wall
        while heap:
            deadline, _, timer = heap[0]
            if timer.live and deadline == timer.deadline:
                return timer
            heapq.heappop(heap)
        return None

    def _head_by_due(self) -> PendingTimer | None:
        heap = self._by_due
        while heap:
            timer = heap[0][2]
            if timer.live:
                return timer
            heapq.heappop(heap)
        return None

    def min_due(self) -> float | None:
        """The earliest due instant of any pending timer (what the watermark reaches first)."""
        timer = self._head_by_due()
        return None if timer is None else timer.due

    def next_deadline(self, watermark_offset: float) -> float:
        """The wall reading at which the next timer falls due (``inf`` if none)."""
        first = self._head_by_wall()
        best = math.inf if first is None else first.deadline
        second = self._head_by_due()
        if second is not None:
            best = min(best, second.due - watermark_offset)
        return best

    def pop_ripe(self, wall: float, watermark_offset: float) -> PendingTimer | None:
        """The next timer due at or before ``wall`` (by its actor's clock or by the watermark),
        taken off the queue; None if none is. Ties go to the earlier-set timer."""
        first = self._head_by_wall()
        second = self._head_by_due()
        if second is not None and (second.due - watermark_offset) <= wall and (
                first is None or (second.due - watermark_offset, second.seq) < (first.deadline, first.seq)):
            chosen = second
        elif first is not None and first.deadline <= wall:
            chosen = first
        else:
            return None
        self.take(chosen)
        return chosen

    def _maybe_compact(self) -> None:
        # Resets, cancels and re-keys leave dead entries behind; rebuild a heap when they dominate.
        if len(self._by_wall) <= self._compact_at and len(self._by_due) <= self._compact_at:
            return
        live = self._live
        if len(self._by_wall) > 2 * live:
            self._by_wall = [e for e in self._by_wall if e[2].live and e[0] == e[2].deadline]
            heapq.heapify(self._by_wall)
        if len(self._by_due) > 2 * live:
            self._by_due = [e for e in self._by_due if e[2].live]
            heapq.heapify(self._by_due)
        self._compact_at = max(1024, 2 * live, len(self._by_wall), len(self._by_due))

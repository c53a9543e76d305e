"""All actors' timers, in two heaps: by when their actor's clock reaches them, and by event time.

A timer is due when its **actor's clock** reaches it (wall deadline ``due -
actor.offset``) or when the **watermark** does (``due - watermark offset``),
whichever comes first (see :mod:`engine._clock`). The first heap is keyed by
the wall deadline and re-keyed (lazily: a new entry, the old one skipped)
when an actor's clock jumps forward; the second is keyed by the due instant
itself, because the watermark moves every timer at once. Cancelled, reset
and fired timers leave the table of live timers and are skipped when they
reach the top.

Heap entries are plain ints packing the key (in microseconds) above the
timer's sequence number, with the timer looked up by that number in the
table: ints are neither containers nor tracked by the garbage collector, so
a heap of pending timers costs it nothing (tuples would be collected, and
counted towards every collection, until they are old). Keys equal to the
microsecond go by sequence; whether a timer is ripe is decided on its exact
float deadline.
"""

from __future__ import annotations

import heapq
import itertools
import math
from heapq import heappush
from typing import Any

from ._actor import Actor

__all__ = ["TimerQueue", "PendingTimer", "timers_of"]


class PendingTimer:
    """One scheduled timer: its due instant in its actor's event time, and its current wall deadline."""

    __slots__ = ("due", "actor", "plugin", "name", "data", "deadline", "seq")

    def __init__(self, due: float, actor: Actor, plugin: str, name: str, data: Any, deadline: float, seq: int) -> None:
        self.due = due
        self.actor = actor
        self.plugin = plugin
        self.name = name
        self.data = data
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


_new_object = object.__new__
#: Whether this module runs compiled by mypyc (the optional build: docs/operations/compiled.md). Then
#: ``PendingTimer`` is a native class: its constructor is a C call, and ``object.__new__`` refuses it.
_COMPILED = not __file__.endswith(".py")

_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1


def _entry(key: float, seq: int) -> int:
    """A heap entry: ``key`` in whole microseconds (monotonic in ``key``), then ``seq``."""
    return (int(key * 1_000_000) << _SEQ_BITS) | seq


class TimerQueue:
    """Named per-actor timers: set (or reset), cancel, re-key, and take those that are ripe."""

    def __init__(self) -> None:
        self._by_wall: list[int] = []  # _entry(wall deadline, seq)
        self._by_due: list[int] = []  # _entry(due instant, seq)
        self._live: dict[int, PendingTimer] = {}  # seq -> timer, for the pending ones only
        self._seq = itertools.count()
        self._compact_at = 1024  # heap length that triggers a look for dead entries

    def __len__(self) -> int:
        return len(self._live)

    def set(self, actor: Actor, plugin: str, name: str, due: float, data: Any, offset: float) -> PendingTimer:
        """Set (or reset) ``actor``'s timer ``name`` of ``plugin``; ``offset`` is the actor's clock offset."""
        live = self._live
        held = actor.timers
        # The usual cases inline: no timer yet, or this one (reset). Else the general helpers.
        if held is None:
            old = None
        elif held.__class__ is PendingTimer and held.name == name and held.plugin == plugin:
            old = held
        else:
            old = _lookup(actor, plugin, name)
        if old is not None:
            del live[old.seq]
        seq = next(self._seq)
        deadline = due - offset
        if _COMPILED:
            timer = PendingTimer(due, actor, plugin, name, data, deadline, seq)
        else:
            timer = _new_object(PendingTimer)  # PendingTimer(...) without its __init__ frame: one per timer set
            timer.due = due
            timer.actor = actor
            timer.plugin = plugin
            timer.name = name
            timer.data = data
            timer.deadline = deadline
            timer.seq = seq
        if held is None or held is old:
            actor.timers = timer
        else:
            _store(actor, timer)
        live[seq] = timer
        by_wall = self._by_wall
        heappush(by_wall, (int(deadline * 1_000_000) << _SEQ_BITS) | seq)  # _entry(), inline: this runs per timer
        heappush(self._by_due, (int(due * 1_000_000) << _SEQ_BITS) | seq)
        if len(by_wall) > self._compact_at:
            self._compact()
        return timer

    def is_pending(self, timer: PendingTimer) -> bool:
        return self._live.get(timer.seq) is timer

    def cancel(self, actor: Actor, plugin: str, name: str) -> bool:
        held = actor.timers
        if held is None:
            return False
        if held.__class__ is PendingTimer:  # the usual case, inline: what _lookup and take do for a lone timer
            if held.name != name or held.plugin != plugin:
                return False
            del self._live[held.seq]
            actor.timers = None
            return True
        timer = _lookup(actor, plugin, name)
        if timer is None:
            return False
        self.take(timer)
        return True

    def cancel_plugin(self, actor: Actor, plugin: str) -> int:
        """Cancel every timer ``plugin`` holds on ``actor`` (its state is going away)."""
        doomed = [t for t in timers_of(actor) if t.plugin == plugin]
        for timer in doomed:
            self.cancel(actor, plugin, timer.name)
        return len(doomed)

    def take(self, timer: PendingTimer) -> None:
        """Remove a pending timer (it is about to fire, or is cancelled); its heap entries go stale."""
        del self._live[timer.seq]
        _remove(timer.actor, timer)

    def rekey(self, actor: Actor, offset: float) -> float:
        """The actor's clock jumped forward: its timers' wall deadlines come earlier.
        Returns the earliest of them (``inf`` if none)."""
        held = actor.timers
        if held.__class__ is PendingTimer:  # the usual case, inline: one timer, held as is
            deadline = held.due - offset
            if deadline != held.deadline:
                held.deadline = deadline
                by_wall = self._by_wall
                heappush(by_wall, (int(deadline * 1_000_000) << _SEQ_BITS) | held.seq)  # _entry(), inline
                if len(by_wall) > self._compact_at:
                    self._compact()
            return deadline
        earliest = math.inf
        for timer in timers_of(actor):
            deadline = timer.due - offset
            if deadline != timer.deadline:
                timer.deadline = deadline
                heapq.heappush(self._by_wall, _entry(deadline, timer.seq))
            if deadline < earliest:
                earliest = deadline
        if len(self._by_wall) > self._compact_at:
            self._compact()
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
        heap, live = self._by_wall, self._live
        while heap:
            entry = heap[0]
            timer = live.get(entry & _SEQ_MASK)
            if timer is not None and entry == _entry(timer.deadline, timer.seq):  # not a re-keyed one's old entry
                return timer
            heapq.heappop(heap)
        return None

    def _head_by_due(self) -> PendingTimer | None:
        heap, live = self._by_due, self._live
        while heap:
            timer = live.get(heap[0] & _SEQ_MASK)
            if timer is not None:
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

    def _compact(self) -> None:
        # Resets, cancels and re-keys leave dead entries behind; rebuild a heap when they dominate.
        live = self._live
        if len(self._by_wall) > 2 * len(live):
            self._by_wall = [e for e in self._by_wall  # _entry(), inline: this runs per entry
                             if (t := live.get(e & _SEQ_MASK)) is not None
                             and e == (int(t.deadline * 1_000_000) << _SEQ_BITS) | t.seq]
            heapq.heapify(self._by_wall)
        if len(self._by_due) > 2 * len(live):
            self._by_due = [e for e in self._by_due if e & _SEQ_MASK in live]
            heapq.heapify(self._by_due)
        self._compact_at = max(1024, 2 * len(live), len(self._by_wall), len(self._by_due))

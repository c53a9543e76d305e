"""Recognising repeated events within a retention window: the same id for the same key.

An event's id is an idempotency key *within its actor's key*: two keys never share
one, so no client can make another key's event a "duplicate" (or learn which ids
it used) by sending that id first. Ids restored from snapshots written before the
scoping (format 2 without ``keyed_ids``) carry no key: they count as repeats for
every key, as they did when accepted, until they expire.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

__all__ = ["IdWindow", "Recent"]


@attrs.define
class Recent:
    """What a window remembers, as a snapshot stores it (oldest first): ``at[i]`` is when
    ``pairs[i]`` (``(key, id)``) was accepted; ``unkeyed`` are ``(accepted at, id)`` pairs
    from a snapshot written before ids were scoped by key."""

    at: list[float] = attrs.field(factory=list)
    pairs: list[tuple[str, str]] = attrs.field(factory=list)
    unkeyed: list[tuple[float, str]] = attrs.field(factory=list)

    @classmethod
    def of_snapshot(cls, doc: dict[str, Any]) -> "Recent":
        """Read a decoded snapshot's ids: ``ids`` (``[at, id]``, every snapshot so far has it;
        no key) and ``keyed_ids`` (``{"at": [...], "ids": [[key, id], ...]}``, absent before)."""
        keyed = doc.get("keyed_ids") or {}
        pairs: list[tuple[str, str]] = list(map(tuple, keyed.get("ids", ())))  # type: ignore[arg-type]
        at = list(keyed.get("at", ()))
        if len(at) != len(pairs):
            raise ValueError(f"keyed_ids: {len(at)} instants for {len(pairs)} ids")
        return cls(at, pairs, list(map(tuple, doc.get("ids", ()))))  # type: ignore[arg-type]

    def to_snapshot(self) -> dict[str, Any]:
        """The members a snapshot stores (``ids`` keeps its meaning: ids that repeat for every key)."""
        return {"ids": self.unkeyed, "keyed_ids": {"at": self.at, "ids": self.pairs}}


class IdWindow:
    """The ``(key, id)`` pairs accepted in the last ``retention`` seconds (at most ``limit`` of them).

    Two parallel deques keep the order (instants, pairs): the pair tuple doubles as the
    dict key, so remembering an event allocates one tuple, as a bare id did."""

    def __init__(self, retention: float, limit: int) -> None:
        self.retention = retention
        self.limit = limit
        self._ids: dict[tuple[str, str], float] = {}
        self._at: deque[float] = deque()
        self._pairs: deque[tuple[str, str]] = deque()
        #: Ids without a key (from an older snapshot), a repeat for every key: older than any pair.
        self._unkeyed: dict[str, float] = {}
        self._unkeyed_order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._ids) + len(self._unkeyed)

    def seen(self, key: str, event_id: str) -> bool:
        """Whether ``event_id`` was accepted for ``key`` (or, restored without a key, for any key)."""
        return (key, event_id) in self._ids or (bool(self._unkeyed) and event_id in self._unkeyed)

    def remember(self, key: str, event_id: str, at: float) -> bool:
        """Remember ``(key, event_id)`` as accepted at ``at`` and return True; if it is a repeat,
        return False and change nothing."""
        pair = (key, event_id)
        ids = self._ids
        if pair in ids or (self._unkeyed and event_id in self._unkeyed):
            return False
        ids[pair] = at
        times = self._at
        times.append(at)
        self._pairs.append(pair)
        if self._unkeyed_order:  # ids from an older snapshot left: they expire first (for a retention at most)
            self._prune(at)
        elif len(times) > self.limit or times[0] < at - self.retention:
            self._prune(at)
        return True

    def items(self) -> Recent:
        """What a snapshot stores, copied as it is now (cheap: the trio thread takes it)."""
        return Recent(list(self._at), list(self._pairs), list(self._unkeyed_order))

    def restore(self, recent: Recent, now: float) -> None:
        """Remember a snapshot's (and a replay's) ids again, then forget the expired.

        In bulk: a recovery restores up to a million of them. Adding them all and pruning once
        leaves what adding them one by one (pruning as ``remember`` does) leaves: pruning only ever
        drops the oldest entries, by age or beyond the limit, and an entry old or surplus
        midway is so at the end too. A repeated entry may appear twice; the later one is kept."""
        self._unkeyed.update({event_id: at for at, event_id in recent.unkeyed})
        self._unkeyed_order.extend(recent.unkeyed)
        self._ids.update(zip(recent.pairs, recent.at))
        self._at.extend(recent.at)
        self._pairs.extend(recent.pairs)
        self._prune(now)

    def _prune(self, now: float) -> None:
        cutoff, limit = now - self.retention, self.limit
        unkeyed, unkeyed_order = self._unkeyed, self._unkeyed_order
        while unkeyed_order and (len(unkeyed_order) + len(self._at) > limit or unkeyed_order[0][0] < cutoff):
            at, event_id = unkeyed_order.popleft()
            if unkeyed.get(event_id) == at:
                del unkeyed[event_id]
        times, pairs, ids = self._at, self._pairs, self._ids
        extra = len(unkeyed_order)
        while times and (len(times) + extra > limit or times[0] < cutoff):
            at = times.popleft()
            pair = pairs.popleft()
            if ids.get(pair) == at:
                del ids[pair]

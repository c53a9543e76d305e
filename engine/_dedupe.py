"""Recognising repeated event ids (idempotency keys) within a retention window."""

from __future__ import annotations

from collections import deque
from typing import Iterable

__all__ = ["IdWindow"]


class IdWindow:
    """The ids accepted in the last ``retention`` seconds (at most ``limit`` of them)."""

    def __init__(self, retention: float, limit: int) -> None:
        self.retention = retention
        self.limit = limit
        self._ids: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str, at: float) -> None:
        self._ids[event_id] = at
        self._order.append((at, event_id))
        if len(self._order) > self.limit or self._order[0][0] < at - self.retention:
            self._prune(at)

    def items(self) -> list[tuple[float, str]]:
        """``(accepted at, id)`` pairs, oldest first, for snapshots (a repeated id may
        appear twice; loading keeps the later one)."""
        return list(self._order)

    def restore(self, pairs: Iterable[tuple[float, str]], now: float) -> None:
        """Remember ``(accepted at, id)`` pairs again (from a snapshot and a replay), then forget the expired.

        In bulk: a recovery restores up to a million of them. Adding them all and pruning once
        leaves what adding them one by one (pruning as ``add`` does) leaves: pruning only ever
        drops the oldest entries, by age or beyond the limit, and an entry old or surplus
        midway is so at the end too."""
        pairs = pairs if isinstance(pairs, list) else list(pairs)
        self._ids.update({event_id: at for at, event_id in pairs})
        self._order.extend(pairs)
        self._prune(now)

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        order, ids = self._order, self._ids
        while order and (len(order) > self.limit or order[0][0] < cutoff):
            at, event_id = order.popleft()
            if ids.get(event_id) == at:
                del ids[event_id]

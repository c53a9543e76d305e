"""Herald's own notification receiver, the default target of :class:`Notify`.

It keeps the most recent notifications in memory and drops repeats of an
``Idempotency-Key`` it has already stored, as a real receiver should, so that
``herald serve`` alone demonstrates the whole flow.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Any

__all__ = ["NotifyInbox"]


class NotifyInbox:
    def __init__(self, keep: int = 1000, remember_keys: int = 100_000) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=keep)
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_keys
        self.received = 0
        self.duplicates = 0

    def add(self, payload: Any, idempotency_key: str | None) -> bool:
        """Store a notification; False if its key was seen before (a duplicate)."""
        if idempotency_key:
            if idempotency_key in self._keys:
                self.duplicates += 1
                return False
            self._keys[idempotency_key] = None
            if len(self._keys) > self._remember:
                self._keys.popitem(last=False)
        self.received += 1
        self._items.append(
            {
                "received_at": datetime.now(timezone.utc).isoformat(),
                "idempotency_key": idempotency_key,
                "payload": payload,
            }
        )
        return True

    def latest(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(self._items)
        return items if limit is None else items[-limit:] if limit else []

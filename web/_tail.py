"""The live tail of ingestion: the latest events accepted and rejected over HTTP, in a bounded deque.

:class:`web._ingest.IngestApp` records each event here as a small tuple (no
formatting, nothing of its data kept), so the hot path pays an append and
memory stays at :data:`CAPACITY` entries whatever the traffic.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from engine import Event, InvalidEvent

__all__ = ["ACCEPTED", "CAPACITY", "DUPLICATE", "EventTail", "REJECTED"]

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
#: Entries kept (the oldest go first).
CAPACITY = 1000
#: Longest text kept of a rejected event's type, key or id (a rejected body may carry anything).
_SHORT = 200

#: An entry: (received, outcome, type, key, id, field, code, message); received is a datetime for
#: accepted events (the event's own receipt stamp) and POSIX seconds for rejected ones.
Entry = tuple


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _SHORT else text[:_SHORT] + "…"


class EventTail:
    """The last :data:`CAPACITY` events that reached the ingestion routes, numbered from 1."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.entries: deque[Entry] = deque(maxlen=capacity)
        #: How many entries were ever recorded (the number of the newest).
        self.total = 0

    @classmethod
    def of(cls, herald: Any) -> "EventTail":
        """The one tail of a server (ingestion writes it, the console reads it)."""
        return herald.part("web.event_tail", cls)

    # -- recording (the ingestion path) ---------------------------------------------------

    def add(self, event: "Event", duplicate: bool) -> None:
        """One event accepted (``POST /v1/event``)."""
        self.entries.append((event.received_at, DUPLICATE if duplicate else ACCEPTED, event.type, event.key,
                             event.id, None, None, None))
        self.total += 1

    def accepted(self, events: Sequence["Event"], duplicates: Sequence[bool]) -> None:
        self.entries.extend([(e.received_at, DUPLICATE if d else ACCEPTED, e.type, e.key, e.id, None, None, None)
                             for e, d in zip(events, duplicates)])
        self.total += len(events)

    def rejected(self, raw: Any, error: "InvalidEvent") -> None:
        if isinstance(raw, dict):
            key = raw.get("key", raw.get("user_id", raw.get("device_id")))
            type_, id_ = raw.get("type"), raw.get("id")
        else:
            key = type_ = id_ = None
        self.entries.append((time.time(), REJECTED, _short(type_), _short(key), _short(id_),
                             error.field, error.code, error.message))
        self.total += 1

    # -- reading (the console) --------------------------------------------------------------

    def numbered(self, after: int = 0) -> Iterator[tuple[int, Entry]]:
        """``(number, entry)`` of the entries numbered above ``after``, newest first."""
        number = self.total
        for entry in reversed(self.entries):
            if number <= after:
                return
            yield number, entry
            number -= 1

    def matching(self, *, type_: str = "", key: str = "", outcome: str = "", after: int = 0,
                 limit: int = CAPACITY) -> list[tuple[int, Entry]]:
        """The newest entries (at most ``limit``) of that type (exact), whose key contains ``key``,
        with that outcome (``accepted`` includes duplicates), numbered above ``after``."""
        found = []
        for number, entry in self.numbered(after):
            if type_ and entry[2] != type_:
                continue
            if key and (entry[3] is None or key not in entry[3]):
                continue
            if outcome and (entry[1] == REJECTED) != (outcome == REJECTED):
                continue
            found.append((number, entry))
            if len(found) >= limit:
                break
        return found

    def types(self) -> list[str]:
        """The event types in the tail now, sorted (for a filter's choices)."""
        return sorted({e[2] for e in self.entries if e[2] is not None})

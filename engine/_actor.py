"""Virtual actors: one per key, created on first use, no task of their own."""

from __future__ import annotations

from typing import Any

__all__ = ["Actor"]


class Actor:
    """The state Herald holds for one key (usually a user).

    ``states`` maps a plugin name to that plugin's state value; ``timers`` holds
    the pending timers (managed by :class:`engine._timers.TimerQueue`: one timer
    as is, several in a dict); ``unknown`` counts events of types no plugin
    handles. Both stay ``None`` until used, which keeps an idle actor small.
    ``offset`` is the actor's clock: its event time is ``wall + offset`` (None
    before its first event; see :mod:`engine._clock`).
    """

    __slots__ = ("key", "states", "timers", "unknown", "offset")

    def __init__(self, key: str) -> None:
        self.key = key
        self.states: dict[str, Any] = {}
        self.timers: Any = None
        self.unknown: dict[str, int] | None = None
        self.offset: float | None = None

    def __repr__(self) -> str:
        return f"Actor({self.key!r}, plugins={sorted(self.states)})"

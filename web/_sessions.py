"""Signed-in browsers: random session ids kept in this process's memory, each with an idle and an absolute lifetime.

Nothing is written anywhere: signing out ends a session, and a restart (which a
new admin token needs) ends them all. Time is trio's clock, so tests can jump it.
"""

from __future__ import annotations

import secrets
from typing import Callable

import attrs
import trio

__all__ = ["Sessions"]


@attrs.define
class _Session:
    started: float
    seen: float


class Sessions:
    """The live sessions of one server: at most ``limit`` of them (beyond, the least recently
    used one ends), each ending ``idle`` seconds after its last request or ``lifetime``
    seconds after it started, whichever comes first."""

    def __init__(self, idle: float, lifetime: float, *, limit: int = 1000,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.idle, self.lifetime, self.limit, self._clock = idle, lifetime, limit, clock
        #: Least recently used first (a session moves to the end at each request).
        self._live: dict[str, _Session] = {}

    def __len__(self) -> int:
        return len(self._live)

    def _expired(self, session: _Session, now: float) -> bool:
        return now >= session.seen + self.idle or now >= session.started + self.lifetime

    def start(self) -> str:
        """A new session's id (256 random bits, URL-safe)."""
        now = self._clock()
        self._prune(now)
        while len(self._live) >= self.limit:
            del self._live[next(iter(self._live))]
        sid = secrets.token_urlsafe(32)
        self._live[sid] = _Session(now, now)
        return sid

    def touch(self, sid: str | None) -> bool:
        """Whether ``sid`` is a live session; if so, this request counts as its latest."""
        if not sid:
            return False
        session = self._live.pop(sid, None)
        if session is None:
            return False
        now = self._clock()
        if self._expired(session, now):
            return False
        session.seen = now
        self._live[sid] = session
        return True

    def end(self, sid: str | None) -> None:
        """End ``sid`` (signing out); nothing if it is not live."""
        if sid:
            self._live.pop(sid, None)

    def _prune(self, now: float) -> None:
        # Least recently used first: idle ones are at the front; one that outlived its lifetime
        # while busy goes when it is next touched, or when it reaches the front.
        live = self._live
        while live:
            oldest = next(iter(live))
            if not self._expired(live[oldest], now):
                break
            del live[oldest]

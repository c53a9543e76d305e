"""Slowing down whoever guesses the admin token: failures per client address, and the lockouts they earn.

A few failures cost nothing (a typo); after that each failure locks the address
out for a delay that doubles every time, during which whatever it presents is
answered ``429`` without being checked. Time is trio's clock, so tests can jump it.
"""

from __future__ import annotations

import logging
from typing import Callable

import attrs
import trio

__all__ = ["Guesses"]

log = logging.getLogger("herald.auth")


@attrs.define
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Guesses:
    """Failed attempts at the admin token (bearer header or sign-in form) per client address.

    ``free`` failures are answered as usual (401); the next one, and each one after the
    lockout it earned is over, locks the address out for ``first_delay`` seconds, doubling
    up to ``max_delay``. A success (when not locked) forgets the address's failures, and so
    does ``forget`` seconds of quiet after its last failure or lockout. At most ``limit``
    addresses are remembered: beyond, the least recently failing one is forgotten.
    """

    def __init__(self, *, free: int = 10, first_delay: float = 1.0, max_delay: float = 900.0,
                 forget: float = 900.0, limit: int = 10_000, clock: Callable[[], float] = trio.current_time) -> None:
        self.free, self.first_delay, self.max_delay = free, first_delay, max_delay
        self.forget, self.limit, self._clock = forget, limit, clock
        #: Oldest failure first (a record moves to the end when it fails again).
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def _stale(self, record: _Record, now: float) -> bool:
        return now >= max(record.last, record.locked_until) + self.forget

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before a credential of it is checked again (0: it may try now)."""
        if not self._records:
            return 0.0
        record = self._records.get(client)
        return 0.0 if record is None else max(0.0, record.locked_until - self._clock())

    def failed(self, client: str) -> float:
        """Count a wrong credential from ``client``; the lockout it earns, in seconds (0: none)."""
        now = self._clock()
        record = self._records.pop(client, None)
        if record is None or self._stale(record, now):
            record = _Record()
        record.failures += 1
        record.last = now
        self._records[client] = record
        self._trim(now)
        beyond = record.failures - self.free
        if beyond <= 0:
            return 0.0
        delay = min(self.max_delay, self.first_delay * 2.0 ** min(beyond - 1, 40))
        record.locked_until = now + delay
        # Once per lockout (attempts while locked are not checked, so not counted); never what was presented.
        log.warning("%s: %d failed attempts at the admin token; its attempts are refused (429) for %g s",
                    client, record.failures, delay)
        return delay

    def succeeded(self, client: str) -> None:
        """``client`` presented the right credential: its failures are forgotten."""
        if self._records:
            self._records.pop(client, None)

    def _trim(self, now: float) -> None:
        records = self._records
        while records:
            oldest = next(iter(records))
            if len(records) > self.limit or self._stale(records[oldest], now):
                del records[oldest]
            else:
                break

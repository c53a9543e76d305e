"""Polling the provider: fetch, parse, turn changed plans into events; never let the provider hurt us.

Every ``interval`` seconds (±10 % jitter) the feed is fetched with a timeout
and a size limit, parsed in a worker thread, and each plan whose values
differ from its actor's becomes a ``marketplace.plan_seen`` event. Failures
back off exponentially (up to ``max_backoff``); after ``trip_after``
consecutive failures a circuit breaker stops calling for ``open_seconds``,
then lets one attempt through. The last success, error and circuit state are
in ``/healthz`` (``sources.marketplace``) and in the metrics. The plans change at
an instant announced before the read (``SearchIndex.poll_due``), so that caches
in front (``Cache-Control: max-age``, docs/front.md) keep answers until then and
never past it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import httpx
import trio
from prometheus_client import Counter, Gauge

from engine import Context, Event, new_event_id, redact_url

from .feed import FeedError, PlanValues, Skipped, parse_feed
from .model import SEEN, Plan, seen_data
from .search import PLUGIN, SearchIndex

__all__ = ["Poller", "PollError"]

log = logging.getLogger("herald.marketplace")


class PollError(Exception):
    """A poll that changed nothing (the provider failed, or its answer was unusable)."""


class Poller:
    def __init__(self, context: Context, index: SearchIndex, url: str | None, *, interval: float = 60.0,
                 timeout: float = 10.0, max_bytes: int = 512 * 1024 * 1024, trip_after: int = 5,
                 open_seconds: float = 60.0, max_backoff: float = 600.0, register_metrics: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 run_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None) -> None:
        self.context, self.index, self.url = context, index, url
        self.transport = transport  # how the provider is reached (None: the network; tests pass one)
        #: How a feed is parsed off the event loop: a worker thread (tests on a virtual clock pass one that
        #: parses inline, so that the clock does not jump while a thread works).
        self.run_sync = run_sync or trio.to_thread.run_sync
        if url:
            index.poll_due = -math.inf  # a poll is due: no answer is kept until the first one applied
        self.interval, self.timeout, self.max_bytes = interval, timeout, max_bytes
        self.trip_after, self.open_seconds, self.max_backoff = trip_after, open_seconds, max_backoff
        self.failures = 0
        self.open_until = 0.0
        self._warned: set[tuple[str | None, str | None, str]] = set()
        self._last_digest: bytes | None = None
        self.health: dict[str, Any] = context.health(PLUGIN, {
            "provider_url": url and redact_url(url), "interval_seconds": interval, "circuit": "closed", "last_attempt": None,
            "last_success": None, "last_error": None, "consecutive_failures": 0, "plans_in_last_feed": None,
            "skipped_in_last_feed": None, "changed_in_last_feed": None, "searchable_plans": None,
        })
        registry = context.metrics if register_metrics else None
        self._polls = Counter("herald_marketplace_polls", "Provider polls, by outcome", ["outcome"], registry=registry)
        self._last_success = Gauge("herald_marketplace_last_success_timestamp",
                                   "When the provider's feed was last read (Unix time)", registry=registry)
        Gauge("herald_marketplace_plans", "Plans that can be searched", registry=registry).set_function(
            lambda: len(index))

    # -- the loop ---------------------------------------------------------------------

    def next_delay(self) -> float:
        base = self.interval if not self.failures else min(self.interval * 2 ** self.failures, self.max_backoff)
        return base * random.uniform(0.9, 1.1)

    async def run(self) -> None:
        if not self.url:
            self.health["last_error"] = "no provider configured (HERALD_MARKETPLACE_PROVIDER_URL)"
            log.info("marketplace: no provider URL configured; /search serves what the journal holds")
            await trio.sleep_forever()
        # Each poll reads the feed first and changes the plans at an instant announced beforehand
        # (``index.poll_due``): until then answers may be kept by caches (SearchIndex.max_age_at), and
        # none is kept past it. The instant is ``lead`` after the read starts: twice the last read's
        # time and a second, at most half the interval, so that a slow read (a large feed) does not
        # leave caches empty while it lasts; the first poll applies as soon as it has read.
        start = trio.current_time()
        self.index.poll_due = start
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True,
                                         transport=self.transport) as client:
                while True:
                    await trio.sleep_until(start)
                    start, due = trio.current_time(), self.index.poll_due
                    try:
                        read = await self.read(client)
                    except PollError:
                        read = None  # recorded in the health already
                    lead = min(self.interval / 2, 2 * (trio.current_time() - start) + 1.0)
                    if read is not None:
                        await trio.sleep_until(due)
                        await self.apply_read(read)
                    start += self.next_delay()
                    self.index.poll_due = start + lead
        finally:
            self.index.poll_due = None  # stopped (e.g. another node of a cluster polls now)

    async def poll(self, client: httpx.AsyncClient) -> dict[str, int]:
        """One poll, applied as soon as read; returns counts, or raises :class:`PollError` (after recording it)."""
        return await self.apply_read(await self.read(client))

    async def read(self, client: httpx.AsyncClient) -> tuple[bytes, list[PlanValues | Skipped] | None]:
        """Fetch and parse the feed, changing nothing yet: (its digest, its items, or None when it is
        byte for byte the feed already applied). Raises :class:`PollError` (after recording it)."""
        now = time.time()
        if self.open_until > now:
            self.health["circuit"] = "open"
            self._polls.labels("circuit_open").inc()
            raise PollError("the circuit is open")
        half_open = self.failures >= self.trip_after
        self.health["circuit"] = "half-open" if half_open else "closed"
        self.health["last_attempt"] = _iso(now)
        try:
            body = await self._fetch(client)
            digest = hashlib.sha256(body).digest()
            if digest == self._last_digest:  # nothing can have changed
                return digest, None
            return digest, await self.run_sync(lambda: list(parse_feed(body)))
        except (httpx.HTTPError, FeedError, PollError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            raise PollError(str(exc)) from None

    async def apply_read(self, read: tuple[bytes, list[PlanValues | Skipped] | None]) -> dict[str, int]:
        """Apply what :meth:`read` returned: the plans that changed become events; returns counts."""
        digest, items = read
        if items is None:
            counts = {"plans": self.health["plans_in_last_feed"], "skipped": self.health["skipped_in_last_feed"],
                      "changed": 0}
        else:
            counts = await self.apply(items)
            self._last_digest = digest
        self.health["changed_in_last_feed"] = counts["changed"]
        self.failures = 0
        self.health.update(circuit="closed", last_success=_iso(time.time()), consecutive_failures=0, last_error=None)
        self._last_success.set(time.time())
        self._polls.labels("ok").inc()
        return counts

    async def _fetch(self, client: httpx.AsyncClient) -> bytes:
        assert self.url is not None
        async with client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise PollError(f"the provider answered {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise PollError(f"the feed is larger than {self.max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.health.update(last_error=error, consecutive_failures=self.failures)
        self._polls.labels("failed").inc()
        if self.failures >= self.trip_after:
            self.open_until = time.time() + self.open_seconds
            self.health["circuit"] = "open"
            log.warning("marketplace: %d failed polls in a row (%s); not calling the provider for %g s",
                        self.failures, error, self.open_seconds)
        else:
            log.warning("marketplace: poll failed (%s); the plans already known stay searchable", error)

    # -- applying a feed ------------------------------------------------------------------

    async def apply(self, items: list[PlanValues | Skipped]) -> dict[str, int]:
        """Journal an event for each plan whose values changed; log the skipped ones (once each)."""
        latest: dict[str, PlanValues] = {}
        skipped = 0
        for item in items:
            if isinstance(item, Skipped):
                skipped += 1
                if (item.base_id, item.plan_id, item.reason) not in self._warned:
                    self._warned.add((item.base_id, item.plan_id, item.reason))
                    log.warning("marketplace: skipped plan base_event_id=%s event_id=%s: %s",
                                item.base_id, item.plan_id, item.reason)
                continue
            latest[item.key] = item
        stamp = datetime.now(timezone.utc)
        events = []
        for key, values in latest.items():
            state = self.context.state(key, PLUGIN)
            if isinstance(state, Plan) and state.same_values(values):
                continue
            events.append(Event(new_event_id(), SEEN, key, stamp, seen_data(values), stamp))
        for start in range(0, len(events), 5_000):  # each plan's handler marks the index stale (PlanChanged)
            await self.context.accept(events[start:start + 5_000])
        self.health.update(plans_in_last_feed=len(latest), skipped_in_last_feed=skipped,
                           changed_in_last_feed=len(events), searchable_plans=len(self.index))
        return {"plans": len(latest), "skipped": skipped, "changed": len(events)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")

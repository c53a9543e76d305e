"""The outbox: effects are journaled with their cause, then delivered until they
succeed, are rejected, or expire.

Every effect has an idempotency key; the journal keeps one row per key, so an
effect produced again by a replay is recognised and not sent twice. Attempts
follow a schedule like the best webhook services (immediately, then seconds,
minutes, hours) up to a maximum age; what cannot be delivered becomes a dead
letter, listed at ``GET /v1/outbox?status=dead`` and replayable. When a secret
is configured, every delivery is signed (Standard Webhooks: HMAC-SHA256 over
``id.timestamp.body``).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import logging
import random
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable, Mapping

import attrs
import httpx
import orjson
import trio

from ._effects import Effect, Notify
from ._event import converter
from ._journal import Journal, OutboxRow
from ._metrics import Metrics
from ._redact import redact_text, redact_url

__all__ = ["DeliveryError", "NotifyExecutor", "Outbox", "RetrySchedule", "Signer", "effect_key"]

log = logging.getLogger("herald.effects")

Executor = Callable[[Any], Awaitable[None]]

#: Delays before the 2nd, 3rd, ... attempt: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h.
DEFAULT_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)


class DeliveryError(Exception):
    """An effect could not be delivered; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@attrs.frozen
class RetrySchedule:
    """When to try again: ``delays[n-1]`` after the n-th failed attempt (±``jitter``),
    never past ``max_age`` seconds after the effect was created."""

    delays: tuple[float, ...] = DEFAULT_DELAYS
    max_age: float = 86_400.0
    jitter: float = 0.2

    def next_attempt(self, attempts: int, created: float, now: float, rng: random.Random = random._inst) -> float | None:  # type: ignore[attr-defined]
        if attempts > len(self.delays):
            return None
        delay = self.delays[attempts - 1] * rng.uniform(1 - self.jitter, 1 + self.jitter)
        at = now + delay
        return at if at - created <= self.max_age else None


class Signer:
    """Standard Webhooks signing: ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>``.

    A ``whsec_``-prefixed secret is base64 (as Standard Webhooks issues them);
    any other string is used as UTF-8 bytes.
    """

    def __init__(self, secret: str) -> None:
        self.key = _secret_bytes(secret)

    def headers(self, message_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        timestamp = str(int(time.time() if now is None else now))
        return {
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + _sign(self.key, message_id, timestamp, body),
        }

    @staticmethod
    def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: float = 300, now: float | None = None) -> bool:
        """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
        message_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        if not message_id or not timestamp.isdigit():
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
            return False
        expected = _sign(_secret_bytes(secret), message_id, timestamp, body)
        for candidate in headers.get("webhook-signature", "").split():
            version, _, signature = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(signature, expected):
                return True
        return False


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()


def _sign(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class NotifyExecutor:
    """Delivers :class:`Notify` as a JSON POST with ``Idempotency-Key`` (and a signature)."""

    def __init__(self, client: httpx.AsyncClient | None, signer: Signer | None = None, *,
                 credentials: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.client = client
        self.signer = signer
        #: URL prefix -> headers sent only to URLs under it (Herald's own sink needs the admin token;
        #: no other receiver ever sees it).
        self.credentials = dict(credentials or {})

    async def __call__(self, effect: Notify) -> None:
        body = orjson.dumps(effect.payload)
        headers = {"content-type": "application/json", "idempotency-key": effect.idempotency_key}
        for prefix, extra in self.credentials.items():
            if effect.url.startswith(prefix):
                headers.update(extra)
        if self.signer is not None:
            headers.update(self.signer.headers(effect.idempotency_key, body))
        assert self.client is not None
        try:
            response = await self.client.post(effect.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(redact_text(f"{type(exc).__name__}: {exc}"), retryable=True) from exc
        if response.is_success:
            return
        raise DeliveryError(
            f"{redact_url(effect.url)} answered {response.status_code}", retryable=response.status_code in _RETRY_STATUS
        )


def effect_key(effect: Effect) -> str:
    """An effect's idempotency key: its own, or a digest of its content."""
    key = getattr(effect, "idempotency_key", None)
    if key.__class__ is str and key:
        return key
    digest = hashlib.sha256(orjson.dumps(converter.unstructure(effect), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{type(effect).__name__}:{digest[:32]}"


def _effect_body(effect: Effect) -> bytes:
    """JSON of an effect: its fields as they are when they are plain JSON values
    (the usual case, several times cheaper than cattrs), else through cattrs."""
    try:
        return orjson.dumps(_fields_of(effect))
    except TypeError:
        return orjson.dumps(converter.unstructure(effect))


def _fields_of(effect: Effect) -> dict[str, Any]:
    """An effect's fields as a dict, not recursing (``attrs.asdict(recurse=False)`` over the field
    names found once per class: asdict's generality costs more than the encoding)."""
    names = _FIELDS.get(type(effect))
    if names is None:
        names = _FIELDS[type(effect)] = tuple(field.name for field in attrs.fields(type(effect)))
    return {name: getattr(effect, name) for name in names}


_FIELDS: dict[type, tuple[str, ...]] = {}


@attrs.define(slots=True)
class _Item:
    id: int
    effect: Effect
    attempts: int
    created: float
    next_at: float

    def __lt__(self, other: "_Item") -> bool:
        return (self.next_at, self.id) < (other.next_at, other.id)


class Outbox:
    """Schedules and delivers effects; journals every change of their status."""

    def __init__(
        self,
        executors: Mapping[type, Executor],
        *,
        journal: Journal,
        metrics: Metrics | None = None,
        schedule: RetrySchedule = RetrySchedule(),
        workers: int = 16,
        timeout: float = 5.0,
        capacity: int = 10_000,
        on_settled: Callable[[Effect], None] | None = None,
        claim: Callable[[Effect], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: The wall clock (POSIX seconds) effects are created and retried by: the host's, so that a
        #: Herald started at another instant (a test of an old data dir) retries by that instant.
        self.clock = clock
        #: Told of each effect delivered or given up on (a cluster stops checkpointing it).
        self.on_settled = on_settled
        #: Asked before each attempt whether this process may still deliver the effect (a cluster node
        #: delivers only for partitions it still owns); an effect it may not is dropped here.
        self.claim = claim
        self.executors = dict(executors)
        self.kinds = {cls.__name__: cls for cls in self.executors}
        self.journal = journal
        self.metrics = metrics or Metrics()
        self.schedule = schedule
        self.workers = workers
        self.timeout = timeout
        self.capacity = capacity
        self._heap: list[_Item] = []
        self._changed = trio.Event()
        self._send, self._receive = trio.open_memory_channel[_Item](0)
        self._in_flight = 0
        self._ids = 0
        self._high_water = 0  # largest outbox id ever loaded into memory
        self._spilled = False  # rows wait in the journal only; refilled when memory drains
        self._spilled_during_refill = False
        self._closing = False
        self._idle = trio.Event()
        self.dead: deque[dict[str, Any]] = deque(maxlen=10_000)  # memory mode's dead letters
        self.metrics.effects_queued.set_function(lambda: len(self._heap) + self._in_flight)

    @property
    def pending(self) -> int:
        return len(self._heap) + self._in_flight

    # -- intake -------------------------------------------------------------------

    def emit(self, effect: Effect) -> None:
        """The engine's effect sink: journal the effect (or, in memory mode, queue it)."""
        cls = type(effect)
        if cls not in self.executors:
            self.metrics.effects_dropped.labels(cls.__name__, "no_executor").inc()
            log.error("no executor for effect %s; dropped: %r", cls.__name__, effect)
            return
        now = self.clock()
        if self.journal.enabled:
            self.journal.add_effect(effect_key(effect), cls.__name__, _effect_body(effect), now, effect)
        else:
            self._ids += 1
            self._push(_Item(self._ids, effect, 0, now, now))

    def committed(self, rows: list[tuple[int, Any]]) -> None:
        """The journal committed these effects for the first time (``(outbox id, effect)``): deliver them."""
        now = self.clock()
        for outbox_id, effect in rows:
            self._push(_Item(outbox_id, effect, 0, now, now))

    def enqueue(self, rows: Iterable[OutboxRow]) -> int:
        """Queue journaled pending rows (at start-up, and to refill after a spill)."""
        count = 0
        for row in rows:
            cls = self.kinds.get(row.kind)
            if cls is None:
                log.error("outbox row %d: no executor for %s; left pending", row.id, row.kind)
                continue
            effect = converter.structure(orjson.loads(row.body), cls)
            self._push(_Item(row.id, effect, row.attempts, row.created, row.next_at), refill=True)
            count += 1
        return count

    async def resume(self) -> None:
        """Queue what the journal holds as pending (at start-up)."""
        rows = await self.journal.query(lambda j: j.outbox_rows("pending", limit=self.capacity))
        # Rows committed since start-up are queued already (a replay may have made some).
        self.enqueue(row for row in rows if row.id > self._high_water)
        if len(rows) >= self.capacity:
            self._spilled = True

    def _push(self, item: _Item, *, refill: bool = False) -> None:
        if (self._spilled and not refill) or len(self._heap) + self._in_flight >= self.capacity:
            if self.journal.enabled:
                # Not lost: the row is pending in the journal and comes back when memory drains.
                if not self._spilled:
                    log.warning("outbox holds %d effects in memory; further ones wait in the journal", self.capacity)
                self._spilled = True
                self._spilled_during_refill = True
                self.metrics.effects_spilled.inc()
                return
            self.metrics.effects_dropped.labels(type(item.effect).__name__, "queue_full").inc()
            log.error("effect queue full (%d, memory mode); dropped %r", self.capacity, item.effect)
            return
        self._high_water = max(self._high_water, item.id)
        heapq.heappush(self._heap, item)
        self._changed.set()

    # -- delivery -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._worker)
            task_status.started()
            await self._scheduler()

    async def _scheduler(self) -> None:
        while True:
            if self._closing:
                await trio.sleep_forever()
            if self._spilled and len(self._heap) < self.capacity // 2:
                await self._refill()
            if not self._heap:
                self._changed = trio.Event()
                await self._changed.wait()
                continue
            delay = self._heap[0].next_at - self.clock()
            if delay > 0:
                self._changed = trio.Event()
                with trio.move_on_after(delay):
                    await self._changed.wait()
                continue
            item = heapq.heappop(self._heap)
            self._in_flight += 1
            await self._send.send(item)

    async def _refill(self) -> None:
        self._spilled_during_refill = False
        limit = max(1, self.capacity // 2)
        rows = await self.journal.query(lambda j: j.outbox_rows("pending", after_id=self._high_water, limit=limit))
        self.enqueue(rows)
        if len(rows) < limit and not self._spilled_during_refill:
            self._spilled = False

    async def _worker(self) -> None:
        async for item in self._receive:
            try:
                await self._attempt(item)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
                if self._spilled:
                    self._changed.set()  # room again: the scheduler may refill from the journal

    async def _attempt(self, item: _Item) -> None:
        effect = item.effect
        name = type(effect).__name__
        if self.claim is not None and not self.claim(effect):
            self.metrics.effects_dropped.labels(name, "not_owned").inc()
            log.info("effect %s (%s) dropped: its partition is no longer this node's (its owner delivers it)",
                     item.id, name)
            return
        item.attempts += 1
        try:
            with trio.fail_after(self.timeout):
                await self.executors[type(effect)](effect)
        except (DeliveryError, trio.TooSlowError) as exc:
            error = str(exc) or "timed out"
            retryable = isinstance(exc, trio.TooSlowError) or exc.retryable
        except Exception as exc:  # an executor bug: keep the effect, as a dead letter
            log.exception("executor for %s crashed", name)
            error, retryable = redact_text(f"executor crashed: {exc!r}"), False
        else:
            self.metrics.effects_sent.labels(name).inc()
            self._record(item, "delivered", None)
            return
        now = self.clock()
        next_at = self.schedule.next_attempt(item.attempts, item.created, now) if retryable else None
        if next_at is None:
            reason = "rejected" if not retryable else "expired"
            self.metrics.effects_failed.labels(name, reason).inc()
            log.error("effect %s (%s) is a dead letter after %d attempt(s): %s", item.id, name, item.attempts, error)
            self._record(item, "dead", error)
            return
        self.metrics.effects_retried.labels(name).inc()
        log.info("effect %s (%s) failed (%s); attempt %d in %.1f s", item.id, name, error, item.attempts + 1, next_at - now)
        item.next_at = next_at
        self._record(item, "pending", error)
        heapq.heappush(self._heap, item)
        self._changed.set()

    def _record(self, item: _Item, status: str, error: str | None) -> None:
        if status != "pending" and self.on_settled is not None:
            self.on_settled(item.effect)
        if self.journal.enabled:
            self.journal.mark(item.id, status, item.attempts, item.next_at, error)
        elif status == "dead":
            self.dead.append(
                {"id": item.id, "key": effect_key(item.effect), "kind": type(item.effect).__name__,
                 "status": "dead", "attempts": item.attempts, "created": item.created, "error": error,
                 "effect": converter.unstructure(item.effect)}
            )

    # -- administration -------------------------------------------------------------

    async def replay_dead(self, ids: Iterable[int] | None = None) -> int:
        """Give dead letters (all, or these ids) a fresh schedule; return how many."""
        wanted = None if ids is None else set(ids)
        now = self.clock()
        if not self.journal.enabled:
            revived = [d for d in self.dead if wanted is None or d["id"] in wanted]
            for d in revived:
                self.dead.remove(d)
                effect = converter.structure(d["effect"], self.kinds[d["kind"]])
                self._push(_Item(d["id"], effect, 0, now, now))
            return len(revived)
        rows = await self.journal.query(lambda j: j.outbox_rows("dead", limit=1_000_000))
        rows = [r for r in rows if wanted is None or r.id in wanted]
        self.journal.revive_dead([r.id for r in rows], now)
        await self.journal.commit()
        self.enqueue(attrs.evolve(r, attempts=0, created=now, next_at=now) for r in rows)
        return len(rows)

    def pause(self) -> None:
        """Start no new deliveries (effects still queue and are journaled)."""
        self._closing = True
        self._changed.set()

    async def drain(self, timeout: float) -> None:
        """At shutdown: start nothing new; let deliveries in flight finish (up to ``timeout``)."""
        self.pause()
        with trio.move_on_after(timeout):
            while self._in_flight:
                self._idle = trio.Event()
                await self._idle.wait()
        left = self.pending
        if left:
            if self.journal.enabled:
                log.warning("%d effects are still pending; they are journaled and will be delivered after restart", left)
            else:
                self.metrics.effects_dropped.labels("any", "shutdown").inc(left)
                log.error("%d undelivered effects are lost at shutdown (memory mode)", left)

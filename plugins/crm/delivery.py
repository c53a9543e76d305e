"""Ordered delivery of the CRM plugin's effects: per user, in order, retried until done.

An effect sink: each user's effects (CRM calls, public messages) wait in a
queue of their own and are delivered one after the other, so the CRM and the
public topics see a user's changes in the order they happened; different
users proceed in parallel (up to ``concurrency``). A failed CRM call is
retried with exponential backoff and jitter (0.2 s doubling up to 30 s) while
the rest of that user's queue waits; other users carry on. Calls are
idempotent upserts (create an id not seen yet, replace one that exists), so a
replay after a crash, which sends a user's latest effects again, changes nothing.

Public messages are produced through an idempotent producer keyed by user id
(order per user holds on the partition); their personal fields are the box
the source sealed with the user's key (:mod:`.sealing`), published unopened.
A CRM call's box is opened here, just before the call, and nowhere else; an
erased user's box cannot be opened any more, and their call is dropped (the
erasure's own calls follow in their queue). librdkafka batches and
sends them from its own thread; its delivery reports are served every
:data:`PRODUCER_POLL` seconds rather than after each message.

All of it runs on a thread of its own with its own trio loop (:class:`engine.SinkThread`): the
engine's loop only counts an effect and hands it over, then goes on consuming, applying and
journaling. ``flush()`` is acknowledged back on the engine's loop once every effect put before it was
delivered (a snapshot or a checkpoint after it never covers an undelivered one: a crash replays them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import urllib.parse
import urllib.request
from collections import deque
from typing import Any, NamedTuple

import httpcore
import httpx
import orjson
import trio
from cryptography.exceptions import InvalidTag

from engine import Context, SinkThread, redact_text, redact_url

from .keystore import Erased, KeyStore, seal
from .model import CrmCall, Publish
from .sealing import SEALED, open_body

__all__ = ["Delivery", "CrmRefused", "CONCURRENCY"]

#: Users whose effects are delivered at a time (``HERALD_CRM_CONCURRENCY``).
CONCURRENCY = 16
#: Seconds between two servings of the public producer's delivery reports.
PRODUCER_POLL = 0.05

log = logging.getLogger("herald.crm")


class CrmRefused(Exception):
    """The CRM refused a call for good (a 4xx other than the expected 404)."""


class Delivery:
    def __init__(self, context: Context, crm_url: str, keys: KeyStore, producer: Any | None, *,
                 headers: dict[str, str] | None = None,
                 concurrency: int = CONCURRENCY, max_backoff: float = 30.0, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.crm_url = crm_url.rstrip("/")
        self.headers = dict(headers or {})  # sent with every CRM call (e.g. the token of Herald's own mock CRM)
        self.keys, self.producer = keys, producer
        self.max_backoff, self.timeout = max_backoff, timeout
        self.transport = transport  # tests only: the CRM as an httpx transport
        self.concurrency = concurrency
        #: The delivery's thread: everything below the sink's three methods runs there.
        self.thread = SinkThread(self._take, name="herald-crm-delivery")
        # Only the delivery's thread touches these (and the trio objects made when it starts).
        self._queues: dict[str, deque] = {}
        #: (collection, id) this process saw in the CRM: replaced directly, others created first.
        self._known: set[tuple[str, str]] = set()
        self._active: set[str] = set()
        self._ready_send: Any = None
        self._drained: Any = None
        self._taken = 0  # effects taken and not delivered yet
        # Counted from both threads, under the lock: health's ``pending`` (put, not yet delivered) is never
        # less than the truth, whichever thread wrote it last.
        self._counts = threading.Lock()
        self._put = 0
        self.delivered = self.retried = self.refused = 0
        self.health = context.health("crm", {"crm_url": redact_url(self.crm_url), "pending": 0, "delivered": 0,
                                                       "retried": 0, "refused": 0, "last_error": None})

    @property
    def pending(self) -> int:
        """Effects put and not delivered yet (on the thread's queues or on their way to it)."""
        return self._put - self.delivered

    # -- the sink: on the engine's loop ----------------------------------------------------------------

    def put(self, effect: CrmCall | Publish) -> None:
        with self._counts:
            self._put += 1
            self.health["pending"] = self._put - self.delivered
        self.thread.put(effect)

    async def flush(self) -> None:
        """Wait until every effect put so far is delivered (and public messages acknowledged)."""
        await self.thread.flush(self._flushed)

    async def run(self) -> None:
        """The delivery's thread, for as long as this runs (the plugin's per-node source)."""
        await self.thread.run(self._run)

    async def stopped(self) -> None:
        """Wait until the delivery's thread is gone (before closing the producer and the key store)."""
        await self.thread.stopped()

    # -- delivering: on the delivery's thread ------------------------------------------------------------

    def _take(self, effects: list[CrmCall | Publish]) -> None:
        queues, active = self._queues, self._active
        for effect in effects:
            owner = effect.owner
            queue = queues.get(owner)
            if queue is None:
                queue = queues[owner] = deque()
            queue.append(effect)
            if owner not in active:
                active.add(owner)
                self._ready_send.send_nowait(owner)
        self._taken += len(effects)
        if self._drained.is_set():
            self._drained = trio.Event()

    async def _flushed(self) -> None:
        await self._drained.wait()
        if self.producer is not None:
            while not await self.producer.drained(5.0):  # the broker is away: keep waiting (the caller bounds it)
                log.warning("public messages still waiting for the Kafka broker")

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # ``concurrency`` long-lived workers, each draining one user's queue at a time (a user is handed
        # to one worker only while it is active: their effects stay in order). Each worker has its own
        # client holding one keep-alive connection: no call waits for a connection or opens one, and no
        # call pays for a pool that looks over every other worker's connection (a fifth of Herald's time
        # when the 16 shared one pool).
        self._ready_send, ready = trio.open_memory_channel[str](math.inf)
        self._drained = trio.Event()
        if self._taken == 0:
            self._drained.set()
        for owner in self._active:  # users whose effects a previous thread left undelivered (it crashed)
            self._ready_send.send_nowait(owner)
        async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                http = await stack.enter_async_context(_Crm(self.crm_url, self.headers, self.timeout, self.transport))
                nursery.start_soon(self._worker, http, ready)
            if self.producer is not None:
                nursery.start_soon(self._serve_producer)
            task_status.started()

    async def _worker(self, http: _Crm, ready: trio.MemoryReceiveChannel[str]) -> None:
        async for owner in ready:
            queue = self._queues[owner]
            while queue:
                await self._deliver(queue[0], http)
                queue.popleft()
                self._done()
            del self._queues[owner]
            self._active.discard(owner)

    async def _serve_producer(self) -> None:
        """Serve the producer's delivery reports now and then, instead of after every message."""
        while True:
            await trio.sleep(PRODUCER_POLL)
            self.producer.poll()

    def _done(self) -> None:
        with self._counts:
            self.delivered += 1
            self.health.update(pending=self._put - self.delivered, delivered=self.delivered)
        self._taken -= 1
        if self._taken == 0:
            self._drained.set()

    async def _deliver(self, effect: CrmCall | Publish, http: _Crm) -> None:
        attempt = 0
        while True:
            try:
                if type(effect) is Publish:
                    await self._publish(effect)
                else:
                    await self._call(effect, http)
                return
            except CrmRefused as exc:
                self.refused += 1
                self.health.update(refused=self.refused, last_error=redact_text(str(exc)))
                log.error("%s refused for good: %s; moving on", _describe(effect), exc)
                return
            except Exception as exc:  # the CRM or the broker is away, or a bug: retry, never take Herald down
                attempt += 1
                self.retried += 1
                self.health.update(retried=self.retried, last_error=redact_text(f"{type(exc).__name__}: {exc}"))
                delay = min(0.2 * 2 ** attempt, self.max_backoff) * random.uniform(0.5, 1.0)
                if attempt in (1, 5) or attempt % 20 == 0:
                    log.warning("%s failed (%s); retry %d in %.1f s", _describe(effect), exc, attempt, delay)
                await trio.sleep(delay)

    async def _call(self, call: CrmCall, http: _Crm) -> None:
        base = self.crm_url
        collection = "users" if call.kind in ("user", "delete_user") else "trips"
        if call.kind == "delete_user":
            for trip_id in (call.body or {}).get("trips", ()):
                _check(await http.call("DELETE", f"{base}/trips/{trip_id}"), ok=(200, 204, 404))
            _check(await http.call("DELETE", f"{base}/users/{call.entity_id}"), ok=(200, 204, 404))
            self._known.discard(("users", call.entity_id))
            for trip_id in (call.body or {}).get("trips", ()):
                self._known.discard(("trips", trip_id))
            return
        user_id = call.entity_id if call.kind == "user" else (call.body or {}).get("UserId")
        try:
            opened = call.body if user_id is None else await open_body(self.keys, user_id, call.body or {})
        except InvalidTag:  # not this user's key: no retry can open it (the message names no field's value)
            raise CrmRefused(f"the sealed fields of {call.kind} {call.entity_id} do not open with its user's key") \
                from None
        if opened is None:  # the user is erased: nothing of theirs is sent again
            return
        if call.kind == "user" and opened.get("LastName") is None:  # the CRM requires a LastName
            opened = {**opened, "LastName": ""}
        body = orjson.dumps(opened)
        known = (collection, call.entity_id)
        if known not in self._known:  # probably new: register it (409 if it exists after all)
            created = await http.call("POST", f"{base}/{collection}", body)
            _check(created, ok=(200, 201, 409))
            self._known.add(known)
            if created.status != 409:
                return
        replaced = await http.call("POST", f"{base}/{collection}/{call.entity_id}", body)
        if replaced.status == 404:  # deleted in the CRM meanwhile: register it again
            self._known.discard(known)
            raise _Retry("gone from the CRM")
        _check(replaced, ok=(200,))

    async def _publish(self, message: Publish) -> None:
        if self.producer is None:
            return
        value = message.value
        if value is not None and SEALED in value:  # sealed at the source: published as it is, unopened
            if value[SEALED] is None:
                return  # withheld: the user was erased before the event came in
            try:
                await self.keys.key(message.user_id)
            except Erased:
                return  # nothing personal is ever published again for an erased user
            value = {k: v for k, v in value.items() if k != SEALED}
            value["personal"] = message.value[SEALED]
        elif value is not None and message.personal:  # an effect stored before sealing
            try:
                key = await self.keys.key(message.user_id)
            except Erased:
                return  # nothing personal is ever published again for an erased user
            personal = {f: value[f] for f in message.personal if f in value}
            value = {k: v for k, v in value.items() if k not in message.personal}
            value["personal"] = seal(key, message.user_id, personal)
        self.producer.produce(message.topic, message.user_id.encode(),
                              None if value is None else orjson.dumps(value), poll=False)


def _describe(effect: CrmCall | Publish) -> str:
    if type(effect) is Publish:
        return f"publishing to {effect.topic} for {effect.user_id}"
    return f"CRM call {effect.kind} {effect.entity_id}"


class _Retry(Exception):
    pass


class _Answer(NamedTuple):
    status: int
    method: str
    url: str
    content: bytes


class _Crm:
    """One worker's keep-alive connection to the CRM.

    Through httpcore, the transport layer under httpx: a call costs about a quarter less CPU than
    through ``httpx.AsyncClient`` (measured 720-770 against 940-1,030 µs a call to a bare ASGI app:
    no request and response models, cookie jar or hooks), and CRM calls are most of the delivery's
    work. Tests hand in an httpx transport instead (the CRM without sockets), and a CRM the environment
    sends through a proxy is called through httpx, which honours ``HTTP(S)_PROXY`` and ``NO_PROXY``."""

    def __init__(self, crm_url: str, headers: dict[str, str], timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self._json = [*self._headers, (b"content-type", b"application/json")]
        self._extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
        # One of the two: httpx where it must (a transport, a proxy), httpcore otherwise.
        self._client: httpx.AsyncClient | None = None
        self._pool: httpcore.AsyncConnectionPool | None = None
        if transport is not None or proxied(crm_url):
            self._client = httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout,
                                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        else:
            self._pool = httpcore.AsyncConnectionPool(max_connections=1, max_keepalive_connections=1)

    async def __aenter__(self) -> "_Crm":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await (self._client or self._pool).aclose()  # type: ignore[union-attr]  # one of them is set

    async def call(self, method: str, url: str, body: bytes | None = None) -> _Answer:
        """``method`` ``url`` with a JSON ``body``; the whole answer (a CRM's answers are small)."""
        if self._client is not None:
            answer = await self._client.request(method, url, content=body,
                                                headers=None if body is None else {"content-type": "application/json"})
            return _Answer(answer.status_code, method, url, answer.content)
        assert self._pool is not None
        found = await self._pool.request(method, url, headers=self._headers if body is None else self._json,
                                         content=body, extensions=self._extensions)
        return _Answer(found.status, method, url, found.content)


def proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (``HTTP_PROXY``/``HTTPS_PROXY``/
    ``ALL_PROXY``, unless ``NO_PROXY`` names its host)."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parts.hostname or "", proxies)


def _check(answer: _Answer, *, ok: tuple[int, ...]) -> None:
    if answer.status in ok:
        return
    if answer.status >= 500 or answer.status in (408, 429):
        raise _Retry(f"the CRM answered {answer.status}")
    raise CrmRefused(f"{answer.method} {httpx.URL(answer.url).path}: {answer.status} "
                     f"{answer.content[:200].decode(errors='replace')}")

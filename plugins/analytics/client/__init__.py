"""A small client for The Eye (Herald's analytics plugin): send events, read them back.

Sync, with a background thread that flushes batches::

    from plugins.analytics.client import EyeClient

    with EyeClient("http://127.0.0.1:8000", token="eye_...") as eye:
        eye.send("page interaction", "pageview", {"host": "example.com", "path": "/"}, session_id="s-1")
    # leaving the block flushes what is left

Async (trio or asyncio, through anyio), with a background flush task::

    from plugins.analytics.client import AsyncEyeClient

    async with AsyncEyeClient("http://127.0.0.1:8000", token="eye_...") as eye:
        await eye.send("page interaction", "cta click", {"host": "example.com", "path": "/", "element": "buy"},
                       session_id="s-1")

Events are batched (``batch_size``, or every ``flush_interval`` seconds) and
retried with exponential backoff and jitter on connection errors, 429 and 5xx.
A rejected token raises :class:`EyeAuthError` at once. ``timestamp`` defaults
to now, in the seed's ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

import anyio
import httpx

__all__ = ["AsyncEyeClient", "EyeAuthError", "EyeClient", "EyeError", "event"]

log = logging.getLogger("herald.analytics.client")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class EyeError(Exception):
    """The Eye could not take the events (after the retries)."""


class EyeAuthError(EyeError):
    """The token is missing, unknown or revoked (401): retrying will not help."""


def event(category: str, name: str, data: Mapping[str, Any], *, session_id: str,
          timestamp: datetime | str | None = None) -> dict[str, Any]:
    """One event payload in The Eye's shape."""
    if timestamp is None:
        timestamp = datetime.now(timezone.utc)
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is not None:
            timestamp = timestamp.astimezone(timezone.utc).replace(tzinfo=None)
        timestamp = timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")
    return {"session_id": session_id, "category": category, "name": name, "data": dict(data), "timestamp": timestamp}


class _Settings:
    def __init__(self, base_url: str, token: str, prefix: str, batch_size: int, flush_interval: float,
                 max_retries: int, backoff: float, max_queue: int) -> None:
        if batch_size < 1 or flush_interval <= 0 or max_retries < 0 or backoff < 0 or max_queue < batch_size:
            raise ValueError("batch_size >= 1, flush_interval > 0, max_retries >= 0, backoff >= 0, "
                             "max_queue >= batch_size")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Token {token}"}
        self.prefix = "/" + prefix.strip("/")
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.max_retries, self.backoff, self.max_queue = max_retries, backoff, max_queue

    def delay(self, attempt: int) -> float:
        return self.backoff * (2 ** attempt) * random.uniform(0.5, 1.0)

    def judge(self, attempt: int, batch: list[Any], outcome: httpx.Response | Exception) -> list[str] | None:
        """The ids if The Eye took the batch; None to retry (after ``delay``); raises when retrying is over."""
        if isinstance(outcome, Exception):
            retry, problem = True, str(outcome)
        elif outcome.status_code == 202:
            return list(outcome.json()["ids"])
        elif outcome.status_code == 401:
            raise EyeAuthError(_message(outcome))
        else:
            retry, problem = outcome.status_code in _RETRY_STATUSES, _message(outcome)
        if not retry or attempt == self.max_retries:
            raise EyeError(f"The Eye refused {len(batch)} events: {problem}")
        return None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class EyeClient:
    """The synchronous client: ``send`` queues, a background thread flushes."""

    def __init__(self, base_url: str, token: str, *, prefix: str = "/api", batch_size: int = 100,
                 flush_interval: float = 1.0, max_retries: int = 5, backoff: float = 0.2, max_queue: int = 100_000,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._settings = _Settings(base_url, token, prefix, batch_size, flush_interval, max_retries, backoff, max_queue)
        self._http = httpx.Client(base_url=self._settings.base_url, headers=self._settings.headers, timeout=timeout,
                                  transport=transport)
        self._queue: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the queue
        self._sending = threading.Lock()  # one POST at a time, in order
        self._wake = threading.Event()
        self._closed = False
        #: The last error of a background flush (the events stay queued for the next one).
        self.last_error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="eye-client-flush", daemon=True)
        self._thread.start()

    def __enter__(self) -> "EyeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, category: str, name: str, data: Mapping[str, Any], *, session_id: str,
             timestamp: datetime | str | None = None) -> None:
        """Queue one event; a full batch is sent by the background thread."""
        self.send_payload(event(category, name, data, session_id=session_id, timestamp=timestamp))

    def send_payload(self, payload: Mapping[str, Any]) -> None:
        """Queue an already-built payload (sent as it is)."""
        with self._lock:
            if self._closed:
                raise EyeError("the client is closed")
            if len(self._queue) >= self._settings.max_queue:
                self._queue.pop(0)
                log.warning("The Eye client queue is full (%d); dropped the oldest event", self._settings.max_queue)
            self._queue.append(dict(payload))
            full = len(self._queue) >= self._settings.batch_size
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Events queued and not yet accepted by The Eye."""
        return len(self._queue)

    def flush(self) -> list[str]:
        """Send everything queued now (in batches, with retries); return the ids The Eye gave them."""
        ids: list[str] = []
        with self._sending:
            while True:
                with self._lock:
                    batch = self._queue[: self._settings.batch_size]
                    del self._queue[: len(batch)]
                if not batch:
                    return ids
                try:
                    ids.extend(self._post(batch))
                except BaseException:
                    with self._lock:  # keep them, in order, for the next flush
                        self._queue[:0] = batch
                    raise

    def _post(self, batch: list[dict[str, Any]]) -> list[str]:
        settings = self._settings
        for attempt in range(settings.max_retries + 1):
            try:
                ids = settings.judge(attempt, batch, self._http.post(f"{settings.prefix}/events", json=batch))
            except httpx.TransportError as exc:
                ids = settings.judge(attempt, batch, exc)
            if ids is not None:
                return ids
            time.sleep(settings.delay(attempt))
        raise AssertionError("unreachable")

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._settings.flush_interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.flush()
                self.last_error = None
            except EyeError as exc:
                self.last_error = exc
                log.warning("The Eye client could not flush: %s", exc)

    def close(self, *, discard: bool = False) -> None:
        """Flush what is left (or, with ``discard``, drop it) and stop the background thread."""
        if self._closed:
            return
        try:
            if discard:
                with self._lock:
                    self._queue.clear()
            else:
                self.flush()
        finally:
            self._closed = True
            self._wake.set()
            self._thread.join(timeout=5)
            self._http.close()

    # -- reading -----------------------------------------------------------------------

    def events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Stored events matching the filters (session_id, category, name, timestamp_after, ...), all pages."""
        return self._pages("events", filters)

    def errors(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Error rows matching the filters (code, event_id, session_id, ...), all pages."""
        return self._pages("errors", filters)

    def _pages(self, what: str, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            response = self._http.get(f"{self._settings.prefix}/{what}", params=params)
            if response.status_code == 401:
                raise EyeAuthError(_message(response))
            if not response.is_success:
                raise EyeError(f"GET {what}: {_message(response)} ({response.status_code})")
            body = response.json()
            yield from body["results"]
            if not body["next"]:
                return
            params["cursor"] = body["next"]


class AsyncEyeClient:
    """The async client (trio or asyncio): use it as ``async with``; a background task flushes."""

    def __init__(self, base_url: str, token: str, *, prefix: str = "/api", batch_size: int = 100,
                 flush_interval: float = 1.0, max_retries: int = 5, backoff: float = 0.2, max_queue: int = 100_000,
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = _Settings(base_url, token, prefix, batch_size, flush_interval, max_retries, backoff, max_queue)
        self._http = httpx.AsyncClient(base_url=self._settings.base_url, headers=self._settings.headers,
                                       timeout=timeout, transport=transport)
        self._queue: list[dict[str, Any]] = []
        self._sending = anyio.Lock()
        self._group: Any = None
        self.last_error: Exception | None = None

    async def __aenter__(self) -> "AsyncEyeClient":
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.flush()
        finally:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
            await self._http.aclose()

    async def send(self, category: str, name: str, data: Mapping[str, Any], *, session_id: str,
                   timestamp: datetime | str | None = None) -> None:
        await self.send_payload(event(category, name, data, session_id=session_id, timestamp=timestamp))

    async def send_payload(self, payload: Mapping[str, Any]) -> None:
        if len(self._queue) >= self._settings.max_queue:
            self._queue.pop(0)
            log.warning("The Eye client queue is full (%d); dropped the oldest event", self._settings.max_queue)
        self._queue.append(dict(payload))
        if len(self._queue) >= self._settings.batch_size:
            await self.flush()

    async def flush(self) -> list[str]:
        ids: list[str] = []
        async with self._sending:
            while self._queue:
                batch = self._queue[: self._settings.batch_size]
                del self._queue[: len(batch)]
                try:
                    ids.extend(await self._post(batch))
                except BaseException:
                    self._queue[:0] = batch
                    raise
        return ids

    async def _post(self, batch: list[dict[str, Any]]) -> list[str]:
        settings = self._settings
        for attempt in range(settings.max_retries + 1):
            try:
                ids = settings.judge(attempt, batch, await self._http.post(f"{settings.prefix}/events", json=batch))
            except httpx.TransportError as exc:
                ids = settings.judge(attempt, batch, exc)
            if ids is not None:
                return ids
            await anyio.sleep(settings.delay(attempt))
        raise AssertionError("unreachable")

    async def _run(self) -> None:
        while True:
            await anyio.sleep(self._settings.flush_interval)
            try:
                await self.flush()
                self.last_error = None
            except EyeError as exc:
                self.last_error = exc
                log.warning("The Eye client could not flush: %s", exc)

    async def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Every stored event matching the filters (all pages)."""
        return await self._pages("events", filters)

    async def errors(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._pages("errors", filters)

    async def _pages(self, what: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        found: list[dict[str, Any]] = []
        while True:
            response = await self._http.get(f"{self._settings.prefix}/{what}", params=params)
            if response.status_code == 401:
                raise EyeAuthError(_message(response))
            if not response.is_success:
                raise EyeError(f"GET {what}: {_message(response)} ({response.status_code})")
            body = response.json()
            found.extend(body["results"])
            if not body["next"]:
                return found
            params["cursor"] = body["next"]

"""The ingestion routes as a bare ASGI fast path in front of Quart.

``POST /v1/event`` and ``POST /v1/events`` are the hot routes: they are served
here, straight from ASGI messages, so that accepting an event costs about what
a bare ASGI app costs. Every other request goes to the Quart app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from urllib.parse import parse_qsl

import orjson
import trio

from engine import MAX_JSON_DEPTH, InvalidEvent, JournalError, decode_json, redact_text

from ._auth import GUESSES, Guesses, bearer_ok, judge, lockout
from ._headers import NOSNIFF, nosniff_send
from ._proxy import TrustedProxies, client_address
from ._tail import EventTail
from ._views import NDJSON_TYPES, SIMPLE_REQUEST_TYPES, error_body, json_media_type

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["IngestApp", "respond_json", "EVENT_PATH", "BATCH_PATH", "LOAD_PREFIX", "MAX_LISTED_REJECTIONS"]

log = logging.getLogger("herald.http")

EVENT_PATH = "/v1/event"
BATCH_PATH = "/v1/events"
LOAD_PREFIX = "/v1/load/"

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json"), NOSNIFF]


class _Disconnected(Exception):
    pass


class _TooLarge(Exception):
    pass


#: Each this many bytes of a body received restart its clock (see ``_read_body``).
BODY_PROGRESS_BYTES = 64 * 1024


class _TimedOut(Exception):
    pass


def _declared_length(scope: dict, limit: int) -> int | None:
    """The request's Content-Length (None if absent or unreadable); :class:`_TooLarge` beyond ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return None
            if declared > limit:
                raise _TooLarge
            return declared
    return None


def _queued(receive: Receive) -> Callable[[], dict] | None:
    """A way to take a message ``receive`` already holds without waiting, when ``receive`` is a
    trio memory channel's (hypercorn-trio's ASGI receive is); None for any other server."""
    channel = getattr(receive, "__self__", None)
    return channel.receive_nowait if isinstance(channel, trio.MemoryReceiveChannel) else None


async def _read_body(scope: dict, receive: Receive, limit: int, timeout: float, *, whole_at_length: bool = False) -> bytes:
    """The whole request body: at most ``limit`` bytes (else :class:`_TooLarge`), and
    arriving in time (else :class:`_TimedOut`).

    The body has ``timeout`` seconds; each :data:`BODY_PROGRESS_BYTES` received restart
    that clock. An event or a batch (at most 500 KiB) must so be complete within a few
    timeouts, a 64 MiB load must keep coming at 64 KiB per timeout (6.4 KB/s at the
    default 10 s) however long it takes in all, and a body that stalls or trickles in a
    byte at a time (slowloris) is cut off after ``timeout`` seconds.

    The hot path (an event posted in one piece): the server already holds its body, which is
    then taken without a clock or a wait; with ``whole_at_length``, a body as long as its
    Content-Length is complete without waiting for the server's empty last message (which
    is left unread: pass it only when nothing reads ``receive`` after this).
    """
    declared = _declared_length(scope, limit)
    message = None
    take = _queued(receive)
    if take is not None:
        try:
            message = take()
        except trio.WouldBlock:
            pass
        else:
            body = message.get("body", b"")
            if message["type"] == "http.request" and (
                not message.get("more_body") or (whole_at_length and len(body) == declared)
            ):
                if len(body) > limit:
                    raise _TooLarge
                return body
    chunks: list[bytes] = []
    size = credited = 0
    clock = trio.CancelScope(deadline=trio.current_time() + timeout)
    with clock:
        while True:
            if message is None:
                message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body") or (whole_at_length and size == declared):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            message = None
            if size - credited >= BODY_PROGRESS_BYTES:
                credited = size
                clock.deadline = trio.current_time() + timeout
    raise _TimedOut


async def _body_timed_out(send: Send, timeout: float) -> None:
    """408, and the connection closed (what is left of the body is not read)."""
    await respond_json(
        send, 408, error_body("body_timeout", f"the body did not arrive within {timeout:g} seconds"),
        [(b"connection", b"close")],
    )


async def respond_json(send: Send, status: int, payload: Any, headers: list | None = None) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(body)), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _authorization(scope: dict) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def _has_body(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return True
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed


def _content_type(scope: dict) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


#: A batch's answer lists at most this many rejected lines (the first ones); all are counted by code.
#: Listing every one let 200 KB of bad lines fetch a 14.6 MB answer.
MAX_LISTED_REJECTIONS = 100


class _Rejections:
    """A batch's rejected lines: every one counted by its error code, the first ones (by line) listed.

    Lines are refused in two passes (NDJSON decoding, then parsing), each in line order: each pass keeps
    its first :data:`MAX_LISTED_REJECTIONS`, and the answer lists the first of both together."""

    __slots__ = ("passes", "by_code", "count")

    def __init__(self) -> None:
        self.passes: list[list[tuple[int, InvalidEvent]]] = [[]]
        self.by_code: dict[str, int] = {}
        self.count = 0

    def add(self, line: int, exc: InvalidEvent) -> None:
        self.count += 1
        self.by_code[exc.code] = self.by_code.get(exc.code, 0) + 1
        current = self.passes[-1]
        if len(current) < MAX_LISTED_REJECTIONS:
            current.append((line, exc))

    def next_pass(self) -> None:
        self.passes.append([])

    def to_json(self) -> dict[str, Any]:
        listed = sorted((item for p in self.passes for item in p), key=lambda item: item[0])[:MAX_LISTED_REJECTIONS]
        return {"rejected": [{"line": line, "error": exc.to_dict()} for line, exc in listed],
                "rejected_count": self.count, "rejected_by_code": self.by_code,
                "rejected_truncated": self.count > len(listed)}


def _unsupported(accepted: str) -> tuple[int, Any]:
    return 415, error_body("unsupported_media_type", f"send the body as {accepted}", "Content-Type")


class IngestApp:
    """ASGI app: the two ingestion routes, then everything else to ``app``."""

    def __init__(self, app: Callable, herald: Herald) -> None:
        self.app = app
        self.herald = herald
        self.engine = herald.engine
        self.max_event = herald.config.max_event_bytes
        self.max_batch = herald.config.max_batch_bytes
        self.max_load = herald.config.max_load_bytes
        self.admin_token = herald.config.admin_token
        #: Behind a reverse proxy: the scope says what the client did (see web._proxy); None without one.
        self.proxies = TrustedProxies(herald.config.trusted_proxies) if herald.config.trusted_proxies else None
        #: Failed attempts at the admin token per address, shared with the Quart routes (``app.extensions``).
        self.guesses = herald.part(GUESSES, Guesses)
        #: What the console's live tail shows: every event accepted or rejected here.
        self.tail = EventTail.of(herald)
        #: Exact path -> raw ASGI handler contributed by plugins (``herald_asgi_routes``).
        self.raw: dict[str, Callable] = {}
        for name, routes in herald.plugins.each("herald_asgi_routes", context=herald.context):
            for path, handler in (routes or {}).items():
                if path in self.raw or path in (EVENT_PATH, BATCH_PATH):
                    raise ValueError(f"plugin {name}: the path {path} is taken")
                self.raw[path] = handler

    async def _refused(self, scope: dict, send: Send) -> bool:
        """Whether the request was answered for lack of the admin bearer token (401), or because its
        address made too many failed attempts at it (429; counted with every other route's, see ``Guesses``)."""
        header = _authorization(scope)
        client = client_address(scope) or "unknown"  # behind a trusted proxy, the client it reports
        token = self.admin_token or ""
        wait = judge(self.guesses, client, header is not None, lambda: bearer_ok(header, token))
        if wait is None:
            return False
        if wait:
            seconds, body = lockout(wait)
            await respond_json(send, 429, body, [(b"retry-after", b"%d" % seconds)])
        else:
            await respond_json(send, 401, error_body(
                "unauthorized", "a valid admin bearer token is required (Authorization: Bearer "
                "<HERALD_ADMIN_TOKEN>)", "Authorization"), [(b"www-authenticate", b'Bearer realm="herald"')])
        return True

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if self.proxies is not None and scope["type"] != "lifespan":
            scope = self.proxies.resolve(scope)
        if scope["type"] == "http":
            path = scope["path"]
            raw = self.raw.get(path) if self.raw else None
            if raw is not None:
                await raw(scope, receive, nosniff_send(send))
                return
            loading = path.startswith(LOAD_PREFIX)
            if path == EVENT_PATH or path == BATCH_PATH or loading:
                if scope["method"] != "POST":
                    await respond_json(
                        send, 405, error_body("method_not_allowed", "use POST"), [(b"allow", b"POST")]
                    )
                    return
                if loading:
                    if self.admin_token and await self._refused(scope, send):
                        return
                    handle, limit = self._load, self.max_load
                elif path == EVENT_PATH:
                    handle, limit = self._single, self.max_event
                else:
                    handle, limit = self._batch, self.max_batch
                body = await self._body(scope, receive, send, limit, whole_at_length=True)
                if body is None:
                    return
                refusal = self.herald.refusal()  # the same answer /healthz gives
                if refusal is not None:
                    await respond_json(send, 503, error_body(refusal.code, redact_text(refusal.reason)),
                                       [(b"retry-after", b"1")])
                    return
                try:
                    status, payload = await handle(scope, body)
                except JournalError as exc:
                    # What refuses from now on, if the failure is known already (else: the journal's word).
                    refusal = self.herald.refusal()
                    code = refusal.code if refusal is not None else "journal_failed"
                    status, payload = 503, error_body(code, redact_text(f"not applied: {exc}"))
                except InvalidEvent as exc:  # e.g. data the journal cannot store: refused before it was applied
                    status, payload = 400, {"error": exc.to_dict()}
                except Exception:  # a bug, never the client's fault: say so, stay up
                    log.exception("ingestion failed")
                    status, payload = 500, error_body("internal", "internal error; the event was not accepted")
                await respond_json(send, status, payload)
                return
            if _has_body(scope):
                # Read the body before Quart sees the request: a Quart answer that
                # leaves the body unread (a 404, a 405) can otherwise stall the
                # next request on a kept-alive connection.
                body = await self._body(scope, receive, send, self.max_batch)
                if body is None:
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _body(self, scope: dict, receive: Receive, send: Send, limit: int, *,
                    whole_at_length: bool = False) -> bytes | None:
        """The request's body, or None once the client was answered (413, 408) or went away."""
        timeout = self.herald.config.body_timeout
        try:
            return await _read_body(scope, receive, limit, timeout, whole_at_length=whole_at_length)
        except _Disconnected:
            return None
        except _TimedOut:
            await _body_timed_out(send, timeout)
        except _TooLarge:
            await respond_json(send, 413, error_body("too_large", f"the body must be at most {limit} bytes"))
        return None

    async def _single(self, scope: dict, body: bytes) -> tuple[int, Any]:
        if not json_media_type(_content_type(scope)):
            return _unsupported("application/json")
        raw = None
        try:
            raw = decode_json(body)
            event = self.engine.parse(raw)
        except InvalidEvent as exc:
            self.tail.rejected(raw, exc)
            return 400, {"error": exc.to_dict()}
        [duplicate] = await self.herald.accept([event])
        self.tail.add(event, duplicate)
        return 202, ({"id": event.id, "duplicate": True} if duplicate else {"id": event.id})

    async def _load(self, scope: dict, body: bytes) -> tuple[int, Any]:
        if _content_type(scope) in SIMPLE_REQUEST_TYPES:
            return _unsupported("application/x-ndjson (or application/octet-stream)")
        name = scope["path"][len(LOAD_PREFIX):]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        raw_first = query.get("first_line", "1")
        if not (raw_first.isascii() and raw_first.isdigit()) or int(raw_first) < 1:
            return 400, error_body("invalid_value", "must be a positive integer", "first_line")
        try:
            report = await self.herald.load(name, body, first_line=int(raw_first), source=query.get("source"))
        except InvalidEvent as exc:
            return 404, {"error": exc.to_dict()}
        return 200, report.to_json()

    async def _batch(self, scope: dict, body: bytes) -> tuple[int, Any]:
        rejected = _Rejections()
        items: list[tuple[int, Any]] = []
        media = _content_type(scope)
        if media in NDJSON_TYPES:
            for number, line in enumerate(body.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    items.append((number, decode_json(line)))
                except InvalidEvent as exc:
                    self.tail.rejected(None, exc)
                    rejected.add(number, exc)
            rejected.next_pass()
        elif not json_media_type(media):
            return _unsupported("a JSON array (application/json) or NDJSON (application/x-ndjson)")
        else:
            try:
                # One level more for the array itself.
                decoded = decode_json(body, max_depth=MAX_JSON_DEPTH + 1)
            except InvalidEvent as exc:
                return 400, {"error": exc.to_dict()}
            if not isinstance(decoded, list):
                return 400, error_body(
                    "invalid_type", "a batch is a JSON array, or NDJSON with Content-Type application/x-ndjson"
                )
            items = list(enumerate(decoded, 1))
        engine = self.engine
        events = []
        for number, raw in items:
            try:
                events.append(engine.parse(raw))
            except InvalidEvent as exc:
                self.tail.rejected(raw, exc)
                rejected.add(number, exc)
        duplicates = await self.herald.accept(events) if events else []
        self.tail.accepted(events, duplicates)
        result = {
            "accepted": len(events),
            "ids": [e.id for e in events],
            "duplicates": [e.id for e, dup in zip(events, duplicates) if dup],
            **rejected.to_json(),
        }
        if events or not rejected.count:
            if not events:
                return 400, {**error_body("empty_batch", "the batch holds no events"), **result}
            return 202, result
        listed = (f"; the first {MAX_LISTED_REJECTIONS} are listed, rejected_by_code counts all {rejected.count}"
                  if result["rejected_truncated"] else "")
        return 400, {**error_body("no_valid_events", f"no event in the batch is valid; see rejected{listed}"), **result}

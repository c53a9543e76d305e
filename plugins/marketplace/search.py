"""``GET /search``: plans on sale online at some point, within a time range, from memory only.

A plan matches when it lies **within** the range: it starts at or after
``starts_at`` and ends at or before ``ends_at`` (the OpenAPI's "events that
start after / finish before"; the seed's example, 2021-02-01 to 2022-07-03 ->
291, 322, 1591, agrees). Either bound may be left out. Plans are kept sorted by
start; a search is bisects (the first start in range, the last plan ending in
it) and a check of the few plans straddling ``ends_at`` (see
``SearchIndex._positions``). The provider is never involved.

Served as a raw ASGI route (no framework in the way): the answer costs about
what a bare ASGI app costs.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from itertools import accumulate
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import orjson
import trio

from engine import Context
from web import respond_json

from .model import Plan

__all__ = ["SearchIndex", "search_app", "search_openapi", "SearchError"]

PLUGIN = "marketplace"


class SearchError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _view(plan: Plan) -> dict[str, Any]:
    start_date, _, start_time = plan.start.partition("T")
    end_date, _, end_time = plan.end.partition("T")
    return {"id": plan.uuid, "title": plan.title, "start_date": start_date, "start_time": start_time,
            "end_date": end_date, "end_time": end_time, "min_price": plan.min_price, "max_price": plan.max_price}


class SearchIndex:
    """Plans ever online, sorted by start; rebuilt when ``version`` moves."""

    def __init__(self, context: Context, zone: tzinfo) -> None:
        self.context = context
        self.zone = zone
        self.version = 0  # bumped whenever a plan changes (its handler's PlanChanged, on every node)
        self._built = -1
        self._starts: list[str] = []
        self._ends: list[str] = []
        self._reach: list[str] = []
        self._views: list[dict[str, Any]] = []
        self._encoded: list[bytes] = []  # each view as JSON, so an answer is a join, not an encode
        self._joined = memoryview(b"")
        self._offsets: list[int] = [0]
        #: Whole answers by query string, for this version (see :meth:`answer`), oldest first.
        self._answers: dict[bytes, bytes] = {}
        self._answers_size = 0
        self._epoch = os.urandom(4).hex()  # ETags of another process (or a restart) never match
        self.etag = b""
        #: The most seconds a client or proxy may reuse an answer (the provider poll interval).
        self.max_age = 0
        #: When the poller next changes the plans (trio's clock): -inf before its first poll, None
        #: when no poll is scheduled.
        self.poll_due: float | None = None

    def changed(self) -> None:
        self.version += 1

    def max_age_at(self, now: float) -> int:
        """Seconds a cache may keep an answer given at ``now`` (trio's clock): never past the next poll.

        Whole seconds left until the next poll applies, less one: caches count whole seconds, and
        nginx keeps an entry through the second in which its max-age ends. At most the poll interval;
        0 until the first poll and while one is due; the interval when no poll is scheduled (no
        provider, or another node of a cluster polls: the plans change at most once an interval).
        """
        if self.poll_due is None:
            return self.max_age
        left = self.poll_due - now
        return int(min(self.max_age, left - 1)) if left >= 1 else 0

    def _rebuild(self) -> None:
        plans = [plan for _, plan in self.context.states(self.context.keys(PLUGIN), PLUGIN)]
        plans = sorted((p for p in plans if p.ever_online), key=lambda p: (p.start, p.end, p.uuid))
        self._starts = [p.start for p in plans]
        self._ends = [p.end for p in plans]
        self._reach = list(accumulate(self._ends, max))  # the latest end so far: sorted
        self._views = [_view(p) for p in plans]
        self._encoded = [orjson.dumps(v) for v in self._views]
        # All of them joined, and where each begins: a run of plans is one contiguous copy.
        self._joined = memoryview(b",".join(self._encoded))
        self._offsets = [0, *accumulate(len(e) + 1 for e in self._encoded)]
        self._answers, self._answers_size = {}, 0
        self._built = self.version
        self.etag = f'"{self._epoch}-{self.version}"'.encode()

    def __len__(self) -> int:
        if self._built != self.version:
            self._rebuild()
        return len(self._views)

    def search(self, starts_at: str | None, ends_at: str | None) -> list[dict[str, Any]]:
        """Plans within [starts_at, ends_at] (naive local ISO date-times; None is unbounded)."""
        first, stop, tail = self._positions(starts_at, ends_at)
        views = self._views
        return views[first:stop] + [views[i] for i in tail]

    def search_json(self, starts_at: str | None, ends_at: str | None, head: bytes = b"", tail: bytes = b"") -> bytes:
        """The same, as the JSON array of the answer between ``head`` and ``tail``: the pre-encoded
        plans, copied once and mostly as one contiguous slice (a whole feed's answer is megabytes)."""
        first, stop, more = self._positions(starts_at, ends_at)
        encoded = self._encoded
        if stop > first:  # the run first:stop is one slice of the joined plans: one contiguous copy
            offsets = self._offsets
            parts = [head + b"[", self._joined[offsets[first]:offsets[stop] - 1]]
            if more:
                parts.append(b"," + b",".join([encoded[i] for i in more]))
            parts.append(b"]" + tail)
            return b"".join(parts)
        if more:
            return head + b"[" + b",".join([encoded[i] for i in more]) + b"]" + tail
        return head + b"[]" + tail

    def answer(self, query: bytes, build: Callable[[], bytes]) -> bytes:
        """The answer to ``query`` (a raw query string): ``build()``, kept until the plans change.

        Clients ask the same windows again and again (the ETag says the answer is the same until
        the plans change): then an answer is a lookup, and the same bytes are sent again instead
        of a fresh copy each time (a whole feed's answer is megabytes, and 32 fresh copies in
        flight do not stay in the CPU's caches). At most :data:`ANSWERS_BYTES` are kept, keys and
        answers and a per-entry overhead counted (a long query string for an empty answer counts
        as what it holds), the oldest answers dropped first. A ``build()`` that raises (a bad
        query) keeps nothing.
        """
        if self._built != self.version:
            self._rebuild()
        body = self._answers.get(query)
        if body is None:
            body = build()
            cost = _entry_bytes(query, body)
            if cost <= ANSWERS_BYTES:
                answers = self._answers
                while answers and self._answers_size + cost > ANSWERS_BYTES:
                    oldest = next(iter(answers))
                    self._answers_size -= _entry_bytes(oldest, answers.pop(oldest))
                answers[query] = body
                self._answers_size += cost
        return body

    def _positions(self, starts_at: str | None, ends_at: str | None) -> tuple[int, int, list[int]]:
        """(first, stop, tail): plans ``first:stop`` match, and those of ``tail`` after them.

        Two bisects: from the first start in range to the last plan whose end, and every earlier
        plan's, is within the range (``_reach`` is the running maximum of the ends, so it is
        sorted); only the plans after that and starting in range are checked one by one (those
        few whose hours straddle ``ends_at``, with any longer plan starting before them).
        """
        if self._built != self.version:
            self._rebuild()
        starts = self._starts
        first = bisect_left(starts, starts_at) if starts_at else 0
        if ends_at is None:
            return first, len(starts), []
        last = bisect_right(starts, ends_at)  # plans from here on start after the range
        stop = max(first, min(bisect_right(self._reach, ends_at), last))
        ends = self._ends
        return first, stop, [i for i in range(stop, last) if ends[i] <= ends_at]

    def local(self, raw: str | None, name: str) -> str | None:
        """A query bound as the provider's naive local time (an offset is converted to the provider's zone)."""
        if raw is None or raw == "":
            return None
        try:
            if not _DATE_TIME.fullmatch(raw.strip()):
                raise ValueError(raw)
            moment = datetime.fromisoformat(raw.strip().replace(" ", "T", 1).upper().replace("Z", "+00:00"))
        except ValueError:
            raise SearchError("invalid_parameter", f"{name} must be a date-time such as 2021-07-21T17:32:28Z; "
                                                   f"got {raw[:60]!r}") from None
        if moment.tzinfo is not None:
            try:
                moment = moment.astimezone(self.zone).replace(tzinfo=None)
            except OverflowError:  # at the ends of the calendar
                raise SearchError("invalid_parameter", f"{name} is out of range") from None
        if moment.microsecond and name == "starts_at":
            # Plans' times are whole seconds: one starts at or after 12:00:00.5 iff at or after 12:00:01
            # (``ends_at`` rounds down, which the truncation below does).
            try:
                moment += timedelta(seconds=1)
            except OverflowError:
                raise SearchError("invalid_parameter", f"{name} is out of range") from None
        return moment.isoformat(timespec="seconds")


#: Bytes of answers a :class:`SearchIndex` keeps for the windows asked again.
ANSWERS_BYTES = 16 * 2**20
#: What one kept answer costs beyond its key's and body's bytes: two bytes objects' headers
#: (33 bytes each) and a dict slot, rounded up.
ENTRY_OVERHEAD = 128


def _entry_bytes(query: bytes, body: bytes) -> int:
    return len(query) + len(body) + ENTRY_OVERHEAD

#: What ``starts_at`` and ``ends_at`` take: an RFC 3339 date-time, or one without an offset
#: (the provider's local time), ``T`` or a space between date and time.
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?")
_LOCAL_PATTERN = ("^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                  "(\\.[0-9]+)?$")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"data": None, "error": {"code": code, "message": message}}


def search_app(index: SearchIndex, ready: Any = lambda: True):
    """The raw ASGI handler of ``GET /search`` (503 until Herald has replayed its journal)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        try:
            status, body, headers = _answer(index, scope, ready())
        except Exception:  # never the client's fault; the shape stays the contract's
            await respond_json(send, 500, _error("internal", "the search failed"))
            raise
        if isinstance(body, bytes):
            max_age = index.max_age_at(trio.current_time())
            cache = [(b"etag", index.etag), (b"cache-control", b"public, max-age=%d" % max_age)]
            if _header(scope, b"if-none-match") == index.etag:
                await send({"type": "http.response.start", "status": 304, "headers": cache})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *cache]})
            await send({"type": "http.response.body", "body": body})
        else:
            await respond_json(send, status, body, headers)

    return app


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _answer(index: SearchIndex, scope: dict, ready: bool) -> tuple[int, dict[str, Any] | bytes, list | None]:
    if scope["method"] not in ("GET", "HEAD"):
        return 405, _error("method_not_allowed", "use GET"), [(b"allow", b"GET")]
    if not ready:
        return 503, _error("not_ready", "Herald is starting; retry in a moment"), [(b"retry-after", b"1")]
    query_string = scope.get("query_string", b"")
    try:
        return 200, index.answer(query_string, lambda: _search(index, query_string)), None
    except SearchError as exc:
        return 400, _error(exc.code, exc.message), None


def _search(index: SearchIndex, query_string: bytes) -> bytes:
    query = dict(parse_qsl(query_string.decode("latin-1")))
    starts_at = index.local(query.get("starts_at"), "starts_at")
    ends_at = index.local(query.get("ends_at"), "ends_at")
    if starts_at and ends_at and ends_at < starts_at:
        raise SearchError("invalid_range", "ends_at must not be before starts_at")
    return index.search_json(starts_at, ends_at, b'{"data":{"events":', b'},"error":null}')


def zone_of(name: str) -> tzinfo:
    return ZoneInfo(name)


def search_openapi() -> dict[str, Any]:
    error = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}},
        "data": {"type": ["object", "null"]}}}
    summary = {"type": "object", "required": ["id", "title", "start_date", "start_time", "end_date", "end_time",
                                             "min_price", "max_price"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "title": {"type": "string"},
        "start_date": {"type": "string", "format": "date"}, "start_time": {"type": "string", "format": "time"},
        "end_date": {"type": "string", "format": "date"}, "end_time": {"type": "string", "format": "time"},
        "min_price": {"type": ["number", "null"]}, "max_price": {"type": ["number", "null"]}}}
    parameter = {"in": "query", "required": False, "schema": {"type": "string", "anyOf": [
        {"format": "date-time"}, {"pattern": _LOCAL_PATTERN, "description": "no offset: the provider's local time"},
        {"maxLength": 0, "description": "empty: no bound"}]}}
    return {"/search": {"get": {
        "operationId": "searchEvents",
        "tags": ["marketplace"],
        "summary": "Lists the available events on a time range",
        "description": "Plans that were on sale online at some point, that start at or after `starts_at` and end "
                       "at or before `ends_at` (both optional), with their latest known values. Answered from "
                       "memory; the provider being down changes nothing.",
        "parameters": [
            {**parameter, "name": "starts_at", "description": "Return only events that start after this date",
             "example": "2017-07-21T17:32:28Z"},
            {**parameter, "name": "ends_at", "description": "Return only events that finish before this date",
             "example": "2021-07-21T17:32:28Z"},
        ],
        "responses": {
            "200": {"description": "List of plans", "content": {"application/json": {"schema": {
                "type": "object", "required": ["data", "error"], "properties": {
                    "data": {"type": "object", "required": ["events"], "properties": {
                        "events": {"type": "array", "items": summary}}},
                    "error": {"type": ["object", "null"]}}}}}},
            "400": {"description": "A malformed parameter, or ends_at before starts_at",
                    "content": {"application/json": {"schema": error}}},
            "500": {"description": "Generic error", "content": {"application/json": {"schema": error}}},
        },
    }}}

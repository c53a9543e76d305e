"""The Eye's HTTP API: ingestion, queries over events and errors, client tokens.

Everything under the prefix (``HERALD_ANALYTICS_PREFIX``, default ``/api``)
requires ``Authorization: Token <token>`` of an active client. ``POST
/events`` journals the payloads and answers 202 at once; checking them is the
handler's job, behind the answer. Client tokens are managed under
``/v1/admin/tokens`` (Herald's admin bearer token, when one is set).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from quart import Blueprint, Response, request

from engine import Context, Event, new_event_id
from web import error_body
from web import error_response, json_body, operation
from web import BadParameter, admin_guard, int_param, json_response, read_json

from .clients import CREATED, REVOKED, Registry, client_json
from .model import NO_SESSION, RECEIVED
from .store import BadCursor, Store
from .validation import MAX_SESSION_ID, SchemaRegistry, parse_timestamp

__all__ = ["api_blueprints", "session_key"]

_EVENT = {"type": "object", "properties": {
    "id": {"type": "string"}, "session_id": {"type": "string"}, "category": {"type": "string"},
    "name": {"type": "string"}, "data": {"type": "object"}, "timestamp": {"type": "string", "format": "date-time"},
    "client": {"type": "string"}, "received_at": {"type": "string", "format": "date-time"}}}
_ERROR_ROW = {"type": "object", "properties": {
    "id": {"type": "integer"}, "event_id": {"type": "string"}, "client": {"type": "string"},
    "field": {"type": ["string", "null"]}, "code": {"type": "string"}, "message": {"type": "string"},
    "input": {}, "created_at": {"type": "string"}, "session_id": {"type": ["string", "null"]},
    "category": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
    "timestamp": {"type": ["string", "null"]}}}
_PAYLOAD = {"type": "object", "description": "session_id (<= 100 characters), category, name, data (a non-empty "
            "object), timestamp (YYYY-MM-DD HH:MM:SS.ffffff in UTC, or ISO 8601). Any object is journaled and "
            "answered 202: it is checked behind the answer, and each invalid field becomes an error row (GET errors).",
            "examples": [{"session_id": "s1", "category": "page interaction", "name": "pageview",
                          "data": {"host": "www.example.com", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"}]}
_ANY_PAYLOAD = {"description": "a payload; in a batch any JSON value is accepted (one that is not an object "
                "becomes an error row)"}


def _page(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"results": {"type": "array", "items": schema},
                                             "next": {"type": ["string", "null"]}}}


#: A time bound: YYYY-MM-DD HH:MM:SS.ffffff (UTC) or an RFC 3339 date-time; empty is no bound.
_TIME = {"type": "string", "anyOf": [
    {"format": "date-time"},
    {"pattern": "^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?$"},
    {"maxLength": 0}]}
_FILTERS = [
    {"name": "session_id", "in": "query", "schema": {"type": "string"}},
    {"name": "category", "in": "query", "schema": {"type": "string"}},
    {"name": "name", "in": "query", "schema": {"type": "string"}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "the `next` of the previous page"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
]


def session_key(payload: Any) -> str:
    """The actor of a payload: its session, or one shared actor for payloads without a usable one."""
    session_id = payload.get("session_id") if isinstance(payload, dict) else None
    if isinstance(session_id, str) and session_id.strip() and len(session_id) <= MAX_SESSION_ID:
        return "session:" + session_id
    return NO_SESSION


def _time_param(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_timestamp(raw)
    except (ValueError, OverflowError):
        raise BadParameter(name, "must be a date-time (YYYY-MM-DD HH:MM:SS.ffffff or ISO 8601)") from None


def api_blueprints(context: Context, store: Store, registry: SchemaRegistry, clients: Registry) -> list[Blueprint]:
    prefix = context.config.plugin_setting("analytics", "prefix", "/api").rstrip("/") or "/api"
    bp = Blueprint("analytics", __name__, url_prefix=prefix)

    @bp.before_request
    async def authenticate() -> Response | None:
        found = clients.authenticate(request.headers.get("Authorization"))
        if isinstance(found, str):
            message = {
                "missing": "Authentication credentials were not provided (Authorization: Token <token>).",
                "malformed": "Use the header Authorization: Token <token>.",
                "unknown": "Invalid token.",
                "revoked": "This client's token has been revoked.",
            }[found]
            return json_response(error_body(f"token_{found}", message, "Authorization"), 401,
                                 {"WWW-Authenticate": "Token"})
        request.client_name = found.name  # type: ignore[attr-defined]
        return None

    authenticate.__openapi_security__ = "EyeClient"  # type: ignore[attr-defined]  # in the OpenAPI document

    @bp.errorhandler(BadCursor)
    async def bad_cursor(exc: BadCursor) -> Response:
        return json_response(error_body("invalid_value", str(exc), "cursor"), 400)

    @bp.post("/events")
    @operation(
        "Send one event or a batch",
        tags=["analytics"],
        description="A JSON object, or a JSON array of them. Answers 202 as soon as the payloads are journaled; "
        "they are checked behind the answer: valid events are stored, invalid ones produce one error row per "
        "invalid field (see GET errors).",
        request={"required": True, "content": {"application/json": {"schema": {
            "oneOf": [_PAYLOAD, {"type": "array", "items": _ANY_PAYLOAD, "minItems": 1}]}}}},
        responses={202: json_body({"type": "object", "properties": {
            "accepted": {"type": "integer"}, "ids": {"type": "array", "items": {"type": "string"}}}}),
            400: error_response("not JSON, or not an object or a non-empty array"),
            401: error_response("no token, an unknown token or a revoked one")},
        writes=[RECEIVED],
    )
    async def receive() -> Response:
        body = await read_json()
        payloads = body if isinstance(body, list) else [body]
        if not payloads:
            return json_response(error_body("empty_batch", "the batch holds no events"), 400)
        if not isinstance(body, (list, dict)):
            return json_response(error_body("invalid_type", "send an event object or an array of them"), 400)
        now = datetime.fromtimestamp(time.time(), timezone.utc)
        client = request.client_name  # type: ignore[attr-defined]
        events = [Event(new_event_id(), RECEIVED, session_key(p), now, {"payload": p, "client": client}, now)
                  for p in payloads]
        await context.accept(events)
        return json_response({"accepted": len(events), "ids": [e.id for e in events]}, 202)

    @bp.get("/events")
    @operation(
        "Query stored events",
        tags=["analytics"],
        description="Filters combine; results are ordered by when the events occurred (their timestamp), "
        "whatever order they arrived in. Cursor-paginated: pass `next` as `cursor`.",
        parameters=[*_FILTERS,
                    {"name": "timestamp_after", "in": "query", "schema": _TIME, "description": "inclusive"},
                    {"name": "timestamp_before", "in": "query", "schema": _TIME, "description": "exclusive"}],
        responses={200: json_body(_page(_EVENT)), 400: error_response("a malformed filter or cursor"),
                   401: error_response("authentication failed")},
    )
    async def list_events() -> Response:
        filters = dict(session_id=request.args.get("session_id"), category=request.args.get("category"),
                       name=request.args.get("name"), after=_time_param("timestamp_after"),
                       before=_time_param("timestamp_before"), cursor=request.args.get("cursor") or None,
                       limit=int_param("limit", 100, low=1, high=1000))
        await store.flush()
        results, following = await _query(store.events, filters)
        return json_response({"results": results, "next": following})

    @bp.get("/events/<event_id>")
    @operation("One stored event", tags=["analytics"],
               responses={200: json_body(_EVENT), 404: error_response("no such event, or it was rejected")})
    async def one_event(event_id: str) -> Response:
        await store.flush()
        found = await _query(store.event, {"event_id": event_id})
        if found is None:
            return json_response(error_body("not_found", f"no stored event {event_id!r}; if it was rejected, "
                                            f"see {prefix}/errors?event_id={event_id}", "id"), 404)
        return json_response(found)

    @bp.get("/errors")
    @operation(
        "Query the errors log",
        tags=["analytics"],
        description="One row per invalid field of a rejected event, oldest first; filters combine.",
        parameters=[*_FILTERS,
                    {"name": "code", "in": "query", "schema": {"type": "string"}},
                    {"name": "event_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "client", "in": "query", "schema": {"type": "string"}},
                    {"name": "created_after", "in": "query", "schema": _TIME},
                    {"name": "created_before", "in": "query", "schema": _TIME}],
        responses={200: json_body(_page(_ERROR_ROW)), 400: error_response("a malformed filter or cursor"),
                   401: error_response("authentication failed")},
    )
    async def list_errors() -> Response:
        filters = dict(session_id=request.args.get("session_id"), category=request.args.get("category"),
                       name=request.args.get("name"), code=request.args.get("code"),
                       event_id=request.args.get("event_id"), client=request.args.get("client"),
                       after=_time_param("created_after"), before=_time_param("created_before"),
                       cursor=request.args.get("cursor") or None, limit=int_param("limit", 100, low=1, high=1000))
        await store.flush()
        results, following = await _query(store.errors, filters)
        return json_response({"results": results, "next": following})

    @bp.get("/errors/<int:error_id>")
    @operation("One error row", tags=["analytics"],
               responses={200: json_body(_ERROR_ROW), 404: error_response("no such error")})
    async def one_error(error_id: int) -> Response:
        await store.flush()
        if error_id >= 2**63:  # beyond SQLite's integers: no such row
            return json_response(error_body("not_found", f"no error {error_id}", "id"), 404)
        found = await _query(store.error, {"error_id": error_id})
        if found is None:
            return json_response(error_body("not_found", f"no error {error_id}", "id"), 404)
        return json_response(found)

    @bp.get("/stats")
    @operation("How much is stored", tags=["analytics"],
               description="Events stored, error rows, and checked results not yet written (normally 0 after 0.1 s).",
               responses={200: json_body({"type": "object", "properties": {
                   "events": {"type": "integer"}, "errors": {"type": "integer"}, "pending": {"type": "integer"}}})})
    async def stats() -> Response:
        counts = await _query(store.counts, {})
        return json_response({**counts, "pending": store.pending})

    @bp.get("/schemas")
    @operation("The per-type payload rules", tags=["analytics"],
               description="JSON Schemas for `data`, by category and name; other types get the generic checks only.",
               responses={200: json_body({"type": "array", "items": {"type": "object"}})})
    async def schemas() -> Response:
        return json_response([{"category": c, "name": n, "schema": s} for (c, n), s in sorted(registry.schemas.items())])

    admin = Blueprint("analytics_admin", __name__, url_prefix="/v1/admin/tokens")
    admin.before_request(admin_guard(context.config.admin_token))

    @admin.get("")
    @operation("Trusted clients", tags=["analytics", "admin"], responses={200: json_body({"type": "array"})})
    async def list_clients() -> Response:
        return json_response([client_json(c) for c in clients.all()])

    @admin.post("")
    @operation("Create a client and its token (shown once)", tags=["analytics", "admin"],
               request={"required": True, "content": {"application/json": {"schema": {
                   "type": "object", "required": ["name"], "properties": {"name": {
                       "type": "string", "minLength": 1, "maxLength": 100, "pattern": "\\S",
                       "description": "1 to 100 characters, not only spaces"}}}}}},
               responses={201: json_body({"type": "object", "properties": {"name": {"type": "string"},
                                                                            "token": {"type": "string"}}}),
                          400: error_response("no usable name"), 409: error_response("an active client has this name")},
               writes=[CREATED])
    async def create_client() -> Response:
        body = await read_json()
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            return json_response(error_body("invalid_value", "a client name is 1 to 100 characters", "name"), 400)
        try:
            token = await clients.create(name.strip())
        except ValueError as exc:
            return json_response(error_body("conflict", str(exc), "name"), 409)
        return json_response({"name": name.strip(), "token": token}, 201)

    @admin.delete("/<name>")
    @operation("Revoke a client's token", tags=["analytics", "admin"],
               responses={200: json_body({"type": "object"}), 404: error_response("no active client by that name")},
               writes=[REVOKED])
    async def revoke_client(name: str) -> Response:
        try:
            client = await clients.revoke(name)
        except LookupError as exc:
            return json_response(error_body("not_found", str(exc), "name"), 404)
        return json_response(client_json(client))

    return [bp, admin]


async def _query(fn: Any, kwargs: dict[str, Any]) -> Any:
    import trio

    return await trio.to_thread.run_sync(lambda: fn(**kwargs))

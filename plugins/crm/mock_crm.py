"""The mock CRM: the client's REST API (seed 000's YAML), in memory, with an API explorer.

Users and trips: list, get, create (``POST /users``: 201, 409 if the id
exists), replace (``POST /users/{id}``: 200, 404 if absent). Two additions,
marked as such in the OpenAPI document: ``DELETE`` (the GDPR erasure needs
it; the client's YAML has none), ``POST /_outage`` to play a CRM that is
down (every other call then answers 503), and ``GET /_calls`` (the write
calls served, in order, when started with ``--record``: benchmarks replay them).

Inside Herald it is mounted at ``/mock-crm`` (docs in Herald's ``/docs``);
``herald mock-crm --port 5000`` runs it alone with its own ``/docs``, its
calls answered by a bare ASGI front (same rules, a fraction of Quart's cost).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from quart import Blueprint, Response, request

from engine import InvalidEvent
from engine import decode_json
from web import json_media_type
from web import error_response, json_body, operation
from web import admin_guard, json_response

__all__ = ["CrmStore", "crm_blueprint"]

_NULLABLE_DATE_TIME = {"type": ["string", "null"], "format": "date-time",
                       "anyOf": [{"type": "null"}, {"type": "string", "format": "date-time"}]}
_USER = {"type": "object", "required": ["Id", "LastName", "Email"], "properties": {
    "Id": {"type": "string", "minLength": 1}, "LastName": {"type": "string"}, "FirstName": {"type": ["string", "null"]},
    "Email": {"type": "string"}, "LastTripType": {"type": ["string", "null"]},
    "LastTripId": {"type": ["string", "null"]}, "LastTripDate": _NULLABLE_DATE_TIME}}
_TRIP = {"type": "object", "required": ["Id", "UserId", "Price", "StartDate", "Type"], "properties": {
    "Id": {"type": "string", "minLength": 1}, "UserId": {"type": "string", "minLength": 1}, "From": {"type": ["string", "null"]},
    "To": {"type": ["string", "null"]}, "Price": {"type": "number"},
    "StartDate": {"type": "string", "format": "date-time"},
    "EndDate": _NULLABLE_DATE_TIME, "Type": {"type": "string"}}}
_SCHEMAS = {"users": _USER, "trips": _TRIP}
_DOWN = {503: error_response("the CRM is down (simulated: POST /_outage)")}
#: RFC 3339 date-times, as ``format: date-time`` means.
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _is_date_time(value: str) -> bool:
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


class CrmStore:
    """The CRM's data, what it was asked (for tests and the demo), and its API's rules.

    Each call is a method returning ``(status, JSON payload)``; the Quart
    blueprint (inside Herald, with docs) and the bare ASGI app (``herald
    mock-crm``) both answer through them, so the two behave alike.
    """

    def __init__(self, *, record: bool = False) -> None:
        self.data: dict[str, dict[str, dict[str, Any]]] = {"users": {}, "trips": {}}
        self.calls: dict[str, int] = {}
        self.down = False
        #: With ``record``: every write call as ``[method, path, body]``, in the order served (``GET /_calls``).
        self.recorded: list[list[Any]] | None = [] if record else None

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def record(self, method: str, path: str, body: bytes) -> None:
        if self.recorded is not None:
            self.recorded.append([method, path, body.decode(errors="replace")])

    # -- the API's calls: (status, payload) ----------------------------------------------

    def listing(self, kind: str) -> tuple[int, Any]:
        self.count(f"list_{kind}")
        return 200, list(self.data[kind].values())

    def one(self, kind: str, entity_id: str) -> tuple[int, Any]:
        singular = _SINGULAR[kind]
        self.count(f"get_{singular}")
        found = self.data[kind].get(entity_id)
        return (200, found) if found is not None else _problem(404, f"no {singular} {entity_id}")

    def create(self, kind: str, raw: bytes) -> tuple[int, Any]:
        self.record("POST", f"/{kind}", raw)
        body = _json(raw)
        problem = _valid(kind, body)
        if problem:
            return _problem(400, problem)
        data, singular = self.data[kind], _SINGULAR[kind]
        if body["Id"] in data:
            return _problem(409, f"{singular} {body['Id']} exists; POST /{kind}/{{id}} replaces it")
        self.count(f"create_{singular}")
        data[body["Id"]] = body
        return 201, body

    def replace(self, kind: str, entity_id: str, raw: bytes) -> tuple[int, Any]:
        self.record("POST", f"/{kind}/{entity_id}", raw)
        body = _json(raw)
        if isinstance(body, dict):
            body["Id"] = entity_id
        problem = _valid(kind, body)
        if problem:
            return _problem(400, problem)
        data, singular = self.data[kind], _SINGULAR[kind]
        if entity_id not in data:
            return _problem(404, f"no {singular} {entity_id}")
        self.count(f"replace_{singular}")
        data[entity_id] = body
        return 200, body

    def delete(self, kind: str, entity_id: str) -> tuple[int, Any]:
        self.record("DELETE", f"/{kind}/{entity_id}", b"")
        singular = _SINGULAR[kind]
        if self.data[kind].pop(entity_id, None) is None:
            return _problem(404, f"no {singular} {entity_id}")
        self.count(f"delete_{singular}")
        return 204, None

    def outage(self, raw: bytes) -> tuple[int, Any]:
        body = _json(raw)
        if not isinstance(body, dict) or not isinstance(body.get("down", False), bool):
            return _problem(400, 'the body is {"down": true} or {"down": false}')
        self.down = body.get("down", False)
        return 200, {"down": self.down}

    def recorded_calls(self) -> tuple[int, Any]:
        if self.recorded is None:
            return _problem(404, "not recording (start with --record)")
        return 200, self.recorded


_SINGULAR = {"users": "user", "trips": "trip"}
_CODES = {400: "bad_request", 404: "not_found", 409: "conflict", 415: "unsupported_media_type", 503: "unavailable"}


def _problem(status: int, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": _CODES[status], "message": message, "field": None}}


def _answer(answer: tuple[int, Any]) -> Response:
    status, payload = answer
    return Response(b"", status=status) if payload is None else json_response(payload, status)


def _replacement(schema: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /{kind}/{id}``: the entity, whose ``Id`` is the path's (a given one is ignored)."""
    return {**schema, "required": [f for f in schema["required"] if f != "Id"],
            "properties": {**schema["properties"], "Id": {"description": "ignored: the path's id is kept"}}}


_TYPES = {"string": str, "number": (int, float), "null": type(None)}


def _field_checks(schema: dict[str, Any]) -> list[tuple[str, tuple[type, ...], str, int, bool]]:
    """Per property: (name, accepted Python types, their JSON names, minLength, is a date-time), made once."""
    checks = []
    for field, spec in schema["properties"].items():
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        types = tuple(t for k in kinds for t in (_TYPES[k] if isinstance(_TYPES[k], tuple) else (_TYPES[k],)))
        checks.append((field, types, " or ".join(kinds), spec.get("minLength", 0), spec.get("format") == "date-time"))
    return checks


_CHECKS = {kind: (schema["required"], _field_checks(schema)) for kind, schema in _SCHEMAS.items()}


def _valid(kind: str, body: Any) -> str | None:
    """Why ``body`` is not a valid ``kind`` (users, trips), or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    required, checks = _CHECKS[kind]
    for field in required:
        if body.get(field) is None:
            return f"{field} is required"
    for field, types, names, min_length, date_time in checks:
        if field not in body:
            continue
        value = body[field]
        if not isinstance(value, types) or value.__class__ is bool:
            return f"{field} must be {names}"
        if value.__class__ is str:
            if len(value) < min_length:
                return f"{field} must not be empty"
            if date_time and not _is_date_time(value):
                return f"{field} must be a date-time such as 2021-07-21T17:32:28Z"
    return None


def crm_blueprint(store: CrmStore, prefix: str = "/mock-crm", name: str = "mock_crm",
                  token: str | None = None) -> Blueprint:
    """The mock CRM's routes; with ``token``, every one needs it as a bearer token (it holds personal data)."""
    bp = Blueprint(name, __name__, url_prefix=prefix)
    if token:
        bp.before_request(admin_guard(token))

    @bp.before_request
    async def outage() -> Response | None:
        if store.down and not request.path.endswith("/_outage"):
            return _answer(_problem(503, "the CRM is down (simulated)"))
        return None

    @bp.before_request
    async def json_only() -> Response | None:
        if request.method in ("POST", "PUT", "PATCH") and not json_media_type(request.headers.get("Content-Type", "")):
            return _answer(_problem(415, "send the body as application/json"))
        return None

    def routes(kind: str, singular: str, schema: dict[str, Any]) -> None:
        @bp.get(f"/{kind}", endpoint=f"list_{kind}")
        @operation(f"Returns all {kind}", tags=["mock CRM"], responses={200: json_body({"type": "array", "items": schema}), **_DOWN})
        async def listing() -> Response:
            return _answer(store.listing(kind))

        @bp.get(f"/{kind}/<entity_id>", endpoint=f"get_{singular}")
        @operation(f"Returns one {singular} by id", tags=["mock CRM"],
                   responses={200: json_body(schema), 404: error_response("not found"), **_DOWN})
        async def one(entity_id: str) -> Response:
            return _answer(store.one(kind, entity_id))

        @bp.post(f"/{kind}", endpoint=f"create_{singular}")
        @operation(f"Creates a new {singular}", tags=["mock CRM"],
                   request={"required": True, "content": {"application/json": {"schema": schema}}},
                   responses={201: json_body(schema, "created"), 400: error_response("invalid"),
                              409: error_response("the id exists"), **_DOWN})
        async def create() -> Response:
            return _answer(store.create(kind, await request.get_data()))

        @bp.post(f"/{kind}/<entity_id>", endpoint=f"replace_{singular}")
        @operation(f"Replaces an existing {singular}'s properties", tags=["mock CRM"],
                   request={"required": True, "content": {"application/json": {"schema": _replacement(schema)}}},
                   responses={200: json_body(schema), 400: error_response("invalid"), 404: error_response("not found"),
                              **_DOWN})
        async def replace(entity_id: str) -> Response:
            return _answer(store.replace(kind, entity_id, await request.get_data()))

        @bp.delete(f"/{kind}/<entity_id>", endpoint=f"delete_{singular}")
        @operation(f"Deletes a {singular} (an addition to the client's API, for GDPR erasure)", tags=["mock CRM"],
                   responses={204: {"description": "deleted"}, 404: error_response("not found"), **_DOWN})
        async def delete(entity_id: str) -> Response:
            return _answer(store.delete(kind, entity_id))

    routes("users", "user", _USER)
    routes("trips", "trip", _TRIP)

    @bp.get("/_calls")
    @operation("The write calls served, in order (an addition for benchmarks: ``herald mock-crm --record``)",
               tags=["mock CRM"], responses={200: json_body({"type": "array"}), 404: error_response("not recording")})
    async def recorded() -> Response:
        return _answer(store.recorded_calls())

    @bp.post("/_outage")
    @operation("Play a CRM outage (an addition for demos and tests)", tags=["mock CRM"],
               request={"required": True, "content": {"application/json": {"schema": {
                   "type": "object", "properties": {"down": {"type": "boolean"}}}}}},
               responses={200: json_body({"type": "object"}), 400: error_response("not {\"down\": true|false}")})
    async def set_outage() -> Response:
        return _answer(store.outage(await request.get_data()))

    return bp


def _json(raw: bytes) -> Any:
    try:
        return decode_json(raw)
    except InvalidEvent:
        return None


class _BareCrm:
    """``herald mock-crm``'s front: the CRM's calls answered by a bare ASGI app.

    A Quart request costs several times the CRM's own work, and a benchmark of
    Herald's delivery must not measure the mock; the rules are the store's (as
    in the blueprint). Anything else (``/docs``, ``/openapi.json``, a method or
    path the API lacks) goes to the Quart app, which answers it as before.
    """

    def __init__(self, store: CrmStore, fallback: Any) -> None:
        self.store, self.fallback = store, fallback

    def _route(self, method: str, parts: list[str]) -> Any:
        """The store's call for this request (a function of the body), or None for the Quart app."""
        store = self.store
        if len(parts) == 2:
            kind = parts[1]
            if kind in _SINGULAR:
                if method == "GET":
                    return lambda raw: store.listing(kind)
                if method == "POST":
                    return lambda raw: store.create(kind, raw)
            elif kind == "_outage" and method == "POST":
                return store.outage
            elif kind == "_calls" and method == "GET":
                return lambda raw: store.recorded_calls()
        elif len(parts) == 3 and parts[1] in _SINGULAR and parts[2]:
            kind, entity_id = parts[1], parts[2]
            if method == "GET":
                return lambda raw: store.one(kind, entity_id)
            if method == "POST":
                return lambda raw: store.replace(kind, entity_id, raw)
            if method == "DELETE":
                return lambda raw: store.delete(kind, entity_id)
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.fallback(scope, receive, send)
        method, parts = scope["method"], scope["path"].split("/")
        call = self._route(method, parts)
        if call is None:
            return await self.fallback(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if self.store.down and parts[1] != "_outage":
            answer = _problem(503, "the CRM is down (simulated)")
        elif method == "POST" and not json_media_type(
                next((v for k, v in scope["headers"] if k == b"content-type"), b"")):
            answer = _problem(415, "send the body as application/json")
        else:
            answer = call(b"".join(chunks))
        status, payload = answer
        body = b"" if payload is None else orjson.dumps(payload)
        headers = [(b"content-length", str(len(body)).encode())]
        if payload is not None:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def standalone_app(store: CrmStore | None = None) -> Any:
    """The mock CRM on its own (``herald mock-crm``): its API at the root, ``/docs`` and ``/openapi.json``."""
    from quart_trio import QuartTrio

    from web import build_document, explorer

    store = store or CrmStore()
    app = QuartTrio("mock_crm")
    app.register_blueprint(crm_blueprint(store, prefix=""))
    app.register_blueprint(explorer("Mock CRM", lambda: build_document(
        app, title="Mock CRM", version="1.0.0",
        description="The client's CRM API (users, trips) as a thin in-memory service, for integration work.")))
    return _BareCrm(store, app)


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("mock-crm", help="run the mock CRM alone (crm)",
                                 description="The client's CRM REST API in memory, with an API explorer at /docs.")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="the port to listen on (default 5000)")
    parser.add_argument("--record", action="store_true",
                        help="keep every write call, in order, for GET /_calls (benchmarks replay them)")
    parser.set_defaults(run=_run)


def _run(args: Any) -> int:
    import logging

    import hypercorn.config
    import hypercorn.trio
    import trio

    from engine.host import tune_gc  # this command runs a process of its own: a host, not a plugin

    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    app = standalone_app(CrmStore(record=args.record))
    # As `herald serve` does: the process imported Herald's whole web stack; without this each request's
    # garbage would make the collector walk all of it again and again (a bare app has far less to walk).
    tune_gc()
    print(f"mock CRM on http://{args.host}:{args.port} (API explorer: /docs)", flush=True)
    try:
        trio.run(hypercorn.trio.serve, app, config)
    except KeyboardInterrupt:
        pass
    return 0

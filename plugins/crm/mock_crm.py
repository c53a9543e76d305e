"""The mock CRM: the client's REST API (seed 000's YAML), in memory, with an API explorer.

Users and trips: list, get, create (``POST /users``: 201, 409 if the id
exists), replace (``POST /users/{id}``: 200, 404 if absent). Two additions,
marked as such in the OpenAPI document: ``DELETE`` (the GDPR erasure needs
it; the client's YAML has none) and ``POST /_outage`` to play a CRM that is
down (every other call then answers 503).

Inside Herald it is mounted at ``/mock-crm`` (docs in Herald's ``/docs``);
``herald mock-crm --port 5000`` runs it alone with its own ``/docs``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

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
    """The CRM's data, and what it was asked (for tests and the demo)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, dict[str, Any]]] = {"users": {}, "trips": {}}
        self.calls: dict[str, int] = {}
        self.down = False

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1


def _problem(status: int, message: str) -> Response:
    return json_response({"error": {"code": {400: "bad_request", 404: "not_found", 409: "conflict",
                                             415: "unsupported_media_type", 503: "unavailable"}[status], "message": message, "field": None}}, status)


def _replacement(schema: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /{kind}/{id}``: the entity, whose ``Id`` is the path's (a given one is ignored)."""
    return {**schema, "required": [f for f in schema["required"] if f != "Id"],
            "properties": {**schema["properties"], "Id": {"description": "ignored: the path's id is kept"}}}


def _valid(kind: str, body: Any) -> str | None:
    """Why ``body`` is not a valid ``kind`` (users, trips), or None."""
    schema = _SCHEMAS[kind]
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for field in schema["required"]:
        if body.get(field) is None:
            return f"{field} is required"
    for field, spec in schema["properties"].items():
        value = body.get(field)
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        ok = {"string": str, "number": (int, float), "null": type(None)}
        if field in body and not any(isinstance(value, ok[k]) and not isinstance(value, bool) for k in kinds):
            return f"{field} must be {' or '.join(kinds)}"
        if isinstance(value, str) and len(value) < spec.get("minLength", 0):
            return f"{field} must not be empty"
        if isinstance(value, str) and spec.get("format") == "date-time" and not _is_date_time(value):
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
            return _problem(503, "the CRM is down (simulated)")
        return None

    @bp.before_request
    async def json_only() -> Response | None:
        if request.method in ("POST", "PUT", "PATCH") and not json_media_type(request.headers.get("Content-Type", "")):
            return _problem(415, "send the body as application/json")
        return None

    def routes(kind: str, singular: str, schema: dict[str, Any]) -> None:
        data = store.data[kind]

        @bp.get(f"/{kind}", endpoint=f"list_{kind}")
        @operation(f"Returns all {kind}", tags=["mock CRM"], responses={200: json_body({"type": "array", "items": schema}), **_DOWN})
        async def listing() -> Response:
            store.count(f"list_{kind}")
            return json_response(list(data.values()))

        @bp.get(f"/{kind}/<entity_id>", endpoint=f"get_{singular}")
        @operation(f"Returns one {singular} by id", tags=["mock CRM"],
                   responses={200: json_body(schema), 404: error_response("not found"), **_DOWN})
        async def one(entity_id: str) -> Response:
            store.count(f"get_{singular}")
            if entity_id not in data:
                return _problem(404, f"no {singular} {entity_id}")
            return json_response(data[entity_id])

        @bp.post(f"/{kind}", endpoint=f"create_{singular}")
        @operation(f"Creates a new {singular}", tags=["mock CRM"],
                   request={"required": True, "content": {"application/json": {"schema": schema}}},
                   responses={201: json_body(schema, "created"), 400: error_response("invalid"),
                              409: error_response("the id exists"), **_DOWN})
        async def create() -> Response:
            body = _json(await request.get_data())
            problem = _valid(kind, body)
            if problem:
                return _problem(400, problem)
            if body["Id"] in data:
                return _problem(409, f"{singular} {body['Id']} exists; POST /{kind}/{{id}} replaces it")
            store.count(f"create_{singular}")
            data[body["Id"]] = body
            return json_response(body, 201)

        @bp.post(f"/{kind}/<entity_id>", endpoint=f"replace_{singular}")
        @operation(f"Replaces an existing {singular}'s properties", tags=["mock CRM"],
                   request={"required": True, "content": {"application/json": {"schema": _replacement(schema)}}},
                   responses={200: json_body(schema), 400: error_response("invalid"), 404: error_response("not found"),
                              **_DOWN})
        async def replace(entity_id: str) -> Response:
            body = _json(await request.get_data())
            if isinstance(body, dict):
                body = {**body, "Id": entity_id}
            problem = _valid(kind, body)
            if problem:
                return _problem(400, problem)
            if entity_id not in data:
                return _problem(404, f"no {singular} {entity_id}")
            store.count(f"replace_{singular}")
            data[entity_id] = body
            return json_response(body)

        @bp.delete(f"/{kind}/<entity_id>", endpoint=f"delete_{singular}")
        @operation(f"Deletes a {singular} (an addition to the client's API, for GDPR erasure)", tags=["mock CRM"],
                   responses={204: {"description": "deleted"}, 404: error_response("not found"), **_DOWN})
        async def delete(entity_id: str) -> Response:
            if data.pop(entity_id, None) is None:
                return _problem(404, f"no {singular} {entity_id}")
            store.count(f"delete_{singular}")
            return Response(b"", status=204)

    routes("users", "user", _USER)
    routes("trips", "trip", _TRIP)

    @bp.post("/_outage")
    @operation("Play a CRM outage (an addition for demos and tests)", tags=["mock CRM"],
               request={"required": True, "content": {"application/json": {"schema": {
                   "type": "object", "properties": {"down": {"type": "boolean"}}}}}},
               responses={200: json_body({"type": "object"}), 400: error_response("not {\"down\": true|false}")})
    async def set_outage() -> Response:
        body = _json(await request.get_data())
        if not isinstance(body, dict) or not isinstance(body.get("down", False), bool):
            return _problem(400, 'the body is {"down": true} or {"down": false}')
        store.down = body.get("down", False)
        return json_response({"down": store.down})

    return bp


def _json(raw: bytes) -> Any:
    try:
        return decode_json(raw)
    except InvalidEvent:
        return None


def standalone_app(store: CrmStore | None = None) -> Any:
    """The mock CRM on its own (``herald mock-crm``): its API at the root, ``/docs`` and ``/openapi.json``."""
    from quart_trio import QuartTrio

    from web import build_document, explorer

    app = QuartTrio("mock_crm")
    app.register_blueprint(crm_blueprint(store or CrmStore(), prefix=""))
    app.register_blueprint(explorer("Mock CRM", lambda: build_document(
        app, title="Mock CRM", version="1.0.0",
        description="The client's CRM API (users, trips) as a thin in-memory service, for integration work.")))
    return app


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("mock-crm", help="run the mock CRM alone (crm)",
                                 description="The client's CRM REST API in memory, with an API explorer at /docs.")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="the port to listen on (default 5000)")
    parser.set_defaults(run=_run)


def _run(args: Any) -> int:
    import logging

    import hypercorn.config
    import hypercorn.trio
    import trio

    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    print(f"mock CRM on http://{args.host}:{args.port} (API explorer: /docs)", flush=True)
    try:
        trio.run(hypercorn.trio.serve, standalone_app(), config)
    except KeyboardInterrupt:
        pass
    return 0

"""The seed's REST API: ``/customers`` list, show, create, merge-update, delete.

Reads come from the actors' states in memory; writes are events on the
customer's actor (``customers.create|update|delete``), journaled before the
answer, so they replay like file lines. Error bodies carry the seed's
``message`` and Herald's ``error`` object (code, message, field).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from quart import Blueprint, Response

from engine import Context, Event, InvalidEvent, new_event_id
from web import ERROR_SCHEMA, json_body, operation
from web import UnsupportedMediaType, admin_guard, json_response, read_json

from .directory import Directory
from .hooks import CREATE, DELETE, UPDATE
from .messages import _MAX_NAME as MAX_ATTRIBUTE_NAME, MAX_ID_DIGITS, attribute_map, customer_key
from .model import PLUGIN, REQUIRED_ATTRIBUTE, view

__all__ = ["api_blueprint", "CustomerError", "Writes"]

_MIN_CREATED_AT, _MAX_CREATED_AT = 100_000_000, 9_999_999_999

_CUSTOMER_SCHEMA = {
    "type": "object",
    "required": ["id", "attributes", "events", "last_updated"],
    "properties": {
        "id": {"type": "integer"},
        "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
        "events": {"type": "object", "additionalProperties": {"type": "integer"}},
        "last_updated": {"type": "integer", "description": "Unix seconds of the latest change"},
    },
}
#: A customer id: a non-negative integer (or its decimal digits, as the seed's clients send it).
_ID = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                 {"type": "string", "pattern": f"^[0-9]{{1,{MAX_ID_DIGITS}}}$"}]}
_ONE = {"type": "object", "properties": {"customer": _CUSTOMER_SCHEMA}}
#: A refusal: the seed's ``message`` and Herald's ``error`` object side by side.
_MESSAGE = {
    "type": "object",
    "required": ["message", "error"],
    "properties": {"message": {"type": "string"}, "error": ERROR_SCHEMA["properties"]["error"]},
}


def _attributes_schema(value_type: Any, *, email_required: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": {"type": value_type},
                              "propertyNames": {"minLength": 1, "maxLength": MAX_ATTRIBUTE_NAME}}
    if email_required:  # a customer's email is required and not blank
        schema["properties"] = {REQUIRED_ATTRIBUTE: {"type": "string", "pattern": "\\S"}}
        schema["required"] = [REQUIRED_ATTRIBUTE]
    return schema


def _customer_request(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """The request body ``{"customer": {...}}`` of POST and PATCH."""
    customer: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        customer["required"] = required
    schema = {"type": "object", "required": ["customer"], "properties": {"customer": customer}}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _failure(description: str) -> dict[str, Any]:
    return json_body(_MESSAGE, description)


class CustomerError(Exception):
    """A write the API refuses: its status, the seed-style message, the field at fault."""

    def __init__(self, status: int, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.field = status, message, code, field

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "error": {"code": self.code, "message": self.message, "field": self.field}}

    @classmethod
    def invalid(cls, exc: InvalidEvent) -> "CustomerError":
        return cls(400, f"{exc.field}: {exc.message}" if exc.field else exc.message, exc.code, exc.field)


NOT_FOUND = CustomerError(404, "customer not found", "not_found", "id")


class Writes:
    """Creating, changing and deleting customers: checks, then one event on the customer's actor.

    Shared by the REST API and the web UI so that both refuse the same things
    with the same messages.
    """

    def __init__(self, context: Context) -> None:
        self.context = context

    def get(self, key: str) -> Any:
        return self.context.state(key, PLUGIN)

    async def _write(self, type_: str, key: str, attributes: dict[str, Any] | None) -> Any:
        now = datetime.fromtimestamp(time.time(), timezone.utc)
        data = {} if attributes is None else {"attributes": attributes}
        await self.context.accept([Event(new_event_id(), type_, key, now, data, now)])
        return self.get(key)

    async def create(self, raw_id: Any, raw_attributes: Any) -> tuple[str, Any]:
        if raw_id is None:
            raise CustomerError(400, "id is required", "missing", "id")
        try:
            key = customer_key(raw_id, "id")
            attributes = attribute_map(raw_attributes if raw_attributes is not None else {}, "attributes", strict=True)
        except InvalidEvent as exc:
            raise CustomerError.invalid(exc) from None
        if not attributes.get(REQUIRED_ATTRIBUTE, "").strip():
            raise CustomerError(400, "email attribute is required", "missing", f"attributes.{REQUIRED_ATTRIBUTE}")
        created_at = attributes.get("created_at", "")
        if not (created_at.isascii() and created_at.isdigit() and _MIN_CREATED_AT <= int(created_at) <= _MAX_CREATED_AT):
            attributes["created_at"] = str(int(time.time()))
        if self.get(key) is not None:
            raise CustomerError(409, f"customer {key} exists already", "conflict", "id")
        return key, await self._write(CREATE, key, attributes)

    async def update(self, key: str, raw_attributes: Any) -> Any:
        if self.get(key) is None:
            raise NOT_FOUND
        try:
            changes = attribute_map(raw_attributes, "attributes", allow_none=True, strict=True)
        except InvalidEvent as exc:
            raise CustomerError.invalid(exc) from None
        if REQUIRED_ATTRIBUTE in changes and not (changes[REQUIRED_ATTRIBUTE] or "").strip():
            raise CustomerError(400, "email attribute is required (it cannot be removed or empty)", "required",
                                f"attributes.{REQUIRED_ATTRIBUTE}")
        return await self._write(UPDATE, key, changes)

    async def delete(self, key: str) -> None:
        if self.get(key) is None:
            raise NOT_FOUND
        await self._write(DELETE, key, None)


def _customer_in(body: Any) -> dict[str, Any]:
    """``{"customer": {...}}`` as the seed sends it (a bare object is accepted too)."""
    if not isinstance(body, dict):
        raise CustomerError(400, "the body must be a JSON object: {\"customer\": {...}}", "invalid_type")
    customer = body.get("customer", body)
    if not isinstance(customer, dict):
        raise CustomerError(400, "customer must be a JSON object", "invalid_type", "customer")
    return customer


async def _json_body() -> Any:
    try:
        return await read_json()
    except InvalidEvent as exc:
        raise CustomerError(400, exc.message, exc.code) from None
    except UnsupportedMediaType as exc:
        raise CustomerError(415, str(exc), "unsupported_media_type", "Content-Type") from None


def _key_of(raw: str) -> str:
    try:
        return customer_key(raw, "id")
    except InvalidEvent:
        raise NOT_FOUND from None


def api_blueprint(context: Context) -> Blueprint:
    """The ``/customers`` routes (prefix: ``HERALD_CUSTOMERS_PREFIX``)."""
    prefix = context.config.plugin_setting(PLUGIN, "prefix", "/customers").rstrip("/") or "/customers"
    bp = Blueprint("customers_api", __name__, url_prefix=prefix)
    bp.before_request(admin_guard(context.config.admin_token))  # customers are personal data
    directory = Directory.of(context)
    writes = Writes(context)

    @bp.errorhandler(CustomerError)
    async def refused(exc: CustomerError) -> Response:
        return json_response(exc.to_json(), exc.status)

    @bp.get("")
    @operation(
        "List customers, by id",
        tags=["customers"],
        description="Paginated; `page` starts at 1. `q` keeps customers whose id is `q` or whose email contains it.",
        parameters=[
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1}},
            {"name": "per_page", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": Directory.MAX_PER_PAGE, "default": 25}},
            {"name": "q", "in": "query", "schema": {"type": "string"}},
        ],
        responses={
            200: json_body({"type": "object", "properties": {
                "customers": {"type": "array", "items": _CUSTOMER_SCHEMA},
                "meta": {"type": "object", "properties": {
                    "page": {"type": "integer"}, "per_page": {"type": "integer"}, "total": {"type": "integer"}}},
            }}),
            400: json_body({"$ref": "#/components/schemas/Error"}, "a page or per_page that is not a positive integer"),
        },
    )
    async def list_customers() -> Response:
        page, per_page, q = directory.paging()
        keys, total = directory.page(page, per_page, q)
        customers = [view(key, state) for key, state in directory.states(keys)]
        return json_response({"customers": customers, "meta": {"page": page, "per_page": per_page, "total": total}})

    @bp.get("/<raw_id>")
    @operation("One customer", tags=["customers"],
               responses={200: json_body(_ONE), 404: _failure("no such customer")})
    async def show(raw_id: str) -> Response:
        key = _key_of(raw_id)
        state = writes.get(key)
        if state is None:
            raise NOT_FOUND
        return json_response({"customer": view(key, state)})

    @bp.post("")
    @operation(
        "Create a customer",
        tags=["customers"],
        description="`id` (integer) and a non-empty `email` attribute are required; attribute values are strings. "
        "A missing or implausible `created_at` becomes the current Unix time.",
        request=_customer_request({"id": _ID, "attributes": _attributes_schema("string", email_required=True)},
                                  required=["id", "attributes"]),
        responses={201: json_body(_ONE, "created"), 400: _failure("a missing or invalid id or attribute"),
                   409: _failure("the id exists already"), 415: _failure("the body is not sent as application/json")},
        writes=[CREATE],
    )
    async def create() -> Response:
        customer = _customer_in(await _json_body())
        key, state = await writes.create(customer.get("id"), customer.get("attributes"))
        return json_response({"customer": view(key, state)}, 201)

    @bp.patch("/<raw_id>")
    @operation(
        "Merge attributes into a customer",
        tags=["customers"],
        description="Given attributes are set, the others kept; an attribute given as `null` is removed. "
        "`email` cannot be removed.",
        request=_customer_request({"attributes": _attributes_schema(["string", "null"])}, required=["attributes"]),
        responses={200: json_body(_ONE), 400: _failure("an invalid attribute"), 404: _failure("no such customer"),
                   415: _failure("the body is not sent as application/json")},
        writes=[UPDATE],
    )
    async def update(raw_id: str) -> Response:
        key = _key_of(raw_id)
        customer = _customer_in(await _json_body())
        state = await writes.update(key, customer.get("attributes"))
        return json_response({"customer": view(key, state)})

    @bp.delete("/<raw_id>")
    @operation("Delete a customer", tags=["customers"], description="204 No Content on success.",
               responses={204: {"description": "deleted"}, 404: _failure("no such customer")}, writes=[DELETE])
    async def delete(raw_id: str) -> Response:
        await writes.delete(_key_of(raw_id))
        return Response(b"", status=204)

    return bp

"""The customers plugin's Herald hooks: state, event types, the bulk loader, routes."""

from __future__ import annotations

from typing import Any, Iterable

from engine import REMOVED, Config, Context, Event, EventType, Loader, Origin, hookimpl

from .messages import attribute_map, customer_key, fold_lines, parse_message
from .model import Customer, apply_attributes, count_event, merge_attributes

#: The Herald plugin API this plugin is written for (a Herald offering another refuses it).
HERALD_API = "1"

CREATE, UPDATE, DELETE = "customers.create", "customers.update", "customers.delete"


def _seconds(event: Event) -> int:
    return int(event.at)


def on_attributes(state: Customer, event: Event) -> tuple[Customer, tuple]:
    return apply_attributes(state, event.data["attributes"], _seconds(event)), ()


def on_event(state: Customer, event: Event) -> tuple[Customer, tuple]:
    return count_event(state, event.id, event.data["name"], _seconds(event)), ()


def on_change(state: Customer, event: Event) -> tuple[Customer, tuple]:
    """``customers.create`` and ``customers.update``: merge the given attributes (``None`` removes)."""
    return merge_attributes(state, event.data["attributes"], _seconds(event)), ()


def on_delete(state: Customer, event: Event) -> tuple[Any, tuple]:
    return REMOVED, ()


def _validate_change(event: Event) -> Event:
    customer_key(event.key, "key")
    changes = attribute_map(event.data.get("attributes"), "attributes", allow_none=event.type == UPDATE)
    return Event(event.id, event.type, event.key, event.timestamp, {"attributes": changes}, event.received_at)


def _validate_delete(event: Event) -> Event:
    customer_key(event.key, "key")
    return event


_MESSAGE_SCHEMA = {
    "type": "object",
    "description": "The seed's message line: user_id, id, timestamp (Unix seconds) at the top level.",
}


@hookimpl
def herald_state_type() -> type:
    return Customer


@hookimpl
def herald_event_types(config: Config) -> Iterable[EventType]:
    attributes_schema = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
    return [
        EventType("attributes", on_attributes, parse=parse_message, schema=_MESSAGE_SCHEMA,
                  description="Sets customer attributes; per attribute the latest timestamp wins."),
        EventType("event", on_event, parse=parse_message, schema=_MESSAGE_SCHEMA,
                  description="A customer event; counted once per message id."),
        # Written only behind the admin token (the API and the pages, which check what they write first):
        # internal, so that POST /v1/event(s) cannot bring them in without it.
        EventType(CREATE, on_change, validate=_validate_change, origin=Origin.INTERNAL,
                  schema={"type": "object", "properties": {"attributes": attributes_schema}},
                  description="A customer created through the API."),
        EventType(UPDATE, on_change, validate=_validate_change, origin=Origin.INTERNAL,
                  schema={"type": "object", "properties": {"attributes": attributes_schema}},
                  description="Attributes merged through the API; null removes one."),
        EventType(DELETE, on_delete, validate=_validate_delete, origin=Origin.INTERNAL,
                  description="A customer deleted through the API."),
    ]


@hookimpl
def herald_loaders(config: Config) -> Iterable[Loader]:
    return [Loader("customers", fold_lines, "customer.io message lines (seed 004): attributes and events")]


@hookimpl
def herald_routes(context: Context) -> list:
    from .api import api_blueprint
    from .ui import ui_blueprint

    return [api_blueprint(context), ui_blueprint(context)]

"""The analytics plugin's Herald hooks: event types, the store as an effect sink, routes, schemas."""

from __future__ import annotations

from typing import Any, Iterable

from engine import Config, Context, EventType, Origin, hookimpl
from engine import non_negative

from . import hookspecs
from .api import api_blueprints
from .clients import CREATED, REVOKED, Registry, on_created, on_revoked
from .model import RECEIVED, Receive, RejectedEvent, Session, StoredEvent
from .store import Store
from .validation import SHIPPED_SCHEMAS, SchemaRegistry

#: The Herald plugin API this plugin is written for (a Herald offering another refuses it).
HERALD_API = "1"

PLUGIN = "analytics"


def _registry(context: Context) -> SchemaRegistry:
    """The rules the ``analytics.received`` handler checks with (the plugin's own object)."""
    return context.event_type(RECEIVED).handler.registry


def _store(context: Context) -> Store:
    return context.part("analytics.store", lambda: Store(context.config.data_file("analytics.db")))


@hookimpl
def herald_add_hookspecs() -> Any:
    return hookspecs


@hookimpl
def herald_state_type() -> type:
    return Session


@hookimpl
def herald_event_types(config: Config) -> Iterable[EventType]:
    registry = SchemaRegistry()
    registry.add_directory(SHIPPED_SCHEMAS)
    receive = Receive(registry, config.plugin_setting(PLUGIN, "max_skew", 60.0, non_negative(float)))
    return [
        # All three enter only through the plugin's own authenticated routes
        # (POST /api/events with a client token; /v1/admin/tokens).
        EventType(RECEIVED, receive, origin=Origin.INTERNAL,
                  description="A payload sent to The Eye, checked after it was acknowledged."),
        EventType(CREATED, on_created, origin=Origin.INTERNAL, description="A trusted client was created."),
        EventType(REVOKED, on_revoked, origin=Origin.INTERNAL, description="A client's token was revoked."),
    ]


@hookimpl
def herald_startup(context: Context) -> None:
    registry = _registry(context)
    for documents in context.hook.herald_analytics_schemas():
        for document in documents or ():
            registry.add_document(document, "a plugin's herald_analytics_schemas")
    directory = context.config.plugin_setting(PLUGIN, "schema_dir", None)
    if directory:
        registry.add_directory(directory)


@hookimpl
def herald_effect_sinks(context: Context) -> dict[type, Any]:
    store = _store(context)
    return {StoredEvent: store, RejectedEvent: store}


@hookimpl
def herald_sources(context: Context) -> list:
    return [_store(context).run]


@hookimpl
def herald_routes(context: Context) -> list:
    return api_blueprints(context, _store(context), _registry(context), Registry(context))


@hookimpl
def herald_cli(commands: Any) -> None:
    from .cli import add_commands

    add_commands(commands)

"""The marketplace plugin's Herald hooks: plan events, the provider poller, GET /search."""

from __future__ import annotations

from typing import Any, Iterable

from engine import Context, Config, EventType, Origin, hookimpl
from engine import positive

from .model import SEEN, Plan, PlanChanged, on_seen
from .poller import Poller
from .search import PLUGIN, SearchIndex, search_app, search_openapi, zone_of

#: The Herald plugin API this plugin is written for (a Herald offering another refuses it).
HERALD_API = "1"



def parts(context: Context) -> tuple[SearchIndex, Poller]:
    """The search index and the poller of one Herald (made once)."""
    return context.part("marketplace", lambda: _make_parts(context))


def _make_parts(context: Context) -> tuple[SearchIndex, Poller]:
    setting = context.config.plugin_setting
    index = SearchIndex(context, setting(PLUGIN, "timezone", zone_of("UTC"), zone_of))
    poller = Poller(
        context, index, setting(PLUGIN, "provider_url", None),
        interval=setting(PLUGIN, "poll_seconds", 60.0, positive(float)),
        timeout=setting(PLUGIN, "timeout_seconds", 10.0, positive(float)),
        max_bytes=int(setting(PLUGIN, "max_feed_mb", 512.0, positive(float)) * 1024 * 1024),
        trip_after=int(setting(PLUGIN, "breaker_failures", 5, positive(float))),
        open_seconds=setting(PLUGIN, "breaker_seconds", 60.0, positive(float)),
    )
    index.max_age = int(poller.interval)
    return index, poller


@hookimpl
def herald_state_type() -> type:
    return Plan


@hookimpl
def herald_event_types(config: Config) -> Iterable[EventType]:
    # Plans come from the provider poller only.
    return [EventType(SEEN, on_seen, origin=Origin.INTERNAL,
                      description="A plan's values as the provider's feed showed them (changes only).")]


class _Stale:
    """Marks the search index stale whenever a plan changes, on every node of a cluster (a local view:
    fed by the replicas, which see every partition), whoever polled."""

    local_view = True

    def __init__(self, index: SearchIndex) -> None:
        self.index = index

    def put(self, effect: PlanChanged) -> None:
        self.index.changed()


@hookimpl
def herald_effect_sinks(context: Context) -> dict:
    return {PlanChanged: _Stale(parts(context)[0])}


@hookimpl
def herald_sources(context: Context) -> list:
    return [parts(context)[1].run]


@hookimpl
def herald_asgi_routes(context: Context) -> dict:
    return {"/search": search_app(parts(context)[0], lambda: context.ready)}


@hookimpl
def herald_openapi_paths(context: Context) -> dict:
    return search_openapi()


@hookimpl
def herald_cli(commands: Any) -> None:
    from .mock import add_commands

    add_commands(commands)


@hookimpl
def herald_serve_options(parser: Any) -> None:
    parser.add_argument("--marketplace-provider-url", dest="HERALD_MARKETPLACE_PROVIDER_URL", metavar="URL",
                        help="the provider's XML feed [env HERALD_MARKETPLACE_PROVIDER_URL]")
    parser.add_argument("--marketplace-poll-seconds", dest="HERALD_MARKETPLACE_POLL_SECONDS", metavar="SECONDS",
                        help="seconds between polls, default 60 [env HERALD_MARKETPLACE_POLL_SECONDS]")

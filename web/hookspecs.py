"""The hooks a plugin implements to serve HTTP: declared by the web layer, not the engine.

They are found through the ``herald.hookspecs`` entry-point group, so that a
plugin implementing them registers with any Herald, with or without the web
layer running. Each is called once per server with its :class:`engine.Context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping

from engine import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from quart import Blueprint

    from engine import Context

__all__ = ["herald_asgi_routes", "herald_openapi_paths", "herald_routes"]


@hookspec
def herald_routes(context: Context) -> Blueprint | Iterable[Blueprint] | None:
    """Quart blueprints to mount on the server.

    Views may carry OpenAPI operations with :func:`web.operation`;
    they are merged into ``/openapi.json``.
    """


@hookspec
def herald_asgi_routes(context: Context) -> Mapping[str, Callable[[dict, Any, Any], Awaitable[None]]]:
    """Raw ASGI handlers for hot paths, served before Quart (exact path -> app).

    For read endpoints that must cost about what a bare ASGI app costs (e.g. a
    search answered from memory). Handlers get ``(scope, receive, send)`` of
    an HTTP request and must answer it; describe them in OpenAPI with
    ``herald_openapi_paths``.
    """


@hookspec
def herald_openapi_paths(context: Context) -> Mapping[str, Any]:
    """OpenAPI path items for routes that are not Quart views (raw ASGI routes)."""

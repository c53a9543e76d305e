"""What routes behind a credential check write: declared, checked when the app is built, enforced per request.

A route declares the event types it brings in with ``operation(writes=...)``
(``x-herald-writes`` in the OpenAPI document). Behind a credential check (the
admin token, the pages' sign-in, a plugin's own tokens) every such type must be
internal: a public one could be sent to ``POST /v1/event(s)`` by anyone, without
the token, and the check would guard nothing. :func:`check_writes` refuses to
build an app that breaks this rule; :func:`enforce_writes` makes each guarded
request say so to the engine (``engine.host.GUARDED_ROUTE``), whose
``Context.accept`` then refuses public types, declared or not.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from quart import g, request

from engine import Origin, PluginError
from engine.host import GUARDED_ROUTE, PluginHost

from ._openapi import WRITES, _path, guard_of

__all__ = ["check_writes", "enforce_writes", "guarded_endpoints"]


def _views(app: Any) -> Iterator[tuple[str, str, str, Any]]:
    """``(method, rule, endpoint, view)`` of every route of ``app``."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if view is None:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule.rule, rule.endpoint, view


def guarded_endpoints(app: Any) -> dict[str, str]:
    """Endpoint -> the credential check in front of it, for every guarded route of ``app``."""
    guarded = {}
    for _method, _rule, endpoint, view in _views(app):
        guard = guard_of(app, endpoint, view)
        if guard:
            guarded[endpoint] = guard
    return guarded


def _why_public(type_: str, plugins: PluginHost) -> str | None:
    """Why anyone may send ``type_`` to the public routes (None if it is internal)."""
    if plugins.origin_of(type_) is Origin.INTERNAL:
        return None
    route = plugins.routes.get(type_)
    return "a type no plugin declares, so public" if route is None else f"a public event type of plugin {route.plugin!r}"


def check_writes(app: Any, plugins: PluginHost, extra_paths: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Raise :class:`engine.PluginError` (one line: the route and the type) if a guarded route declares
    that it writes a public type. ``extra_paths`` are OpenAPI path items of routes that are not Quart
    views (guarded when they carry ``security``)."""
    declared = []
    for method, rule, endpoint, view in _views(app):
        writes = (getattr(view, "__openapi__", None) or {}).get(WRITES)
        if writes:
            guard = guard_of(app, endpoint, view)
            if guard:
                declared.append((f"{method} {_path(rule)[0]}", guard, writes))
    for path, ops in (extra_paths or {}).items():
        for method, op in ops.items():
            if op.get(WRITES) and op.get("security"):
                scheme = next(iter(op["security"][0]), "a credential")
                declared.append((f"{method.upper()} {path}", scheme, op[WRITES]))
    for where, guard, writes in declared:
        for type_ in writes:
            why = _why_public(type_, plugins)
            if why is not None:
                raise PluginError(
                    f"{where} is behind {guard} but writes {type_!r}, {why}: anyone could send it to "
                    "POST /v1/event(s) without the token; declare it EventType(..., origin=Origin.INTERNAL)")


def enforce_writes(app: Any) -> None:
    """While a guarded route of ``app`` is served, ``engine.host.GUARDED_ROUTE`` names it (register the
    routes first): what the request accepts through ``Context.accept`` must then be internal."""
    guarded = guarded_endpoints(app)
    paths = {rule.rule: _path(rule.rule)[0] for rule in app.url_map.iter_rules()}  # as the document names them

    @app.before_request
    async def mark_guarded() -> None:
        if request.endpoint in guarded:
            g.herald_guarded_route = GUARDED_ROUTE.set(f"{request.method} {paths[request.url_rule.rule]}")

    @app.teardown_request
    async def unmark_guarded(exc: BaseException | None) -> None:
        token = g.pop("herald_guarded_route", None)
        if token is not None:
            GUARDED_ROUTE.reset(token)

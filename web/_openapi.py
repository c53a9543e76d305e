"""OpenAPI 3.1 for Herald: views carry their operation; the server collects them.

Plugins document their routes with :func:`operation` on their Quart views;
:func:`build_document` walks the app's URL map, so the document always lists
exactly the routes that are mounted.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

__all__ = ["operation", "build_document", "ERROR_SCHEMA", "SECURITY_SCHEMES", "WRITES", "error_response", "guard_of",
           "json_body"]

#: The body of every 4xx/5xx answer: ``{"error": {"code", "message", "field"}}``.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}


#: The credentials Herald's routes take. A view (or its blueprint's ``before_request``
#: guard) marked with ``__openapi_security__ = <name>`` requires the scheme of that name.
SECURITY_SCHEMES: dict[str, Any] = {
    "HeraldAdmin": {"type": "http", "scheme": "bearer",
                    "description": "Authorization: Bearer <HERALD_ADMIN_TOKEN> (required when the token is set)"},
    "EyeClient": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": "Authorization: Token <token> of an active client of The Eye (analytics); "
                  "tokens are created with POST /v1/admin/tokens"},
}

_JSON_MEDIA = ("application/json",)

#: The operation's extension listing the event types it writes (``operation(writes=...)``).
WRITES = "x-herald-writes"


def json_body(schema: Mapping[str, Any], description: str = "") -> dict[str, Any]:
    """A response or request body object with an ``application/json`` schema."""
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def error_response(description: str) -> dict[str, Any]:
    return json_body({"$ref": "#/components/schemas/Error"}, description)


def operation(
    summary: str,
    *,
    description: str = "",
    tags: Iterable[str] = (),
    request: Mapping[str, Any] | None = None,
    responses: Mapping[int | str, Mapping[str, Any]] | None = None,
    parameters: Iterable[Mapping[str, Any]] = (),
    security: str | None = None,
    writes: Iterable[str] = (),
) -> Callable[[Callable], Callable]:
    """Attach an OpenAPI operation to a view function.

    ``request`` is a full requestBody object; ``responses`` maps a status to a
    response object (see :func:`json_body`, :func:`error_response`). Path
    parameters are added from the route itself. ``security`` names a scheme of
    :data:`SECURITY_SCHEMES` the view requires (guards mark it themselves, see
    :func:`build_document`). ``writes`` names the event types the view brings in
    with ``context.accept`` (shown as ``x-herald-writes``): behind a credential
    check each must be internal, or the app is not built (see ``web._writes``).
    """
    written = list(writes)
    if isinstance(writes, str) or not all(isinstance(w, str) and w for w in written):
        raise TypeError(f"writes must be event type names, not {writes!r}")

    def attach(view: Callable) -> Callable:
        op: dict[str, Any] = {"summary": summary, "responses": {str(k): dict(v) for k, v in (responses or {}).items()}}
        if description:
            op["description"] = description
        if tags:
            op["tags"] = list(tags)
        if request is not None:
            op["requestBody"] = dict(request)
        if parameters:
            op["parameters"] = [dict(p) for p in parameters]
        if not op["responses"]:
            op["responses"] = {"200": {"description": "OK"}}
        if security:
            op["security"] = [{security: []}]
        if written:
            op[WRITES] = written
        view.__openapi__ = op  # type: ignore[attr-defined]
        return view

    return attach


_RULE_PARAM = re.compile(r"<(?:(?P<conv>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMA = {"int": {"type": "integer"}, "float": {"type": "number"}}


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for match in _RULE_PARAM.finditer(rule):
        schema = _CONVERTER_SCHEMA.get(match["conv"] or "", {"type": "string", "minLength": 1})
        params.append({"name": match["name"], "in": "path", "required": True, "schema": schema})
    return _RULE_PARAM.sub(lambda m: "{" + m["name"] + "}", rule), params


def _mark_of(app: Any, endpoint: str, view: Any, mark: str) -> str | None:
    """A view's own ``mark``, or that of a ``before_request`` guard of its blueprint."""
    scheme = getattr(view, mark, None)
    if scheme:
        return scheme
    blueprint = endpoint.rpartition(".")[0]
    for fn in getattr(app, "before_request_funcs", {}).get(blueprint or None, ()):
        scheme = getattr(fn, mark, None)
        if scheme:
            return scheme
    return None


def _security_of(app: Any, endpoint: str, view: Any) -> str | None:
    """The scheme a view requires (as the document shows it: the admin scheme only when a token is set)."""
    return _mark_of(app, endpoint, view, "__openapi_security__")


def guard_of(app: Any, endpoint: str, view: Any) -> str | None:
    """The credential check a view is behind, whether or not a token is configured: a guard marks
    itself with ``__herald_guard__`` (``admin_guard``, ``admin_only``, the pages' sign-in) or
    ``__openapi_security__`` (a plugin's own check, such as The Eye's client tokens)."""
    return _mark_of(app, endpoint, view, "__herald_guard__") or _security_of(app, endpoint, view)


def complete(op: dict[str, Any], *, max_body: int | None = None) -> dict[str, Any]:
    """Add the answers every route of its kind can give, unless the operation documents them:
    401 where a credential is required (and 429 where it is the admin token, see ``Guesses``), 400/413/415 for a JSON request body (malformed or
    too deep, too large, another media type), 404 where the path has parameters."""
    responses = op.setdefault("responses", {})

    def add(status: str, description: str) -> None:
        responses.setdefault(status, error_response(description))

    if op.get("security"):
        add("401", "a missing or wrong credential")
        if any("HeraldAdmin" in requirement for requirement in op["security"]):
            add("429", "too many failed attempts at the admin token from this address: try again after "
                "Retry-After seconds")
    content = (op.get("requestBody") or {}).get("content", {})
    if any(media in content for media in _JSON_MEDIA):
        add("400", "the body is not JSON, nests too deep, or is not of the documented shape")
        add("415", "the body is not sent as application/json")
    if content:
        add("413", "body too large" + (f" (at most {max_body} bytes)" if max_body else ""))
    if any(p.get("in") == "path" for p in op.get("parameters", ())):
        add("404", "nothing at this path")
    return op


def build_document(
    app: Any,
    *,
    title: str,
    version: str,
    description: str = "",
    extra_paths: Mapping[str, Mapping[str, Any]] | None = None,
    schemas: Mapping[str, Any] | None = None,
    max_body: int | None = None,
) -> dict[str, Any]:
    """Build the OpenAPI document from the app's documented views plus ``extra_paths``.

    Each operation is completed (see :func:`complete`); a view guarded by a marked check (see
    :data:`SECURITY_SCHEMES`) gets its ``security``."""
    paths: dict[str, dict[str, Any]] = {}
    for path, ops in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(
            {m.lower(): {**op, "responses": dict(op.get("responses", {}))} for m, op in ops.items()})
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        op = getattr(view, "__openapi__", None)
        if op is None:
            continue
        path, params = _path(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            entry = dict(op)
            if params:
                declared = {p["name"] for p in entry.get("parameters", [])}
                entry["parameters"] = [p for p in params if p["name"] not in declared] + list(entry.get("parameters", []))
            entry.setdefault("operationId", f"{method.lower()}_{rule.endpoint.replace('.', '_')}")
            scheme = _security_of(app, rule.endpoint, view)
            if scheme and "security" not in entry:
                entry["security"] = [{scheme: []}]
            entry["responses"] = dict(entry["responses"])
            paths.setdefault(path, {})[method.lower()] = entry
    for ops in paths.values():
        for op in ops.values():
            complete(op, max_body=max_body)
    used = {name for ops in paths.values() for op in ops.values() for req in op.get("security", ()) for name in req}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **dict(schemas or {})},
            **({"securitySchemes": {k: v for k, v in SECURITY_SCHEMES.items() if k in used}} if used else {}),
        },
    }


#: Swagger UI 5 (it reads OpenAPI 3.1), served from the static files of the ``swagger-ui-py`` wheel.
#: No inline script: the page starts Swagger UI from a file of its own (``/docs/explorer.js``), so that
#: it works under Herald's Content-Security-Policy (``script-src 'self'``).
_EXPLORER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/explorer.js"></script>
</body></html>"""

#: What starts Swagger UI on ``/docs``. ``validatorUrl: null`` keeps the page from asking an online
#: validator for a badge.
_EXPLORER_SCRIPT = """"use strict";
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true});
"""

#: The only files of the bundle the page loads (the wheel also holds Swagger Editor and more).
_EXPLORER_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})


def _swagger_ui_static() -> str:
    """The folder of Swagger UI's files in the installed ``swagger-ui-py``, found without importing
    the package (its ``__init__`` loads jinja2 and its framework adapters, none of which Herald uses)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the API explorer needs the swagger-ui-py package (pip install swagger-ui-py)")
    return os.path.join(next(iter(spec.submodule_search_locations)), "static")


def explorer(title: str, document: Callable[[], dict[str, Any]]) -> Any:
    """A blueprint serving ``/openapi.json`` (``document()``, built once) and Swagger UI 5 at ``/docs``,
    from the assets installed with ``swagger-ui-py`` (nothing from the internet)."""
    from quart import Blueprint, Response, abort, send_from_directory

    from ._views import json_response

    bp = Blueprint("docs", __name__)
    built: dict[str, Any] = {}
    page = _EXPLORER_PAGE.format(title=title)
    static = _swagger_ui_static()

    @bp.get("/openapi.json")
    async def openapi() -> Any:
        if not built:
            built.update(document())
        return json_response(built)

    @bp.get("/docs")
    async def docs() -> Any:
        return Response(page, content_type="text/html; charset=utf-8")

    @bp.get("/docs/explorer.js")
    async def docs_script() -> Any:
        return Response(_EXPLORER_SCRIPT, content_type="text/javascript; charset=utf-8")

    @bp.get("/docs/static/<path:filename>")
    async def docs_static(filename: str) -> Any:
        if filename not in _EXPLORER_ASSETS:
            abort(404)
        return await send_from_directory(static, filename)

    return bp

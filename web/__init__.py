"""Herald's web layer: the pieces of HTTP a plugin's routes use, above the engine.

``server.py`` assembles the app (the ingestion fast path, core routes,
plugins' blueprints, the OpenAPI document) and runs it; this package holds
what plugins share with it. A plugin's routes import from here only::

    from web import admin_guard, json_response, operation, read_json

A plugin's web pages come from :func:`ui_pages` (sign-in, CSRF tokens, the
shared layout and navigation of the operator console). The route hooks
themselves are declared in :mod:`web.hookspecs`.
"""

from ._auth import ADMIN_SCHEME, GUESSES, Guesses, UiGuard, admin_guard, admin_only, bearer_ok, safe_next, ui_guard
from ._ingest import respond_json
from ._pages import LAYOUT, ui_pages
from ._proxy import client_address, request_is_https
from ._openapi import ERROR_SCHEMA, build_document, error_response, explorer, json_body, operation
from ._views import (BadParameter, UnsupportedMediaType, error_body, int_param, json_media_type, json_response,
                     read_json)

__all__ = [
    "ADMIN_SCHEME",
    "BadParameter",
    "ERROR_SCHEMA",
    "GUESSES",
    "Guesses",
    "LAYOUT",
    "UiGuard",
    "UnsupportedMediaType",
    "admin_guard",
    "admin_only",
    "bearer_ok",
    "build_document",
    "client_address",
    "error_body",
    "error_response",
    "explorer",
    "int_param",
    "json_body",
    "json_media_type",
    "json_response",
    "operation",
    "read_json",
    "request_is_https",
    "respond_json",
    "safe_next",
    "ui_guard",
    "ui_pages",
]

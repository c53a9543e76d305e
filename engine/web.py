"""Helpers for Quart views, shared by the core routes and plugins' blueprints."""

from __future__ import annotations

from typing import Any

import hmac
from typing import Awaitable, Callable

import orjson
from quart import Response, request

__all__ = ["BadParameter", "UnsupportedMediaType", "admin_guard", "int_param", "json_response", "read_json"]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded with orjson."""
    return Response(orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


class BadParameter(Exception):
    """A query parameter with an unusable value; the server answers 400 naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class UnsupportedMediaType(Exception):
    """A body of a media type the route does not read; the server answers 415."""


async def read_json() -> Any:
    """The current request's JSON body, read the way every JSON route reads it.

    Raises :class:`UnsupportedMediaType` (415) for a media type that is not JSON
    (e.g. ``text/plain``: a cross-site form could send it), and
    :class:`engine.InvalidEvent` (400) for a body that is not JSON or nests
    deeper than :data:`engine.event.MAX_JSON_DEPTH`.
    """
    from .event import decode_json
    from .http import json_media_type

    if not json_media_type(request.headers.get("Content-Type", "")):
        raise UnsupportedMediaType("send the body as application/json")
    return decode_json(await request.get_data())


def int_param(name: str, default: int | None, *, low: int = 0, high: int = 2**63 - 1) -> int | None:
    """An integer query parameter in [low, high] (ASCII digits only), or ``default``."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadParameter(name, f"must be an integer from {low} to {high}")
    return int(raw)


def admin_guard(token: str | None) -> Callable[[], Awaitable[Response | None]]:
    """A ``before_request`` function for admin blueprints: when ``token`` is set,
    requests must carry ``Authorization: Bearer <token>`` (compared in constant time)."""
    from .http import error_body

    async def authorize() -> Response | None:
        if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            return json_response(error_body("unauthorized", "a valid admin bearer token is required"), 401)
        return None

    return authorize

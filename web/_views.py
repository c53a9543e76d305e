"""Helpers for Quart views: JSON answers and bodies, query parameters, media types."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

from engine import decode_json

__all__ = ["BadParameter", "NDJSON_TYPES", "SIMPLE_REQUEST_TYPES", "UnsupportedMediaType", "error_body", "int_param",
           "json_media_type", "json_response", "read_json"]


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer: ``{"error": {"code", "message", "field"}}``."""
    return {"error": {"code": code, "message": message, "field": field}}


#: Media types of newline-delimited JSON (``POST /v1/events`` reads them line by line).
NDJSON_TYPES = frozenset({b"application/x-ndjson", b"application/jsonl", b"application/json-seq"})
#: What a browser may send cross-site without asking first (a CORS "simple request"): a page on
#: another site could make a visitor's browser post such a body, so no write route accepts them.
SIMPLE_REQUEST_TYPES = frozenset({b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data"})


def json_media_type(content_type: bytes | str, *, ndjson: bool = False) -> bool:
    """Whether a request's media type (without parameters) may carry a JSON body: none given,
    ``application/json``, ``application/*+json`` (and NDJSON where ``ndjson``)."""
    media = content_type.encode("latin-1") if isinstance(content_type, str) else content_type
    media = media.split(b";", 1)[0].strip().lower()
    return (media in (b"", b"application/json") or (media.startswith(b"application/") and media.endswith(b"+json"))
            or (ndjson and media in NDJSON_TYPES))


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
    deeper than :data:`engine.MAX_JSON_DEPTH`.
    """
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

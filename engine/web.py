"""Helpers for Quart views, shared by the core routes and plugins' blueprints."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

__all__ = ["BadParameter", "int_param", "json_response"]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded with orjson."""
    return Response(orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


class BadParameter(Exception):
    """A query parameter with an unusable value; the server answers 400 naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def int_param(name: str, default: int | None, *, low: int = 0, high: int = 2**63 - 1) -> int | None:
    """An integer query parameter in [low, high] (ASCII digits only), or ``default``."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadParameter(name, f"must be an integer from {low} to {high}")
    return int(raw)

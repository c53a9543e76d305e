"""Hooks the analytics plugin offers to other plugins."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from engine import hookspec


@hookspec
def herald_analytics_schemas() -> Iterable[Mapping[str, Any]]:
    """Payload rules for event types (category + name) of The Eye.

    Each item is ``{"category": ..., "name": ..., "schema": {JSON Schema for data}}``,
    the same document a file in ``HERALD_ANALYTICS_SCHEMA_DIR`` holds. A later
    rule for the same type replaces an earlier one (files come last).
    """

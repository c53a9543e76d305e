"""The fitness event shapes: validation and their JSON Schemas for the API docs.

Both the seed's original flat events (``time_stamp``, ``training_program_id``
at the top level) and the improved shape (ISO 8601 ``timestamp``, a
``details`` object, camelCase ``programId``/``programTitle`` accepted) reach
the rules with the same normalised ``data``.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine import Event, InvalidEvent

__all__ = ["validate_program_event", "PROGRAM_SCHEMA", "LAUNCH_SCHEMA"]

_ID_ALIASES = ("training_program_id", "programId", "program_id")
_TITLE_ALIASES = ("training_program_title", "programTitle", "program_title")


def _first(data: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    for name in names:
        if name in data and data[name] is not None:
            return name, data[name]
    return None, None


def validate_program_event(event: Event) -> Event:
    """Require a program id; normalise id and title to their canonical names."""
    data = event.data
    program_id = data.get("training_program_id")
    if program_id.__class__ is str and program_id:  # the usual shape, already canonical: checked inline
        title = data.get("training_program_title")
        if title is None:
            if "programTitle" not in data and "program_title" not in data:
                return event
        elif title.__class__ is str:
            return event
    id_name, program_id = _first(data, _ID_ALIASES)
    if id_name is None:
        raise InvalidEvent("training_program_id", "missing", "is required for training program events")
    if isinstance(program_id, int) and not isinstance(program_id, bool):
        program_id = str(program_id)
    elif not isinstance(program_id, str) or not program_id:
        raise InvalidEvent(id_name, "invalid_type", "must be a non-empty string")
    title_name, title = _first(data, _TITLE_ALIASES)
    if title is not None and not isinstance(title, str):
        raise InvalidEvent(title_name, "invalid_type", "must be a string")
    if (
        id_name == "training_program_id"
        and program_id is data["training_program_id"]
        and title_name in (None, "training_program_title")
    ):
        return event
    normalised = {**data, "training_program_id": program_id}
    if title is not None:
        normalised["training_program_title"] = title
    return attrs.evolve(event, data=normalised)


PROGRAM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["training_program_id"],
    "properties": {
        "training_program_id": {"type": "string", "description": "also accepted: programId"},
        "training_program_title": {"type": "string", "description": "also accepted: programTitle"},
        "device_id": {"type": "string"},
    },
}

LAUNCH_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"device_id": {"type": "string"}}}

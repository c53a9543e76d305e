"""Checking The Eye's events: generic rules for every event, JSON Schema rules per type.

An event is ``{session_id, category, name, data, timestamp}``. Every field is
checked and every problem reported (one :class:`FieldError` per field), so an
application learns everything wrong with a payload at once. A type (category +
name) may add a JSON Schema for ``data``; types without one get the generic
checks only.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = ["FieldError", "SchemaRegistry", "Checked", "check", "MAX_SESSION_ID", "SHIPPED_SCHEMAS"]

log = logging.getLogger("herald.analytics")

MAX_SESSION_ID = 100
MAX_LABEL = 255
SHIPPED_SCHEMAS = Path(__file__).with_name("schemas")
_UTC = timezone.utc
_MISSING: Any = object()


@attrs.frozen
class FieldError:
    """One problem with one field: ``code`` is stable, ``message`` is for people."""

    field: str | None
    code: str
    message: str
    input: Any = None


@attrs.frozen
class Checked:
    """A valid event's normalised fields."""

    session_id: str
    category: str
    name: str
    data: dict[str, Any]
    timestamp: float


class SchemaRegistry:
    """JSON Schemas for ``data``, by (category, name); compiled once."""

    def __init__(self) -> None:
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, category: str, name: str, schema: Mapping[str, Any], *, source: str = "") -> None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"the schema for {category!r}/{name!r}{' in ' + source if source else ''} "
                             f"is not a valid JSON Schema: {exc.message}") from None
        self.schemas[(category, name)] = dict(schema)
        self._validators[(category, name)] = Draft202012Validator(dict(schema))

    def add_document(self, document: Mapping[str, Any], source: str = "") -> None:
        """``{"category": ..., "name": ..., "schema": {...}}``, as in a schema file."""
        try:
            category, name, schema = document["category"], document["name"], document["schema"]
        except (KeyError, TypeError):
            raise ValueError(f"{source or 'a schema document'} needs category, name and schema") from None
        self.add(category, name, schema, source=source)

    def add_directory(self, directory: str | Path) -> int:
        """Every ``*.json`` schema document in ``directory``; returns how many."""
        count = 0
        for path in sorted(Path(directory).glob("*.json")):
            try:
                document = json.loads(path.read_text())
            except ValueError as exc:
                raise ValueError(f"{path} is not JSON: {exc}") from None
            self.add_document(document, str(path))
            count += 1
        return count

    def errors(self, category: str, name: str, data: Any) -> list[FieldError]:
        validator = self._validators.get((category, name))
        if validator is None:
            return []
        found = []
        for error in validator.iter_errors(data):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            if error.validator == "required":
                for prop in error.validator_value:
                    if isinstance(error.instance, dict) and prop not in error.instance:
                        found.append(FieldError(f"data{where}.{prop}", "required",
                                                f"is required for {category}/{name} events"))
            else:
                found.append(FieldError(f"data{where}", error.validator, error.message, error.instance))
        unique = {(e.field, e.code): e for e in found}
        return [unique[k] for k in sorted(unique, key=lambda k: (k[0] or "", k[1]))]


def _present(payload: Mapping[str, Any], field: str, kind: type, kind_message: str,
             errors: list[FieldError]) -> Any:
    """The field's value if it is there, not null and of ``kind``; else None, with the error noted."""
    value = payload.get(field, _MISSING)
    if value is _MISSING:
        errors.append(FieldError(field, "required", "This field is required."))
    elif value is None:
        errors.append(FieldError(field, "null", "This field may not be null."))
    elif not isinstance(value, kind):
        errors.append(FieldError(field, "invalid", kind_message, value))
    else:
        return value
    return None


def _label(payload: Mapping[str, Any], field: str, limit: int, errors: list[FieldError]) -> str | None:
    value = _present(payload, field, str, "Must be a string.", errors)
    if value is None:
        return None
    if not value.strip():
        errors.append(FieldError(field, "blank", "This field may not be blank.", value))
    elif len(value) > limit:
        errors.append(FieldError(field, "max_length", f"Ensure this field has no more than {limit} characters.",
                                 value[:limit + 20]))
    else:
        return value
    return None


def parse_timestamp(value: str) -> float:
    """The seed's ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) or ISO 8601 with an offset; POSIX seconds."""
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return moment.timestamp()


def check(payload: Any, *, received: float, max_skew: float, registry: SchemaRegistry) -> Checked | list[FieldError]:
    """The event's normalised fields, or every problem found."""
    if not isinstance(payload, dict):
        return [FieldError(None, "invalid", "An event must be a JSON object.", payload)]
    errors: list[FieldError] = []
    session_id = _label(payload, "session_id", MAX_SESSION_ID, errors)
    category = _label(payload, "category", MAX_LABEL, errors)
    name = _label(payload, "name", MAX_LABEL, errors)
    data = _present(payload, "data", dict, "Must be a JSON object.", errors)
    if data == {}:
        errors.append(FieldError("data", "empty", "Must not be empty.", data))
    stamp = _present(payload, "timestamp", str, "Must be a date-time string (YYYY-MM-DD HH:MM:SS.ffffff).", errors)
    timestamp = None
    if stamp is not None:
        try:
            timestamp = parse_timestamp(stamp)
        except (ValueError, OverflowError):
            errors.append(FieldError("timestamp", "invalid",
                                     "Datetime has wrong format. Use YYYY-MM-DD HH:MM:SS.ffffff or ISO 8601.", stamp))
        else:
            if timestamp > received + max_skew:
                errors.append(FieldError("timestamp", "future", "Timestamp cannot be in the future.", stamp))
                timestamp = None
    if category is not None and name is not None and data:
        errors.extend(registry.errors(category, name, data))
    if errors:
        return errors
    assert session_id is not None and category is not None and name is not None and timestamp is not None
    return Checked(session_id, category, name, data, timestamp)


def known_types(registry: SchemaRegistry) -> Iterable[tuple[str, str]]:
    return sorted(registry.schemas)

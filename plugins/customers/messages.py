"""The seed's message lines: checking them, one at a time or a file chunk at a time.

``{"id", "type": "attributes"|"event", "name", "user_id", "data", "timestamp"}``,
one JSON object per line. A message without ``user_id`` is anonymous: it is
ignored and counted (logged once per process). Anything else that is wrong
with a line is reported with the line's number; the other lines still load.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson

from engine import Event, InvalidEvent, LoadReport, StateTable, new_event_id, parse_timestamp

from .model import CustomerDraft

__all__ = ["customer_key", "parse_message", "fold_lines", "attribute_map", "MAX_ID_DIGITS"]

log = logging.getLogger("herald.customers")

#: Customer ids are non-negative integers below 2**63 (19 digits at most).
MAX_ID_DIGITS = 19
_MAX_NAME = 256
_anonymous_logged = False


def customer_key(value: Any, field: str = "user_id") -> str:
    """The actor key of a customer id (``"11"`` or ``11``): canonical decimal digits."""
    if value.__class__ is str:
        if value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS:
            return value if value[0] != "0" or len(value) == 1 else str(int(value))
    elif value.__class__ is int and 0 <= value < 2**63:
        return str(value)
    elif value.__class__ is float and value.is_integer() and 0 <= value < 2**63:  # 11.0 is 11 in JSON Schema
        return str(int(value))
    raise InvalidEvent(field, "invalid_id", "must be a customer id: a non-negative integer (or a string of digits)")


def _text(value: Any) -> str:
    """An attribute value: strings as they are, numbers and booleans as their JSON text."""
    if value.__class__ is str:
        return value
    if value.__class__ in (int, float, bool):
        return orjson.dumps(value).decode()
    raise TypeError


def attribute_map(data: Any, field: str = "data", *, allow_none: bool = False, strict: bool = False) -> dict[str, Any]:
    """Check an attributes object: names non-empty strings, values strings (or None when allowed).

    Message lines are taken leniently (numbers and booleans become their JSON
    text); the API is ``strict``: values must be strings, as its contract says.
    """
    if data.__class__ is not dict:
        raise InvalidEvent(field, "invalid_type", "must be a JSON object of attribute names to string values")
    result: dict[str, Any] = {}
    for name, value in data.items():
        if not name or len(name) > _MAX_NAME:
            raise InvalidEvent(f"{field}.{name}", "invalid_name", f"attribute names must be 1 to {_MAX_NAME} characters")
        if value is None and allow_none:
            result[name] = None
            continue
        try:
            if strict and value.__class__ is not str:
                raise TypeError
            result[name] = _text(value)
        except TypeError:
            expected = "a string (or null to remove it)" if allow_none else "a string"
            raise InvalidEvent(f"{field}.{name}", "invalid_type", f"must be {expected}") from None
    return result


def _seconds(value: Any) -> int:
    if value.__class__ is int:
        return value
    return int(parse_timestamp(value).timestamp())


def _anonymous() -> None:
    global _anonymous_logged
    if not _anonymous_logged:
        _anonymous_logged = True
        log.warning("messages without user_id are ignored (counted in load reports and metrics; logged once)")


def parse_message(raw: dict[str, Any], received_at: datetime | None) -> Event:
    """One message as an :class:`Event` on its customer's actor (the ``EventType.parse`` hook)."""
    type_ = raw.get("type")
    user_id = raw.get("user_id")
    if user_id is None:
        _anonymous()
        raise InvalidEvent("user_id", "anonymous", "messages without user_id are ignored")
    key = customer_key(user_id)
    if "timestamp" not in raw:
        raise InvalidEvent("timestamp", "missing", "is required (Unix seconds)")
    timestamp = parse_timestamp(raw["timestamp"])
    message_id = raw.get("id")
    if message_id is not None and (message_id.__class__ is not str or not message_id):
        raise InvalidEvent("id", "invalid_type", "must be a non-empty string")
    if type_ == "event":
        if message_id is None:
            raise InvalidEvent("id", "missing", "an event message needs an id (events are counted once per id)")
        name = raw.get("name")
        if name.__class__ is not str or not name:
            raise InvalidEvent("name", "missing" if name is None else "invalid_type", "must be the event's name (a string)")
        data = raw.get("data")
        data = {"name": name, "data": data if data.__class__ is dict else {}}
    else:
        data = {"attributes": attribute_map(raw.get("data"))}
    received = received_at or datetime.now(timestamp.tzinfo)
    return Event(message_id or new_event_id(), type_, key, timestamp, data, received)


def _check_line(message: Any) -> tuple[str, str, Any, int]:
    """The slow, explaining check of one line: ``(key, type, payload, seconds)``."""
    if message.__class__ is not dict:
        raise InvalidEvent(None, "invalid_type", "a message must be a JSON object")
    type_ = message.get("type")
    if type_ not in ("attributes", "event"):
        raise InvalidEvent("type", "invalid_value", 'must be "attributes" or "event"')
    event = parse_message(message, None)
    seconds = int(event.at)
    if type_ == "event":
        return event.key, type_, (event.id, event.data["name"]), seconds
    return event.key, type_, event.data["attributes"], seconds


def fold_lines(table: StateTable, body: bytes, first_line: int) -> LoadReport:
    """The bulk loader: apply every line of ``body`` to the customers' states.

    The common line takes a few type checks, inline; anything unusual goes
    through :func:`_check_line`, which either normalises it or says what is
    wrong. Each customer touched is copied once for the whole chunk (a draft),
    then frozen back into the table.
    """
    report = LoadReport()
    drafts: dict[str, CustomerDraft] = {}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    number = first_line - 1
    blank = anonymous = 0
    for line in body.split(b"\n"):
        number += 1
        try:
            message = loads(line)
        except decode_error as exc:
            if not line or line.isspace():
                blank += 1
            else:
                report.error(number, None, "malformed_json", f"not valid JSON: {exc.msg}")
            continue
        try:
            key = message["user_id"]
            seconds = message["timestamp"]
            draft = drafts.get(key)
            if draft is None:  # a key seen in this chunk was checked already: only new ones are
                if (key.__class__ is not str or not key.isdigit() or not key.isascii() or key[0] == "0"
                        or len(key) > MAX_ID_DIGITS):
                    raise LookupError
                draft = drafts[key] = CustomerDraft(table.get(key))
            if seconds.__class__ is not int:
                raise LookupError
            type_ = message["type"]
            if type_ == "event":
                message_id, name = message["id"], message["name"]
                if message_id.__class__ is not str or name.__class__ is not str or not message_id or not name:
                    raise LookupError
                draft.count(message_id, name, seconds)
                continue
            if type_ != "attributes":
                raise LookupError
            values = message["data"]
            if values.__class__ is not dict or "" in values:
                raise LookupError
            for value in values.values():
                if value.__class__ is not str:
                    raise LookupError
            draft.set_attributes(values, seconds)
            continue
        except (LookupError, TypeError, AttributeError):
            pass
        # The unusual line: anonymous, numbers in places, or wrong.
        if message.__class__ is dict and message.get("user_id") is None:
            anonymous += 1
            continue
        try:
            key, type_, payload, seconds = _check_line(message)
        except InvalidEvent as exc:
            report.error(number, exc.field, exc.code, exc.message)
            continue
        draft = drafts.get(key)
        if draft is None:
            draft = drafts[key] = CustomerDraft(table.get(key))
        if type_ == "event":
            draft.count(payload[0], payload[1], seconds)
        else:
            draft.set_attributes(payload, seconds)
    for key, draft in drafts.items():
        table.put(key, draft.freeze())
    if anonymous:
        report.skipped["anonymous"] = anonymous
        _anonymous()
    report.lines = number - first_line + 1 - blank
    report.applied = report.lines - anonymous - sum(n for reason, n in report.skipped.items() if reason != "anonymous")
    return report

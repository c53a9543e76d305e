"""The internal event contracts (seed 000) and how a Kafka message becomes a Herald event.

``internal_user_updated`` and ``internal_booking_updated`` carry
``{"Event": {...}, "Id": n}`` (PascalCase) with an int32 key. Each message is a
full upsert of a user or a booking. A user's actor is keyed ``user:<Id>``; a
booking goes to the actor of its ``UserId`` (bookings made before any user
exists carry no UserId and go to one shared actor, see :data:`ORPHANS`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

from engine import Event
from engine.kafka import Refused, kafka_event_id

__all__ = ["USER_TOPIC", "BOOKING_TOPIC", "USER_UPDATED", "BOOKING_UPDATED", "ORPHANS", "TRIP_TYPES", "decode",
           "user_key", "normalise_user", "normalise_booking"]

USER_TOPIC, BOOKING_TOPIC = "internal_user_updated", "internal_booking_updated"
USER_UPDATED, BOOKING_UPDATED = "crm.user_updated", "crm.booking_updated"
#: The actor of bookings without a user (the producer makes some before any user exists).
ORPHANS = "crm:bookings-without-user"
#: BookingUpdatedEvent.Type (an integer enum) -> the CRM's Trip.Type (a string). "Unknow" is the contract's spelling.
TRIP_TYPES = {0: "Unknow", 1: "Scooter", 2: "Rental", 3: "RideHailing"}
_UTC = timezone.utc


def user_key(user_id: str) -> str:
    return f"user:{user_id}"


def _text(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise Refused(f"{field} is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise Refused(f"{field} must be a string")
    return value


def _moment(value: Any, field: str, *, required: bool = False) -> str | None:
    text = _text(value, field, required=required)
    if text is None:
        return None
    try:
        # .NET writes up to 7 fraction digits; Python reads 6: cut the 7th before parsing.
        head, dot, rest = text.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            rest = rest[:min(digits, 6)] + rest[digits:]
            text = f"{head}.{rest}"
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(f"{field} {value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return moment.isoformat()


def normalise_user(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Refused("Event must be an object")
    return {
        "Id": _text(raw.get("Id"), "Event.Id", required=True),
        "FirstName": _text(raw.get("FirstName"), "Event.FirstName"),
        "LastName": _text(raw.get("LastName"), "Event.LastName"),
        "Email": _text(raw.get("Email"), "Event.Email", required=True),
    }


def normalise_booking(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Refused("Event must be an object")
    kind = raw.get("Type")
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in TRIP_TYPES:
        raise Refused(f"Event.Type {kind!r} is not one of {sorted(TRIP_TYPES)}")
    price = raw.get("Price")
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        raise Refused("Event.Price must be a number")
    return {
        "Id": _text(raw.get("Id"), "Event.Id", required=True),
        "UserId": _text(raw.get("UserId"), "Event.UserId"),
        "From": _text(raw.get("From"), "Event.From"),
        "To": _text(raw.get("To"), "Event.To"),
        "Price": float(price),
        "StartDate": _moment(raw.get("StartDate"), "Event.StartDate", required=True),
        "EndDate": _moment(raw.get("EndDate"), "Event.EndDate"),
        "Type": TRIP_TYPES[kind],
    }


def decode(message: Any) -> Iterable[Event]:
    """A Kafka message of an internal topic as the event on its actor; :class:`Refused` if unusable."""
    try:
        envelope = orjson.loads(message.value() or b"")
    except orjson.JSONDecodeError as exc:
        raise Refused(f"the value is not JSON: {exc.msg}") from None
    if not isinstance(envelope, dict) or "Event" not in envelope:
        raise Refused('the value is not an envelope {"Event": ..., "Id": ...}')
    topic = message.topic()
    if topic == USER_TOPIC:
        data = normalise_user(envelope["Event"])
        key, type_ = user_key(data["Id"]), USER_UPDATED
    elif topic == BOOKING_TOPIC:
        data = normalise_booking(envelope["Event"])
        key = user_key(data["UserId"]) if data["UserId"] else ORPHANS
        type_ = BOOKING_UPDATED
    else:
        raise Refused(f"no contract for topic {topic!r}")
    kind, millis = message.timestamp()
    now = datetime.now(_UTC)
    stamp = datetime.fromtimestamp(millis / 1000, _UTC) if kind and millis > 0 else now
    return [Event(kafka_event_id(message), type_, key, min(stamp, now), data, now)]

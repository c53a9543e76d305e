"""The event value and the envelope parser shared by every plugin.

An event arrives as a JSON object. The *envelope* fields say who it belongs to
and when it happened; everything else is the event's data. Plugins refine the
parse of their own types (see ``EventType.validate``), so the engine stays
ignorant of any domain.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import attrs
import orjson
from cattrs.preconf.orjson import make_converter

__all__ = [
    "LOAD_TYPE",
    "Event",
    "InvalidEvent",
    "parse_event",
    "parse_timestamp",
    "new_event_id",
    "converter",
    "decode_json",
    "dumps",
    "loads",
    "MAX_JSON_DEPTH",
]

UTC = timezone.utc

#: The journaled type of a bulk load: one event per chunk of lines (see ``Engine.load``).
LOAD_TYPE = "herald.load"

#: Fields that form the envelope; any other top-level field joins ``data``.
_ENVELOPE = frozenset({"id", "type", "key", "timestamp", "time_stamp", "data", "details"})
#: Where the actor key is looked for, in order (the first present wins).
_KEY_FIELDS = ("key", "user_id", "userId", "device_id", "deviceId")
_TIMESTAMP_FIELDS = ("timestamp", "time_stamp")
#: The key fields after the two the fast parse reads first.
_OTHER_KEY_FIELDS = _KEY_FIELDS[2:]
_MAX_ID = 200
_MAX_TYPE = 100
_MAX_KEY = 200


#: Deepest nesting of arrays and objects a JSON body may have. orjson parses up
#: to 1,024 levels but encodes only 254, and the journal stores events inside
#: a few levels of its own: a body deeper than this is refused at parse time,
#: before it can touch any state (far deeper than any real event needs).
MAX_JSON_DEPTH = 64


def decode_json(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON request body; :class:`InvalidEvent` if it is not JSON or nests deeper than ``max_depth``.

    Every JSON route of Herald and its plugins reads its body through this."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(None, "malformed_json", f"the body is not valid JSON: {exc.msg}") from None
    # Cheap first: a body with fewer brackets than the limit cannot nest deeper than it.
    raw = body.encode() if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(value) > max_depth:
        raise InvalidEvent(None, "too_deep", f"the body nests arrays and objects more than {max_depth} levels deep")
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (iterative: no recursion limit)."""
    deepest = 0
    children: Any
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if item.__class__ is dict:
            children = item.values()
        elif item.__class__ is list:
            children = item
        else:
            continue
        if level > deepest:
            deepest = level
        stack.extend((child, level + 1) for child in children if child.__class__ is dict or child.__class__ is list)
    return deepest


_ID_PREFIX = os.urandom(10).hex()
_id_counter = itertools.count()


def new_event_id() -> str:
    """An id for an event whose client sent none: 80 random bits drawn once per
    process, then a counter (unique, and three times cheaper than 128 fresh bits).
    The counter's twelve hex digits come from its six bytes (half the cost of a
    ``:012x`` format); past 2**48 ids, the format."""
    number = next(_id_counter)
    if number < _SIX_BYTES:
        return _ID_PREFIX + number.to_bytes(6, "big").hex()
    return f"{_ID_PREFIX}{number:012x}"


_SIX_BYTES = 1 << 48


def _utcnow() -> datetime:
    return datetime.now(UTC)


# The attrs field factories below, typed as returning Any: mypyc (the optional compiled build, see
# docs/operations/compiled.md) checks a class body's values against their annotations, and
# ``attrs.field(factory=f)`` is typed as returning what ``f`` returns, while it is a placeholder.
_new_dict: Callable[[], Any] = dict
_utcnow_factory: Callable[[], Any] = _utcnow


@attrs.frozen(slots=True, eq=True, hash=False)
class Event:
    """One thing that happened to one actor.

    ``id`` is the client's idempotency key (or generated); ``key`` names the
    actor (usually the user); ``timestamp`` is when it happened (aware UTC),
    ``received_at`` when Herald took it in. ``at`` is ``timestamp`` as POSIX
    seconds, computed once when the event is made (not an argument: it always
    follows ``timestamp``, through ``attrs.evolve`` too): the engine and any
    plugin that needs a number read it instead of calling ``.timestamp()``.
    """

    id: str
    type: str
    key: str
    timestamp: datetime
    data: dict[str, Any] = attrs.field(factory=_new_dict)
    received_at: datetime = attrs.field(factory=_utcnow_factory)
    at: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _set_at(self, self.timestamp.timestamp())


_set_at = getattr(Event, "at").__set__  # the slot's own setter: bypasses the frozen __setattr__
_new_object = object.__new__
(_set_id, _set_type, _set_key, _set_timestamp, _set_data, _set_received_at) = (
    getattr(Event, name).__set__ for name in ("id", "type", "key", "timestamp", "data", "received_at"))


def make_event(id: str, type: str, key: str, timestamp: datetime, data: dict[str, Any], received_at: datetime,
               at: float) -> Event:
    """``Event(id, type, key, timestamp, data, received_at)`` for the engine's hot paths (the fast
    parse, the journal's reader), which know ``at`` already (``timestamp.timestamp()``): the slots
    are set directly, a third cheaper than the frozen ``__init__`` (one ``object.__setattr__``
    per field). The caller vouches for the values, as the parse and the journal do."""
    event = _new_object(Event)
    _set_id(event, id)
    _set_type(event, type)
    _set_key(event, key)
    _set_timestamp(event, timestamp)
    _set_data(event, data)
    _set_received_at(event, received_at)
    _set_at(event, at)
    return event


@attrs.frozen(slots=True)
class InvalidEvent(Exception):
    """An event that cannot be accepted; becomes a 400 naming the field."""

    field: str | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}


def parse_timestamp(value: Any, field: str = "timestamp") -> datetime:
    """Parse ISO 8601 (``Z`` or offsets; a space instead of ``T``) or epoch seconds.

    A timestamp without an offset is taken as UTC; the result is always aware UTC.
    """
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(
                field,
                "invalid_timestamp",
                f"{value[:60]!r} is not an ISO 8601 timestamp (e.g. 2021-02-28T16:23:25Z)",
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidEvent(field, "invalid_timestamp", f"{value!r} is out of range") from None
    else:
        raise InvalidEvent(
            field, "invalid_type", "must be an ISO 8601 string or epoch seconds"
        )
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    if ts.tzinfo is not UTC:
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+23:59 is before year 1 in UTC
            raise InvalidEvent(field, "invalid_timestamp", f"{value[:60]!r} is out of range in UTC") from None
    return ts


def _string(raw: Mapping[str, Any], field: str, limit: int, *, required: bool, ints: bool = True) -> str | None:
    """A non-empty string field; integers (ids are often numbers) become strings if ``ints``."""
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidEvent(field, "missing", "is required")
        return None
    if ints and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif not isinstance(value, str):
        raise InvalidEvent(field, "invalid_type", "must be a string")
    if not value:
        raise InvalidEvent(field, "empty", "must not be empty")
    if len(value) > limit:
        raise InvalidEvent(field, "too_long", f"must be at most {limit} characters")
    return value


#: What an actor key may not hold: C0 and C1 controls (NUL, line breaks, escapes), the line and paragraph
#: separators, and the bidirectional controls (U+202E shows "txt.exe" for "exe.txt"): they break logs,
#: terminals and links, and show a key as another one.
_KEY_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def check_key(key: str) -> None:
    """Refuse an actor key with a control character or nothing but whitespace (:class:`InvalidEvent`
    naming ``key``). Most keys take two C calls: printable and not all whitespace."""
    if key.isprintable() and not key.isspace():
        return
    found = _KEY_FORBIDDEN.search(key)
    if found is not None:
        raise InvalidEvent("key", "control_character", f"must not contain control characters "
                           f"(U+{ord(found[0]):04X} at index {found.start()})")
    if not key.strip():
        raise InvalidEvent("key", "blank", "must not be only whitespace")


_MISSING: Any = object()
_fromisoformat = datetime.fromisoformat


class _Slow(Exception):
    """The fast parse met something unusual; the checked parse decides (and explains)."""


#: How many timestamp strings :func:`_parse_stamp` remembers: events that arrive together share their
#: second (the seed's ``time_stamp`` has no fraction), and one cache lookup replaces
#: ``fromisoformat`` (twice, for a naive string) and ``timestamp()``.
_STAMPS_MAX = 4096


@functools.lru_cache(maxsize=_STAMPS_MAX)
def _parse_stamp(stamp: str) -> tuple[datetime, float]:
    """An ISO 8601 string as an aware UTC ``datetime`` and its POSIX seconds, remembered (a
    ``datetime`` is immutable, so events sharing one is safe); :class:`_Slow`, never remembered, for
    anything the checked parse must look at (a date alone, a year-1 offset)."""
    try:
        timestamp = _fromisoformat(stamp)
    except ValueError:
        raise _Slow from None
    tz = timestamp.tzinfo
    if tz is None:
        # Parsing again with the offset is ~10x cheaper than ``replace(tzinfo=UTC)``;
        # it must give UTC (a date alone takes no offset: those go the slow way).
        timestamp = _fromisoformat(stamp + "+00:00")
        if timestamp.tzinfo is not UTC:
            raise _Slow
    elif tz is not UTC:
        try:
            timestamp = timestamp.astimezone(UTC)
        except OverflowError:
            raise _Slow from None
    return timestamp, timestamp.timestamp()


def parse_event(raw: Any, *, received_at: datetime | None = None) -> Event:
    """Turn one decoded JSON object into an :class:`Event`, or raise :class:`InvalidEvent`.

    Accepted shapes: the envelope ``{id?, type, key, timestamp, data?}``, and
    flat shapes such as ``{user_id, type, time_stamp, ...}`` where the key is
    the first of ``key``, ``user_id``, ``device_id`` present and the remaining
    fields (plus a ``details`` or ``data`` object) become ``data``.
    """
    if raw.__class__ is dict:
        try:
            return _parse_fast(raw, received_at)
        except _Slow:
            pass
    return _parse_checked(raw, received_at=received_at)


def _parse_fast(raw: dict[str, Any], received_at: datetime | None) -> Event:
    # The common case, inline; anything unusual goes to the checked parse. The envelope fields are
    # popped from a copy of ``raw`` (what is left is the data, in its order): one C call per field
    # instead of a read and a delete. ``new_event_id`` and ``make_event`` are inlined (one event each).
    data = raw.copy()
    pop = data.pop
    type_ = pop("type", None)
    if type_.__class__ is not str or not type_ or len(type_) > _MAX_TYPE:
        raise _Slow
    key = pop("key", _MISSING)  # "key" is an envelope field; user_id and the others stay in data
    if key is _MISSING:
        key = raw.get("user_id", _MISSING)  # the usual one, without a loop
        if key is _MISSING:
            for name in _OTHER_KEY_FIELDS:
                key = raw.get(name, _MISSING)
                if key is not _MISSING:
                    break
            else:
                raise _Slow
    if key.__class__ is not str or not key or len(key) > _MAX_KEY:
        raise _Slow
    stamp = pop("timestamp", _MISSING)
    flat = pop("time_stamp", _MISSING)
    if stamp is _MISSING:
        stamp = flat
    if stamp.__class__ is not str:
        raise _Slow
    timestamp, at = _parse_stamp(stamp)
    event_id = pop("id", None)
    if event_id is None:
        number = next(_id_counter)  # new_event_id(), inline
        event_id = _ID_PREFIX + number.to_bytes(6, "big").hex() if number < _SIX_BYTES else f"{_ID_PREFIX}{number:012x}"
    elif event_id.__class__ is not str or not event_id or len(event_id) > _MAX_ID:
        raise _Slow
    details, nested = pop("details", None), pop("data", None)  # both first: ``details`` may hold a "data"
    if details is not None:
        if details.__class__ is not dict:
            raise _Slow
        data.update(details)
    if nested is not None:
        if nested.__class__ is not dict:
            raise _Slow
        data.update(nested)
    event = _new_object(Event)  # make_event(), inline
    _set_id(event, event_id)
    _set_type(event, type_)
    _set_key(event, key)
    _set_timestamp(event, timestamp)
    _set_data(event, data)
    _set_received_at(event, received_at or _utcnow())
    _set_at(event, at)
    return event


def _parse_checked(raw: Any, *, received_at: datetime | None = None) -> Event:
    """The reference parse: every rule checked one by one, with an error that
    names the field. ``_parse_fast`` must agree with it wherever it answers."""
    if not isinstance(raw, dict):
        raise InvalidEvent(None, "invalid_type", "an event must be a JSON object")
    type_ = _string(raw, "type", _MAX_TYPE, required=True, ints=False)
    key = None
    for name in _KEY_FIELDS:
        if name in raw:
            key = _string(raw, name, _MAX_KEY, required=True)
            break
    if key is None:
        raise InvalidEvent("key", "missing", "is required (or user_id / device_id)")
    for name in _TIMESTAMP_FIELDS:
        if name in raw:
            timestamp = parse_timestamp(raw[name], name)
            break
    else:
        raise InvalidEvent("timestamp", "missing", "is required (ISO 8601)")
    event_id = _string(raw, "id", _MAX_ID, required=False) or new_event_id()
    assert type_ is not None  # required=True: ``_string`` raised instead

    data: dict[str, Any] = {k: v for k, v in raw.items() if k not in _ENVELOPE}
    for name in ("details", "data"):
        nested = raw.get(name)
        if nested is None:
            continue
        if not isinstance(nested, dict):
            raise InvalidEvent(name, "invalid_type", "must be a JSON object")
        data.update(nested)
    return Event(
        id=event_id,
        type=type_,
        key=key,
        timestamp=timestamp,
        data=data,
        received_at=received_at or _utcnow(),
    )


#: cattrs converter with orjson's conventions (datetimes as ISO 8601 strings).
converter = make_converter()


def dumps(obj: Any) -> bytes:
    """Serialise attrs values (events, effects, plugin states) to JSON bytes."""
    return orjson.dumps(converter.unstructure(obj))


def loads(data: bytes | str, cls: type) -> Any:
    """Inverse of :func:`dumps` for a known class."""
    return converter.structure(orjson.loads(data), cls)

"""Effects: what a handler wants done, as plain values.

Handlers never do I/O. They return effects; the engine applies timer effects
itself and hands every other effect to the outbox at the edge. That
keeps handlers deterministic and simulations exact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import attrs

from ._clock import utc_datetime

__all__ = ["Effect", "Notify", "SetTimer", "CancelTimer", "Timer"]


class Effect:
    """Marker base class for effect values (attrs frozen classes)."""

    __slots__ = ()


@attrs.frozen(slots=True, init=False)
class Notify(Effect):
    """POST ``payload`` as JSON to ``url`` with an ``Idempotency-Key`` header.

    ``Notify(url, payload, key)``, or ``Notify(payload=..., idempotency_key=...)``
    without a URL: then it goes to the configured notify sink
    (``HERALD_NOTIFY_URL``, by default this server's ``/v1/notify``), filled in
    when the effect is emitted. The key must be derived from what caused the
    notification (an event id, a timer's due time) so that a retry or a replay
    is recognisably the same one.
    """

    url: str | None
    payload: dict[str, Any]
    idempotency_key: str

    def __init__(self, url: str | None = None, payload: dict[str, Any] | None = None,
                 idempotency_key: str | None = None) -> None:
        if payload is None or idempotency_key is None:
            raise TypeError("Notify needs a payload and an idempotency_key: Notify(url, payload, key), "
                            "or Notify(payload=..., idempotency_key=...) for the configured notify sink")
        # The slots set directly: a third of the frozen ``__attrs_init__``'s cost (one per notification).
        _set_url(self, url)
        _set_payload(self, payload)
        _set_idempotency_key(self, idempotency_key)


_set_url, _set_payload, _set_idempotency_key = (
    getattr(Notify, name).__set__ for name in ("url", "payload", "idempotency_key"))


def addressed(effect: Effect, sink_url: str) -> Effect:
    """``effect``, a :class:`Notify` without a URL addressed to ``sink_url`` (the configured sink)."""
    if effect.__class__ is Notify and effect.url is None:  # type: ignore[attr-defined]
        return Notify(sink_url, effect.payload, effect.idempotency_key)  # type: ignore[attr-defined]
    return effect


class _Frozen(Effect):
    """A light immutable value: slots set once by ``__init__`` (through their descriptors), compared
    and hashed by class and fields. What the engine's own timer effects are made of: a handler
    returns one per event, and this costs ~40 % less to build than a frozen attrs class."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise attrs.exceptions.FrozenInstanceError()

    def __delattr__(self, name: str) -> None:
        raise attrs.exceptions.FrozenInstanceError()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, self._values()


class SetTimer(_Frozen):
    """Set (or reset, if the name is taken) a timer on the current actor.

    ``SetTimer(name, at, data=None)``. ``at`` is an instant of the engine clock: an aware
    ``datetime``, or POSIX seconds as a number (cheaper: e.g. ``event.at + 600.0``);
    ``data`` comes back with the firing. A plain slotted immutable class (not attrs):
    cheaper to build, with the same constructor and attributes.
    """

    __slots__ = ("name", "at", "data")
    __match_args__ = ("name", "at", "data")
    name: str
    at: datetime | float | int
    data: Any

    def __init__(self, name: str, at: datetime | float | int, data: Any = None) -> None:
        _set_timer_name(self, name)
        _set_timer_at(self, at)
        _set_timer_data(self, data)


_set_timer_name, _set_timer_at, _set_timer_data = (getattr(SetTimer, name).__set__ for name in SetTimer.__slots__)


class CancelTimer(_Frozen):
    """Cancel the current actor's timer of that name, if any: ``CancelTimer(name)``.
    A plain slotted immutable class, like :class:`SetTimer`."""

    __slots__ = ("name",)
    __match_args__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        _set_cancel_name(self, name)


_set_cancel_name = CancelTimer.name.__set__  # type: ignore[attr-defined]


class Timer(NamedTuple):
    """A timer that fell due, as passed to the owning plugin's timer handler.

    ``at`` is its due instant as POSIX seconds (what ``SetTimer`` was given); ``due`` is the
    same as an aware ``datetime``, made only when read. A named tuple rather than a frozen
    attrs class: the engine makes one per firing, and a tuple costs a quarter of the
    frozen ``__init__`` (immutable all the same).
    """

    key: str
    name: str
    at: float
    data: Any = None

    @property
    def due(self) -> datetime:
        return utc_datetime(self.at)

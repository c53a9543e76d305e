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
        self.__attrs_init__(url, payload, idempotency_key)  # type: ignore[attr-defined]


def addressed(effect: Effect, sink_url: str) -> Effect:
    """``effect``, a :class:`Notify` without a URL addressed to ``sink_url`` (the configured sink)."""
    if effect.__class__ is Notify and effect.url is None:  # type: ignore[attr-defined]
        return attrs.evolve(effect, url=sink_url)  # type: ignore[misc]
    return effect


@attrs.frozen(slots=True)
class SetTimer(Effect):
    """Set (or reset, if the name is taken) a timer on the current actor.

    ``at`` is an instant of the engine clock: an aware ``datetime``, or POSIX
    seconds as a number (cheaper: e.g. ``event.at + 600.0``); ``data`` comes
    back with the firing.
    """

    name: str
    at: datetime | float | int
    data: Any = None


@attrs.frozen(slots=True)
class CancelTimer(Effect):
    """Cancel the current actor's timer of that name, if any."""

    name: str


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

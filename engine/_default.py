"""The default handler: what a plugin claiming it declares, and Herald's bundled one, which counts.

Events of a type no plugin claims go to the one default handler. Herald's own
(a plugin like any other, registered by the plugin host when no enabled plugin
claims ``herald_default_handler``) counts them by type on their actor. Its
state is a dict of counts, which is what snapshots have always stored as an
actor's ``unknown`` counts, so older data loads unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import attrs

from ._event import Event
from .hookspecs import hookimpl

__all__ = ["DefaultHandler", "NAME", "count"]


@attrs.frozen
class DefaultHandler:
    """What handles the events of every type no plugin claims: one plugin's ``herald_default_handler``.

    ``handler(state, event) -> (state, effects)`` is pure, like an event type's. Its ``state`` is the
    actor's *default state*, kept apart from the plugins' states (``unknown`` in ``GET /v1/actors/{key}``
    and in :class:`engine.ActorView`): ``initial()`` makes it on an actor's first such event, and
    ``state_type`` is what a snapshot restores it as (a class or type cattrs structures; ``None`` keeps
    the stored JSON value as it is). Herald's bundled default counts events by type (a dict).
    """

    handler: Callable[[Any, Event], tuple[Any, Iterable[Any]]]
    initial: Callable[[], Any] = dict
    state_type: Any = None
    description: str = ""


#: The bundled one's plugin name (``herald.`` names are Herald's own).
NAME = "herald.default"


def count(counts: Mapping[str, int], event: Event) -> tuple[dict[str, int], tuple[Any, ...]]:
    """One more event of ``event.type`` on its actor: a new dict (states are values, never changed in place)."""
    type_ = event.type
    counts = dict(counts)
    counts[type_] = counts.get(type_, 0) + 1
    return counts, ()


@hookimpl
def herald_default_handler() -> DefaultHandler:
    return DefaultHandler(count, initial=dict, state_type=None,
                          description="counts events of unclaimed types on their actors (GET /v1/actors/{key}: unknown)")

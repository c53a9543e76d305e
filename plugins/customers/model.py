"""Customer summaries: the state of one customer and the pure rules that change it.

A customer is summarised from two kinds of messages (seed 004):

* ``attributes`` messages set attributes; for each attribute the value with the
  latest message timestamp wins, whatever order messages arrive in (a tie goes
  to the later arrival);
* ``event`` messages count their ``name`` once per message id (ids repeat).

Writes through the API are events too: ``create``, ``update`` (merge; ``None``
removes) and ``delete``. Every function here is ``(state, ...) -> state`` with
no I/O, so a replay of the journal rebuilds the same summaries.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

__all__ = [
    "Customer",
    "CustomerDraft",
    "apply_attributes",
    "count_event",
    "merge_attributes",
    "view",
    "REQUIRED_ATTRIBUTE",
    "PLUGIN",
]

#: The plugin's name in actors' states.
PLUGIN = "customers"

#: The attribute every customer created through the API must have (the original server's rule).
REQUIRED_ATTRIBUTE = "email"


@attrs.frozen(slots=True)
class Customer:
    """One customer's summary.

    ``stamps`` holds, per attribute, the timestamp of the value kept (a removed
    attribute keeps its stamp, so an older message cannot bring it back);
    ``seen`` the ids of the event messages already counted.
    """

    attributes: Mapping[str, str] = attrs.field(factory=dict)  # copied on write
    stamps: Mapping[str, int] = attrs.field(factory=dict)  # copied on write
    events: Mapping[str, int] = attrs.field(factory=dict)  # copied on write
    seen: frozenset[str] = frozenset()
    last_updated: int = 0


def apply_attributes(state: Customer, values: Mapping[str, str], at: int) -> Customer:
    """Set each attribute whose stored value is not newer than ``at``."""
    stamps = state.stamps
    changed = {k: v for k, v in values.items() if stamps.get(k, at) <= at}
    if not changed:
        return attrs.evolve(state, last_updated=max(state.last_updated, at))
    return Customer(
        {**state.attributes, **changed},
        {**stamps, **dict.fromkeys(changed, at)},
        state.events,
        state.seen,
        max(state.last_updated, at),
    )


def count_event(state: Customer, message_id: str, name: str, at: int) -> Customer:
    """Count ``name`` once for ``message_id``; a repeated id changes nothing."""
    if message_id in state.seen:
        return state
    events = dict(state.events)
    events[name] = events.get(name, 0) + 1
    return Customer(state.attributes, state.stamps, events, state.seen | {message_id}, max(state.last_updated, at))


def merge_attributes(state: Customer, changes: Mapping[str, str | None], at: int) -> Customer:
    """An edit through the API: set the given values, remove those given as ``None``.

    The edit is stamped ``at`` (the time it was made), so that file messages
    older than the edit do not undo it.
    """
    attributes = dict(state.attributes)
    stamps = dict(state.stamps)
    for name, value in changes.items():
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
        stamps[name] = max(stamps.get(name, at), at)
    return Customer(attributes, stamps, state.events, state.seen, max(state.last_updated, at))


def view(key: str, state: Customer) -> dict[str, Any]:
    """The API's JSON shape of a customer (ids are integers, events ``{}`` when none)."""
    return {"id": int(key), "attributes": state.attributes, "events": state.events, "last_updated": state.last_updated}


class CustomerDraft:
    """A customer being changed by many lines of a bulk load.

    The bulk loader copies a customer's maps once per chunk instead of once per
    line, and only the maps the chunk changes (attributes and their stamps, or
    events and seen ids); :meth:`freeze` turns the draft back into a
    :class:`Customer`. Same rules as :func:`apply_attributes` and :func:`count_event`.
    """

    __slots__ = ("base", "attributes", "stamps", "events", "seen", "last_updated")

    def __init__(self, state: Customer | None) -> None:
        self.base = state or _EMPTY
        self.attributes: dict[str, str] | None = None
        self.stamps: dict[str, int] | None = None
        self.events: dict[str, int] | None = None
        self.seen: set[str] | None = None
        self.last_updated = self.base.last_updated

    def set_attributes(self, values: Mapping[str, str], at: int) -> None:
        stamps = self.stamps
        if stamps is None:
            stamps = self.stamps = dict(self.base.stamps)
            self.attributes = dict(self.base.attributes)
        attributes = self.attributes
        for name, value in values.items():
            if stamps.get(name, at) <= at:
                attributes[name] = value  # type: ignore[index]
                stamps[name] = at
        if at > self.last_updated:
            self.last_updated = at

    def count(self, message_id: str, name: str, at: int) -> None:
        seen = self.seen
        if seen is None:
            if message_id in self.base.seen:
                return
            seen = self.seen = set(self.base.seen)
            self.events = dict(self.base.events)
        elif message_id in seen:
            return
        seen.add(message_id)
        events = self.events
        events[name] = events.get(name, 0) + 1  # type: ignore[index,union-attr]
        if at > self.last_updated:
            self.last_updated = at

    def freeze(self) -> Customer:
        base = self.base
        return Customer(
            base.attributes if self.attributes is None else self.attributes,
            base.stamps if self.stamps is None else self.stamps,
            base.events if self.events is None else self.events,
            base.seen if self.seen is None else frozenset(self.seen),
            self.last_updated,
        )


_EMPTY = Customer()

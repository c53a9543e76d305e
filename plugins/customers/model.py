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

from typing import Any, Iterable, Mapping

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

    attributes: dict[str, str] = attrs.field(factory=dict)
    stamps: dict[str, int] = attrs.field(factory=dict)
    events: dict[str, int] = attrs.field(factory=dict)
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
    line, then :meth:`freeze` turns the draft back into a :class:`Customer`.
    Same rules as :func:`apply_attributes` and :func:`count_event`.
    """

    __slots__ = ("attributes", "stamps", "events", "seen", "last_updated")

    def __init__(self, state: Customer | None) -> None:
        if state is None:
            self.attributes: dict[str, str] = {}
            self.stamps: dict[str, int] = {}
            self.events: dict[str, int] = {}
            self.seen: set[str] = set()
            self.last_updated = 0
        else:
            self.attributes = dict(state.attributes)
            self.stamps = dict(state.stamps)
            self.events = dict(state.events)
            self.seen = set(state.seen)
            self.last_updated = state.last_updated

    def set_attributes(self, values: Iterable[tuple[str, str]], at: int) -> None:
        stamps, attributes = self.stamps, self.attributes
        for name, value in values:
            if stamps.get(name, at) <= at:
                attributes[name] = value
                stamps[name] = at
        if at > self.last_updated:
            self.last_updated = at

    def count(self, message_id: str, name: str, at: int) -> None:
        seen = self.seen
        if message_id in seen:
            return
        seen.add(message_id)
        events = self.events
        events[name] = events.get(name, 0) + 1
        if at > self.last_updated:
            self.last_updated = at

    def freeze(self) -> Customer:
        return Customer(self.attributes, self.stamps, self.events, frozenset(self.seen), self.last_updated)

"""Personal fields sealed at the edge where they come in, opened only at the edge where they go out.

Everything Herald keeps of an event may outlive an erasure: the journal, a
snapshot, a cluster's events topic and changelog checkpoints, replicas the dev
broker can neither compact nor delete. So the crm source seals a user's
personal fields (:data:`USER_FIELDS`: e-mail and names; :data:`TRIP_FIELDS`:
where a trip went from and to) with the user's data key *before* it accepts
the event: what rests anywhere is ciphertext, under a key that erasure
destroys. Fields a rule computes on (ids, dates, the trip's type and price)
stay clear. The rules carry the sealed box as it is (``"sealed"`` in a
profile, a trip, a CRM call's body or a public message) and never look inside.

At the other edge, :func:`open_body` opens a CRM call's body just before the
call; a public message takes the box as its ``personal`` field unopened (the
same key and associated data). An erased user's box cannot be opened
(:class:`~plugins.crm.keystore.Erased`): the effect is dropped, and the
erasure's own effects (delete from the CRM, tombstone) follow in that user's
queue. An event that arrives for a user already erased keeps no personal
field at all (``"sealed": None``); a booking without a user keeps no From/To
(nothing ever reads them: such bookings are never sent anywhere).

Data written before sealing (plaintext profiles and trips in old journals and
snapshots) is still read: a body without ``"sealed"`` goes out as it is.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
import trio

from engine import Event
from engine.kafka import SourceFailed

from .contracts import BOOKING_UPDATED, USER_UPDATED
from .keystore import Erased, KeyStore, KeyStoreUnavailable, open_sealed, seal

__all__ = ["USER_FIELDS", "TRIP_FIELDS", "SEALED", "seal_events", "open_body", "SealingContext"]

#: The personal fields of a user (seed 000's User contract: there is no phone number in it).
USER_FIELDS = ("FirstName", "LastName", "Email")
#: The personal fields of a trip: where a person went from and to.
TRIP_FIELDS = ("From", "To")
#: The member that holds the sealed fields (``None``: withheld, the user is erased).
SEALED = "sealed"
#: Key look-ups of one batch in flight at once (each may wait on the key store's database).
_LOOKUPS = 8


def _owner_and_fields(event: Event) -> tuple[str | None, tuple[str, ...]] | None:
    if event.type == USER_UPDATED:
        return event.data.get("Id"), USER_FIELDS
    if event.type == BOOKING_UPDATED:
        return event.data.get("UserId"), TRIP_FIELDS
    return None


async def seal_events(keys: KeyStore, events: Iterable[Event]) -> list[Event]:
    """``events`` with their personal fields sealed under their user's key (other events unchanged).
    :class:`KeyStoreUnavailable` if the key store cannot be reached: nothing is accepted then."""
    events = list(events)
    users = {found[0] for e in events if (found := _owner_and_fields(e)) and found[0] is not None
             and SEALED not in e.data}
    found_keys: dict[str, bytes | None] = {}
    failures: list[KeyStoreUnavailable] = []
    limiter = trio.CapacityLimiter(_LOOKUPS)

    async def look_up(user_id: str) -> None:
        async with limiter:
            if failures:
                return
            try:
                found_keys[user_id] = await keys.key(user_id)
            except Erased:
                found_keys[user_id] = None
            except KeyStoreUnavailable as exc:
                failures.append(exc)

    async with trio.open_nursery() as nursery:
        for user_id in users:
            nursery.start_soon(look_up, user_id)
    if failures:
        raise failures[0]
    return [_sealed(event, found_keys) for event in events]


def _sealed(event: Event, found_keys: dict[str, bytes | None]) -> Event:
    found = _owner_and_fields(event)
    if found is None or SEALED in event.data:
        return event
    user_id, fields = found
    clear = {k: v for k, v in event.data.items() if k not in fields}
    if user_id is not None:
        key = found_keys[user_id]
        clear[SEALED] = None if key is None else seal(key, user_id, {f: event.data.get(f) for f in fields})
    return attrs.evolve(event, data=clear)


async def open_body(keys: KeyStore, user_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """``body`` with its sealed fields opened in place of the box; ``None`` if they cannot be any more
    (the user is erased). A body without a box (written before sealing) is returned as it is."""
    if SEALED not in body:
        return body
    box = body[SEALED]
    if box is None:
        return None
    try:
        key = await keys.key(user_id)
    except Erased:
        return None
    opened = {k: v for k, v in body.items() if k != SEALED}
    opened.update(open_sealed(key, user_id, box))
    return opened


class SealingContext:
    """The plugin's context as its Kafka source sees it: ``accept`` seals first, the rest is the context.
    A key store out of reach fails the source (:class:`SourceFailed`): its batch is not committed, and
    Herald starts the source again, which reads the batch again."""

    def __init__(self, context: Any, keys: KeyStore) -> None:
        self._context, self._keys = context, keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def accept(self, events: Iterable[Event]) -> Any:
        try:
            sealed = await seal_events(self._keys, events)
        except KeyStoreUnavailable as exc:  # the message holds no password
            raise SourceFailed(f"crm-kafka: cannot seal personal fields: {exc}") from None
        return await self._context.accept(sealed)

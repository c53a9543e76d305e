"""A user's actor in the CRM integration: the rules, as pure functions.

State: the user's profile (once a user event arrived), their trips, and the
trips waiting for the profile. Effects: :class:`CrmCall` (upsert a user or a
trip, delete a user) and :class:`Publish` (a message on a public topic). Both
go to the plugin's ordered delivery (per user, in order), never straight to
I/O from here.

Rules worth knowing:

* ``LastTripType/Id/Date`` come from the user's trip with the latest
  ``StartDate`` (a tie goes to the last one updated).
* A booking for a user whose profile has not arrived yet is kept on the
  user's actor and sent to the CRM right after the profile (the CRM needs the
  user first); bookings without any ``UserId`` stay on :data:`ORPHANS` and are
  never sent (there is nobody to attach them to).
* The CRM requires ``LastName``; a user event without one sends ``""``.
* Personal fields arrive sealed (:mod:`.sealing`): profiles, trips and the
  effects' bodies carry the sealed box, never the plaintext; the rules only
  compute on clear fields (ids, dates, types).
* After an erasure the actor keeps only ``erased=True``: later events for
  that user are dropped (a suppression list), so the erasure is not undone.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from engine import Event

from .sealing import SEALED, TRIP_FIELDS, USER_FIELDS

__all__ = ["CrmState", "CrmCall", "Publish", "on_user", "on_booking", "on_erase", "USERS_TOPIC", "TRIPS_TOPIC",
           "crm_user"]

USERS_TOPIC, TRIPS_TOPIC = "public.users.v1", "public.trips.v1"


@attrs.frozen(slots=True)
class CrmState:
    profile: dict[str, Any] | None = None
    trips: Mapping[str, dict[str, Any]] = attrs.field(factory=dict)  # copied on write
    #: Trips received before the profile, waiting to be sent to the CRM.
    held: tuple[str, ...] = ()
    erased: bool = False
    dropped: int = 0  # events received after the erasure


@attrs.frozen(slots=True)
class CrmCall:
    """Upsert (``user``, ``trip``) or remove (``delete_user``) one CRM entity; ``owner`` orders delivery."""

    owner: str
    kind: str
    entity_id: str
    body: dict[str, Any] | None = None


@attrs.frozen(slots=True)
class Publish:
    """A message for a public topic, keyed by user; ``personal`` fields are encrypted when sent.
    ``value=None`` is a tombstone."""

    owner: str
    topic: str
    user_id: str
    value: dict[str, Any] | None
    personal: tuple[str, ...] = ()


def _last_trip(trips: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for trip in trips.values():  # insertion order = update order, so ">=" lets the later one win a tie
        if best is None or trip["StartDate"] >= best["StartDate"]:
            best = trip
    return best


def crm_user(profile: dict[str, Any], trips: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The CRM's User contract for this profile and trips. A sealed profile's personal fields stay in
    their box (``"sealed"``), opened by the delivery just before the call (which then makes a missing
    ``LastName`` ``""``); a profile stored before sealing carries them in the clear."""
    last = _last_trip(trips)
    if SEALED in profile:
        personal: dict[str, Any] = {SEALED: profile[SEALED]}
    else:
        personal = {"LastName": profile.get("LastName") or "", "FirstName": profile.get("FirstName"),
                    "Email": profile.get("Email")}
    return {
        "Id": profile["Id"],
        **personal,
        "LastTripType": last["Type"] if last else None,
        "LastTripId": last["Id"] if last else None,
        "LastTripDate": last["StartDate"] if last else None,
    }


def _public_user(body: dict[str, Any], version: int) -> dict[str, Any]:
    return {"schema": USERS_TOPIC, "version": version, **body}


def _public_trip(trip: dict[str, Any]) -> dict[str, Any]:
    return {"schema": TRIPS_TOPIC, "event": "trip.updated", **trip}


def on_user(state: CrmState, event: Event) -> tuple[CrmState, tuple]:
    if state.erased:
        return attrs.evolve(state, dropped=state.dropped + 1), ()
    profile = dict(event.data)
    owner = event.key
    body = crm_user(profile, state.trips)
    effects: list[Any] = [CrmCall(owner, "user", profile["Id"], body)]
    effects += [CrmCall(owner, "trip", trip_id, state.trips[trip_id]) for trip_id in state.held]
    effects.append(Publish(owner, USERS_TOPIC, profile["Id"], _public_user(body, 1), USER_FIELDS))
    return CrmState(profile, state.trips, (), False, state.dropped), tuple(effects)


def on_booking(state: CrmState, event: Event) -> tuple[CrmState, tuple]:
    if state.erased:
        return attrs.evolve(state, dropped=state.dropped + 1), ()
    trip = dict(event.data)
    trips = dict(state.trips)
    trips.pop(trip["Id"], None)  # re-insert: the latest update comes last
    trips[trip["Id"]] = trip
    owner = event.key
    user_id = trip["UserId"]
    effects: list[Any] = []
    if user_id is not None:
        effects.append(Publish(owner, TRIPS_TOPIC, user_id, _public_trip(trip), TRIP_FIELDS))
    if state.profile is None:  # not sent to the CRM before its user
        held = state.held if trip["Id"] in state.held or user_id is None else (*state.held, trip["Id"])
        return CrmState(None, trips, held, False, state.dropped), tuple(effects)
    effects.insert(0, CrmCall(owner, "trip", trip["Id"], trip))
    before, after = crm_user(state.profile, state.trips), crm_user(state.profile, trips)
    if after != before:
        effects.insert(1, CrmCall(owner, "user", state.profile["Id"], after))
    return CrmState(state.profile, trips, (), False, state.dropped), tuple(effects)


def on_erase(state: CrmState, event: Event) -> tuple[CrmState, tuple]:
    """GDPR erasure: forget everything personal; delete from the CRM; tombstone the public user."""
    user_id = event.data["user_id"]
    owner = event.key
    effects = (
        CrmCall(owner, "delete_user", user_id, {"trips": sorted(state.trips)}),
        Publish(owner, USERS_TOPIC, user_id, None),
        Publish(owner, TRIPS_TOPIC, user_id, {"schema": TRIPS_TOPIC, "event": "subject.erased", "UserId": user_id}),
    )
    return CrmState(erased=True, dropped=state.dropped), effects

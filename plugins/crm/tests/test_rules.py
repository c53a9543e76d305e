"""The CRM integration's rules, contracts, key store and mock CRM, without a broker."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from cryptography.exceptions import InvalidTag

from engine import Event
from engine._kafka import Refused
from plugins.crm import hooks
from plugins.crm.contracts import ORPHANS, decode, normalise_booking
from plugins.crm.keystore import Erased, open_sealed, seal
from plugins.crm.keystore_sqlite import SqliteKeyStore
from plugins.crm.model import TRIPS_TOPIC, USERS_TOPIC, CrmCall, CrmState, Publish, on_booking, on_erase, on_user
from engine.testing import serving
from plugins.crm.mock_crm import CrmStore, standalone_app
from web.testing import app_client
from .messages import Message as _Message

NOW = datetime(2023, 6, 1, 6, tzinfo=timezone.utc)
U = "ed2f89d9-4a2f-40aa-b3c6-4af775a89294"


def user(**fields):
    data = {"Id": U, "FirstName": "Rexy", "LastName": None, "Email": "rexy@trafi.com", **fields}
    return Event("e1", "crm.user_updated", f"user:{U}", NOW, data, NOW)


def booking(trip_id="t1", start="2023-06-01T09:00:00+03:00", kind="Rental", user_id=U):
    data = {"Id": trip_id, "UserId": user_id, "From": "Home", "To": None, "Price": 0.5, "StartDate": start,
            "EndDate": None, "Type": kind}
    return Event(f"b-{trip_id}-{start}", "crm.booking_updated", f"user:{user_id}", NOW, data, NOW)


def calls(effects):
    return [(e.kind, e.entity_id) for e in effects if isinstance(e, CrmCall)]


def test_a_user_goes_to_the_crm_and_the_public_topic_with_personal_fields_marked():
    state, effects = on_user(CrmState(), user())
    assert calls(effects) == [("user", U)]
    body = effects[0].body
    assert body["LastName"] == "" and body["LastTripId"] is None  # the CRM requires a LastName
    [public] = [e for e in effects if isinstance(e, Publish)]
    assert public.topic == USERS_TOPIC and public.user_id == U and set(public.personal) == {"FirstName", "LastName", "Email"}


def test_bookings_before_their_user_wait_then_follow_it():
    state, effects = on_booking(CrmState(), booking("t1"))
    assert calls(effects) == [] and state.held == ("t1",)
    assert [e.topic for e in effects] == [TRIPS_TOPIC]
    state, effects = on_user(state, user())
    assert calls(effects) == [("user", U), ("trip", "t1")]
    assert effects[0].body["LastTripId"] == "t1" and state.held == ()


def test_the_last_trip_is_the_latest_start_and_updates_reach_the_user():
    state, _ = on_user(CrmState(), user())
    state, effects = on_booking(state, booking("t1", "2023-06-01T09:00:00+03:00", "Rental"))
    assert calls(effects) == [("trip", "t1"), ("user", U)]
    state, effects = on_booking(state, booking("t0", "2023-05-01T09:00:00+03:00", "Scooter"))
    assert calls(effects) == [("trip", "t0")]  # older: the user's LastTrip does not change
    state, effects = on_booking(state, booking("t2", "2023-06-02T09:00:00+03:00", "Scooter"))
    assert effects[1].body["LastTripType"] == "Scooter" and effects[1].body["LastTripId"] == "t2"


def test_erasure_forgets_everything_and_drops_later_events():
    state, _ = on_user(CrmState(), user())
    state, _ = on_booking(state, booking("t1"))
    state, effects = on_erase(state, Event("x", "crm.erase", f"user:{U}", NOW, {"user_id": U}, NOW))
    assert state == CrmState(erased=True)
    assert calls(effects) == [("delete_user", U)] and effects[0].body == {"trips": ["t1"]}
    assert [(e.topic, e.value) for e in effects[1:2]] == [(USERS_TOPIC, None)]  # a tombstone
    state, effects = on_user(state, user())
    assert effects == () and state.dropped == 1 and state.profile is None


def test_a_message_keeps_its_id_but_a_broker_that_forgot_its_offsets_cannot_reuse_one():
    from engine.kafka import kafka_event_id

    before = _Message("internal_user_updated", b"{}", offset=3)
    again = _Message("internal_user_updated", b"{}", offset=3)
    assert kafka_event_id(before) == kafka_event_id(again)  # a redelivery is a repeat
    after_restart = _Message("internal_user_updated", b"{}", offset=3)
    after_restart.timestamp = lambda: (1, 1685599299999)  # the same offset, appended later
    assert kafka_event_id(after_restart) != kafka_event_id(before)


def test_messages_decode_to_events_on_the_users_actor():
    value = orjson.dumps({"Event": {"Id": "b1", "UserId": None, "From": None, "To": None, "Type": 2,
                                    "StartDate": "2023-06-01T09:00:03.0042497+03:00", "EndDate": None, "Price": 0},
                          "Id": 1})
    [event] = decode(_Message("internal_booking_updated", value))
    assert event.key == ORPHANS and event.id == "kafka:internal_booking_updated:0:7:1685599200007"
    assert event.data["Type"] == "Rental" and event.data["StartDate"] == "2023-06-01T09:00:03.004249+03:00"
    for bad in (b"not json", b"[]", orjson.dumps({"Event": {"Id": "b", "Type": 9, "Price": 0, "StartDate": "x"}}),
                orjson.dumps({"Event": {"Id": "u"}})):
        with pytest.raises(Refused):
            decode(_Message("internal_booking_updated" if b"Type" in bad else "internal_user_updated", bad))
    with pytest.raises(Refused, match="StartDate"):
        normalise_booking({"Id": "b", "Type": 1, "Price": 1, "StartDate": "yesterday"})


async def test_sealed_fields_open_only_with_the_users_key_and_never_after_erasure():
    keys = SqliteKeyStore(None)
    sealed = seal(await keys.key(U), U, {"Email": "rexy@trafi.com"})
    assert "rexy" not in orjson.dumps(sealed).decode()
    assert open_sealed(await keys.key(U), U, sealed) == {"Email": "rexy@trafi.com"}
    with pytest.raises(InvalidTag):
        open_sealed(await keys.key(U), "someone-else", sealed)  # bound to the user id
    assert await keys.erase(U) is True
    with pytest.raises(Erased):
        await keys.key(U)
    assert await keys.existing(U) is None


async def test_the_mock_crm_follows_the_clients_api():
    async with app_client([("crm", hooks)]) as (_, client):
        trip = {"Id": "t1", "UserId": U, "From": None, "To": None, "Price": 1.5,
                "StartDate": "2023-06-01T09:00:00+03:00", "EndDate": None, "Type": "Rental"}
        person = {"Id": U, "LastName": "Doe", "FirstName": None, "Email": "d@trafi.com", "LastTripType": None,
                  "LastTripId": None, "LastTripDate": None}
        assert (await client.get(f"/mock-crm/users/{U}")).status_code == 404
        assert (await client.post(f"/mock-crm/users/{U}", json=person)).status_code == 404
        assert (await client.post("/mock-crm/users", json=person)).status_code == 201
        assert (await client.post("/mock-crm/users", json=person)).status_code == 409
        assert (await client.post("/mock-crm/users", json={**person, "Id": "x", "LastName": None})).status_code == 400
        replaced = await client.post(f"/mock-crm/users/{U}", json={**person, "FirstName": "Jo"})
        assert replaced.status_code == 200 and replaced.json()["FirstName"] == "Jo"
        assert (await client.post("/mock-crm/trips", json=trip)).status_code == 201
        assert (await client.post("/mock-crm/trips", json={**trip, "Id": "t2", "Price": "1"})).status_code == 400
        assert [t["Id"] for t in (await client.get("/mock-crm/trips")).json()] == ["t1"]
        assert (await client.delete(f"/mock-crm/users/{U}")).status_code == 204
        assert (await client.get("/mock-crm/users")).json() == []
        await client.post("/mock-crm/_outage", json={"down": True})
        assert (await client.get("/mock-crm/users")).status_code == 503
        await client.post("/mock-crm/_outage", json={"down": False})
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"/mock-crm/users", "/mock-crm/users/{entity_id}", "/mock-crm/trips/{entity_id}",
                "/v1/subjects/{user_id}"} <= set(paths)


async def test_internal_messages_reach_the_mock_crm_and_never_enter_through_the_public_route():
    """The Kafka source's path without a broker: messages decoded by the plugin's own ``decode``
    and accepted in-process, in order, to a real mock CRM. The public route refuses the same types."""
    store = CrmStore()
    async with serving(standalone_app(store)) as crm_url, \
            app_client([("crm", hooks)], environ={"HERALD_CRM_URL": crm_url}) as (herald, client):
        messages = [
            _Message("internal_user_updated", orjson.dumps({"Id": 1, "Event": {
                "Id": U, "FirstName": "A", "LastName": "B", "Email": "a@trafi.com"}}), offset=0),
            _Message("internal_booking_updated", orjson.dumps({"Id": 2, "Event": {
                "Id": "t9", "UserId": U, "From": "X", "To": None, "Type": 1,
                "StartDate": "2023-06-01T09:00:01+03:00", "EndDate": None, "Price": 0}}), offset=0),
        ]
        await herald.accept([event for message in messages for event in decode(message)])
        assert await herald.flush_sinks(10)
        crm_user = store.data["users"][U]
        assert crm_user["LastTripId"] == "t9" and crm_user["LastTripType"] == "Scooter"
        assert store.data["trips"]["t9"]["From"] == "X"
        assert store.calls == {"create_user": 1, "create_trip": 1, "replace_user": 1}
        forged = [
            {"type": "crm.user_updated", "key": f"user:{U}", "timestamp": "2023-06-01T06:00:00Z",
             "data": {"Id": U, "FirstName": "Forged", "LastName": "X", "Email": "evil@example.com"}},
            {"type": "crm.erase", "key": f"user:{U}", "timestamp": "2023-06-01T06:00:00Z", "data": {"user_id": U}},
        ]
        for event in forged:
            refused = await client.post("/v1/event", json=event)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == {"code": "reserved", "field": "type",
                                               "message": refused.json()["error"]["message"]}
            assert "internal event type of plugin 'crm'" in refused.json()["error"]["message"]
        batch = await client.post("/v1/events", json=forged)
        assert batch.status_code == 400 and [r["error"]["code"] for r in batch.json()["rejected"]] == ["reserved"] * 2
        assert await herald.flush_sinks(10)
        assert store.data["users"][U]["FirstName"] == "A" and store.calls["create_user"] == 1


async def test_the_standalone_mock_answers_like_the_mounted_one():
    """``herald mock-crm`` answers the API through a bare ASGI front: the same calls get the same
    answers as the Quart blueprint inside Herald (errors included); other paths still reach Quart."""
    import httpx

    trip = {"Id": "t1", "UserId": U, "From": None, "To": None, "Price": 1.5,
            "StartDate": "2023-06-01T09:00:00+03:00", "EndDate": None, "Type": "Rental"}
    person = {"Id": U, "LastName": "Doe", "FirstName": None, "Email": "d@trafi.com", "LastTripType": None,
              "LastTripId": None, "LastTripDate": None}
    script = [
        ("GET", f"/users/{U}", None, None), ("POST", f"/users/{U}", person, None), ("POST", "/users", person, None),
        ("POST", "/users", person, None), ("POST", "/users", {**person, "Id": "x", "LastName": None}, None),
        ("POST", "/users", {**person, "Id": ""}, None), ("POST", "/users", b"not json", None),
        ("POST", f"/users/{U}", {**person, "Id": "ignored", "FirstName": "Jo"}, None),
        ("POST", "/trips", trip, None), ("POST", "/trips", {**trip, "Id": "t2", "Price": "1"}, None),
        ("POST", "/trips", {**trip, "Id": "t3", "StartDate": "yesterday"}, None),
        ("POST", "/trips", {**trip, "Id": "t4"}, "text/plain"), ("GET", "/trips", None, None),
        ("GET", "/trips/t1", None, None), ("DELETE", "/trips/t1", None, None), ("DELETE", "/trips/t1", None, None),
        ("POST", "/_outage", {"down": True}, None), ("GET", "/users", None, None),
        ("POST", "/_outage", {"down": "yes"}, None), ("POST", "/_outage", {"down": False}, None),
        ("GET", "/users", None, None), ("GET", "/_calls", None, None),
    ]

    async def answers(client, prefix: str) -> list:
        found = []
        for method, path, body, content_type in script:
            content = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
            response = await client.request(method, prefix + path, content=content,
                                            headers={"content-type": content_type or "application/json"})
            json = response.headers.get("content-type", "").startswith("application/json")
            found.append((method, path, response.status_code, response.json() if json else response.content))
        return found

    async with app_client([("crm", hooks)]) as (_, client):
        mounted = await answers(client, "/mock-crm")
    store = CrmStore()
    async with serving(standalone_app(store)) as url, httpx.AsyncClient(base_url=url) as client:
        alone = await answers(client, "")
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "Mock CRM"  # Quart, behind the front
        assert (await client.get("/users/")).status_code == 404
        assert (await client.put("/users", json=person)).status_code == 405
    assert alone == mounted
    assert [status for *_, status, _ in alone][:4] == [404, 404, 201, 409]
    assert store.data["users"][U]["FirstName"] == "Jo" and store.data["users"][U]["Id"] == U
    assert store.calls == {"get_user": 1, "create_user": 1, "replace_user": 1, "create_trip": 1, "list_trips": 1,
                           "get_trip": 1, "delete_trip": 1, "list_users": 1}


async def test_a_recording_mock_lists_the_write_calls_in_order():
    import httpx

    store = CrmStore(record=True)
    person = {"Id": U, "LastName": "Doe", "FirstName": None, "Email": "d@trafi.com"}
    async with serving(standalone_app(store)) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/users", json=person)
        await client.post(f"/users/{U}", json={**person, "FirstName": "Jo"})
        await client.get("/users")
        await client.delete(f"/users/{U}")
        recorded = (await client.get("/_calls")).json()
    assert [(m, p) for m, p, _ in recorded] == [("POST", "/users"), ("POST", f"/users/{U}"), ("DELETE", f"/users/{U}")]
    assert orjson.loads(recorded[1][2])["FirstName"] == "Jo"

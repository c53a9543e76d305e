"""Personal fields sealed at the crm source, opened only at the delivery (no broker, no database)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from engine import Config, PluginError
from engine.testing import serving
from plugins.crm import hooks
from plugins.crm.contracts import ORPHANS, decode
from plugins.crm.keystore import open_sealed
from plugins.crm.keystore_sqlite import SqliteKeyStore
from plugins.crm.mock_crm import CrmStore, standalone_app
from plugins.crm.model import CrmCall, CrmState, Publish, on_booking, on_user
from plugins.crm.sealing import SealingContext, open_body, seal_events
from web.testing import app_client
from .messages import Message as _Message

NOW = datetime(2023, 6, 1, 6, tzinfo=timezone.utc)
U = "ed2f89d9-4a2f-40aa-b3c6-4af775a89294"
#: What must never rest anywhere in the clear: the user's e-mail, names, and where they went.
SECRETS = (b"rexy@trafi.com", b"Rexymillion", b"Dinosaurson", b"Vilnius Old Town", b"Kaunas Castle")


def user_message(offset=0, user_id=U):
    return _Message("internal_user_updated", orjson.dumps({"Id": 1, "Event": {
        "Id": user_id, "FirstName": "Rexymillion", "LastName": "Dinosaurson", "Email": "rexy@trafi.com"}}), offset)


def booking_message(offset=1, trip_id="t9", user_id=U):
    return _Message("internal_booking_updated", orjson.dumps({"Id": 2, "Event": {
        "Id": trip_id, "UserId": user_id, "From": "Vilnius Old Town", "To": "Kaunas Castle", "Type": 1,
        "StartDate": "2023-06-01T09:00:01+03:00", "EndDate": None, "Price": 2.5}}), offset)


def events(*messages):
    return [event for message in messages for event in decode(message)]


async def test_the_source_seals_personal_fields_and_leaves_the_rules_fields_clear():
    keys = SqliteKeyStore(None)
    user, booking = await seal_events(keys, events(user_message(), booking_message()))
    assert set(user.data) == {"Id", "sealed"} and user.data["Id"] == U
    assert {"From", "To"}.isdisjoint(booking.data)
    assert booking.data["StartDate"] == "2023-06-01T09:00:01+03:00" and booking.data["Type"] == "Scooter"
    assert booking.data["UserId"] == U and booking.data["Price"] == 2.5
    for event in (user, booking):
        assert not any(secret in orjson.dumps(event.data) for secret in SECRETS)
    key = await keys.key(U)
    assert open_sealed(key, U, user.data["sealed"]) == {
        "FirstName": "Rexymillion", "LastName": "Dinosaurson", "Email": "rexy@trafi.com"}
    assert open_sealed(key, U, booking.data["sealed"]) == {"From": "Vilnius Old Town", "To": "Kaunas Castle"}
    again = await seal_events(keys, [user])
    assert again == [user]  # sealed once: a second pass changes nothing


async def test_rules_carry_the_box_and_the_delivery_opens_it_until_the_user_is_erased():
    keys = SqliteKeyStore(None)
    user, booking = await seal_events(keys, events(user_message(), booking_message()))
    state, _ = on_user(CrmState(), user)
    state, effects = on_booking(state, booking)
    calls = [e for e in effects if isinstance(e, CrmCall)]
    assert [(c.kind, c.entity_id) for c in calls] == [("trip", "t9"), ("user", U)]
    assert calls[1].body["LastTripId"] == "t9" and "Email" not in calls[1].body
    [public] = [e for e in effects if isinstance(e, Publish)]
    assert public.value["sealed"] == booking.data["sealed"]
    opened = await open_body(keys, U, calls[1].body)
    assert opened["Email"] == "rexy@trafi.com" and opened["LastTripId"] == "t9" and "sealed" not in opened
    assert (await open_body(keys, U, calls[0].body))["From"] == "Vilnius Old Town"
    legacy = {"Id": U, "Email": "old@trafi.com"}
    assert await open_body(keys, U, legacy) is legacy  # stored before sealing: sent as it is
    await keys.erase(U)
    assert await open_body(keys, U, calls[1].body) is None
    [late] = await seal_events(keys, events(user_message(offset=5)))
    assert late.data == {"Id": U, "sealed": None}  # erased: nothing personal is kept at all
    assert await open_body(keys, U, crm_body(late)) is None


def crm_body(event):
    _, [call, *_] = on_user(CrmState(), event)
    return call.body


async def test_a_booking_without_a_user_keeps_no_personal_field():
    keys = SqliteKeyStore(None)
    [orphan] = await seal_events(keys, events(booking_message(user_id=None)))
    assert orphan.key == ORPHANS and {"From", "To", "sealed"}.isdisjoint(orphan.data)
    assert orphan.data["Id"] == "t9"


def scan(directory: Path) -> list[tuple[str, bytes]]:
    return [(p.name, s) for p in directory.rglob("*") if p.is_file() for s in SECRETS if s in p.read_bytes()]


async def test_the_crm_gets_plaintext_while_journal_snapshot_actors_and_logs_hold_none(tmp_path, caplog):
    store = CrmStore()
    data = tmp_path / "data"
    async with serving(standalone_app(store)) as crm_url, \
            app_client([("crm", hooks)], durability="fsync", data_dir=str(data),
                       environ={"HERALD_CRM_URL": crm_url}) as (herald, client):
        keys = herald.part("crm", lambda: None)["keys"]
        await SealingContext(herald, keys).accept(events(user_message(), booking_message()))
        assert await herald.flush_sinks(10)
        crm_user = store.data["users"][U]
        assert (crm_user["Email"], crm_user["FirstName"], crm_user["LastName"]) == (
            "rexy@trafi.com", "Rexymillion", "Dinosaurson")
        assert crm_user["LastTripId"] == "t9"
        assert (store.data["trips"]["t9"]["From"], store.data["trips"]["t9"]["To"]) == (
            "Vilnius Old Town", "Kaunas Castle")
        actor = await client.get(f"/v1/actors/user:{U}")
        assert actor.status_code == 200 and "sealed" in actor.text
        assert not any(s.decode() in actor.text for s in SECRETS)
        await herald.snapshot()
        assert scan(data) == []
        erased = await client.delete(f"/v1/subjects/{U}")
        assert erased.status_code == 202 and erased.json()["key_destroyed"] is True
        assert await herald.flush_sinks(10)
        assert U not in store.data["users"] and "t9" not in store.data["trips"]
        await SealingContext(herald, keys).accept(events(user_message(offset=7)))  # the user again
        assert await herald.flush_sinks(10)
        assert U not in store.data["users"]
    assert scan(data) == []
    assert not any(s.decode() in caplog.text for s in SECRETS)


async def test_the_public_message_is_the_sources_box_unopened():
    """The public user message carries the box sealed at the source as its ``personal`` field."""
    keys = SqliteKeyStore(None)
    [user] = await seal_events(keys, events(user_message()))
    _, effects = on_user(CrmState(), user)
    [public] = [e for e in effects if isinstance(e, Publish)]
    sent = []

    class Producer:
        def produce(self, topic, key, value, poll=True):
            sent.append((topic, key, orjson.loads(value)))

    from plugins.crm.delivery import Delivery

    class Context:
        def health(self, name, initial):
            return dict(initial)

    delivery = Delivery(Context(), "http://crm.invalid", keys, Producer())
    await delivery._publish(public)
    [(topic, key, value)] = sent
    assert key == U.encode() and "sealed" not in value and "Email" not in value
    assert open_sealed(await keys.key(U), U, value["personal"])["Email"] == "rexy@trafi.com"
    await keys.erase(U)
    await delivery._publish(public)
    assert len(sent) == 1  # nothing personal is published for an erased user


class _Clustered:
    clustered = True

    def __init__(self, **environ):
        self.config = Config(durability="memory", environ=environ)
        self.sections = {}

    def health(self, name, initial=None):
        return self.sections.setdefault(name, dict(initial or {}))


def test_in_a_cluster_crm_needs_the_shared_key_store():
    with pytest.raises(PluginError) as refused:
        hooks._make_parts(_Clustered())
    assert str(refused.value) == ("the crm plugin in a cluster needs a key store its nodes share: "
                                  "set HERALD_CRM_KEYSTORE to a postgresql:// URL")
    for where in ("keys.db", "sqlite:///tmp/keys.db"):
        with pytest.raises(PluginError, match="HERALD_CRM_KEYSTORE"):
            hooks._make_parts(_Clustered(HERALD_CRM_KEYSTORE=where))
    shared = hooks._make_parts(_Clustered(HERALD_CRM_KEYSTORE="postgresql://herald:secret@db.invalid/herald"))
    assert shared["keys"].description["store"] == "postgresql"  # made, not connected: that is at startup

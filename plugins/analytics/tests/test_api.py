"""The Eye over HTTP, in-process: auth, ingestion, validation behind the 202, queries, restart."""

from __future__ import annotations

import json
import sys
import types

from engine import hookimpl
from plugins.analytics import hooks
from web.testing import app_client

S1, S2 = "e2085be5-9137-4e4e-80b5-f1ffddc25423", "7f3c2a9e-4b1d-4c8e-9a6f-2d5e8b1c0f47"


def pageview(session=S1, ts="2021-01-01 09:15:27.243860", path="/"):
    return {"session_id": session, "category": "page interaction", "name": "pageview",
            "data": {"host": "www.consumeraffairs.com", "path": path}, "timestamp": ts}


def eye(plugins=None, **settings):
    return app_client(plugins or [("analytics", hooks)], **settings)


async def token_for(client, name="web") -> dict:
    response = await client.post("/v1/admin/tokens", json={"name": name})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Token {response.json()['token']}"}


async def test_every_route_needs_an_active_token():
    async with eye() as (_, client):
        auth = await token_for(client)
        for headers, code in (({}, "token_missing"), ({"Authorization": "Token nope"}, "token_unknown"),
                              ({"Authorization": "Bearer x"}, "token_malformed")):
            for method, path in (("POST", "/api/events"), ("GET", "/api/events"), ("GET", "/api/errors")):
                response = await client.request(method, path, headers=headers, json=pageview())
                assert response.status_code == 401 and response.json()["error"]["code"] == code
        assert (await client.post("/api/events", headers=auth, json=pageview())).status_code == 202
        assert (await client.post("/v1/admin/tokens", json={"name": "web"})).status_code == 409
        listed = (await client.get("/v1/admin/tokens")).json()
        assert [(c["name"], c["active"]) for c in listed] == [("web", True)]
        assert (await client.delete("/v1/admin/tokens/web")).status_code == 200
        response = await client.get("/api/events", headers=auth)
        assert response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"
        assert (await client.delete("/v1/admin/tokens/web")).status_code == 404
        # The name can be given a new token; the old one stays revoked.
        fresh = await token_for(client)
        assert (await client.get("/api/events", headers=fresh)).status_code == 200
        assert (await client.get("/api/events", headers=auth)).status_code == 401


async def test_tokens_are_stored_only_as_hashes_and_admin_routes_take_the_admin_token():
    async with eye(admin_token="s3cret-admin-token-0123") as (herald, client):
        assert (await client.post("/v1/admin/tokens", json={"name": "web"})).status_code == 401
        response = await client.post("/v1/admin/tokens", json={"name": "web"},
                                     headers={"Authorization": "Bearer s3cret-admin-token-0123"})
        token = response.json()["token"]
        state = herald.engine.actor_view("analytics:clients")
        assert token not in json.dumps(state) and state["states"]["analytics"]["clients"]["web"]["token_hash"]


async def test_batches_are_acknowledged_then_checked_and_each_invalid_field_logged():
    async with eye() as (_, client):
        auth = await token_for(client)
        batch = [pageview(), {}, {**pageview(), "data": {"host": "h"}, "timestamp": "2099-01-01 00:00:00"}]
        response = await client.post("/api/events", headers=auth, json=batch)
        assert response.status_code == 202
        ok, empty, bad = response.json()["ids"]
        stored = (await client.get(f"/api/events/{ok}", headers=auth)).json()
        assert stored["client"] == "web" and stored["data"] == {"host": "www.consumeraffairs.com", "path": "/"}
        assert stored["timestamp"] == "2021-01-01T09:15:27.243860Z"
        missing = await client.get(f"/api/events/{bad}", headers=auth)
        assert missing.status_code == 404 and "errors?event_id=" in missing.json()["error"]["message"]
        errors = (await client.get("/api/errors", headers=auth, params={"event_id": empty})).json()["results"]
        assert sorted(e["field"] for e in errors) == ["category", "data", "name", "session_id", "timestamp"]
        assert {e["code"] for e in errors} == {"required"}
        rows = (await client.get("/api/errors", headers=auth, params={"event_id": bad})).json()["results"]
        assert {(e["field"], e["code"]) for e in rows} == {("timestamp", "future"), ("data.path", "required")}
        future = next(e for e in rows if e["code"] == "future")
        assert future["input"] == "2099-01-01 00:00:00" and future["client"] == "web" and future["session_id"] == S1
        assert (await client.get(f"/api/errors/{future['id']}", headers=auth)).json() == future
        assert (await client.get("/api/errors/999999", headers=auth)).status_code == 404
        by_code = (await client.get("/api/errors", headers=auth, params={"code": "future"})).json()["results"]
        assert [e["event_id"] for e in by_code] == [bad]


async def test_bad_bodies_are_400_and_generic_routes_cannot_forge_analytics_events():
    async with eye() as (_, client):
        auth = await token_for(client)
        assert (await client.post("/api/events", headers=auth, content=b"{nope")).status_code == 400
        assert (await client.post("/api/events", headers=auth, json=[])).status_code == 400
        assert (await client.post("/api/events", headers=auth, json="text")).status_code == 400
        forged = {"type": "analytics.client_created", "key": "analytics:clients", "timestamp": "2021-01-01T00:00:00Z",
                  "data": {"name": "evil", "token_hash": "0" * 64}}
        response = await client.post("/v1/event", json=forged)
        assert response.status_code == 400 and response.json()["error"]["code"] == "reserved"


async def test_queries_filter_order_by_occurrence_and_paginate():
    async with eye() as (_, client):
        auth = await token_for(client)
        # Out of order within a session.
        batch = [pageview(S1, "2021-01-01 09:15:30"), pageview(S1, "2021-01-01 09:15:10"),
                 {**pageview(S1, "2021-01-01 09:15:20"), "name": "cta click",
                  "data": {"host": "h", "path": "/", "element": "chat bubble"}},
                 pageview(S2, "2021-01-02 10:00:00"),
                 {**pageview(S2, "2021-01-03 10:00:00"), "category": "form interaction", "name": "submit",
                  "data": {"host": "h", "path": "/", "form": {"a": "b"}}}]
        await client.post("/api/events", headers=auth, json=batch)

        async def ids(**params):
            body = (await client.get("/api/events", headers=auth, params=params)).json()
            return [(e["session_id"][:2], e["timestamp"][11:19]) for e in body["results"]]

        assert await ids(session_id=S1) == [("e2", "09:15:10"), ("e2", "09:15:20"), ("e2", "09:15:30")]
        assert await ids(category="form interaction") == [("7f", "10:00:00")]
        assert await ids(category="page interaction", name="pageview") == [
            ("e2", "09:15:10"), ("e2", "09:15:30"), ("7f", "10:00:00")]
        assert await ids(timestamp_after="2021-01-01 09:15:20", timestamp_before="2021-01-02T10:00:00Z") == [
            ("e2", "09:15:20"), ("e2", "09:15:30")]
        # Cursor pagination walks everything once, in order.
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await client.get("/api/events", headers=auth, params=params)).json()
            seen += [e["timestamp"] for e in body["results"]]
            cursor = body["next"]
            if not cursor:
                break
        assert len(seen) == 5 and seen == sorted(seen)
        for params in ({"timestamp_after": "yesterday"}, {"cursor": "garbage"}, {"limit": "0"}):
            response = await client.get("/api/events", headers=auth, params=params)
            assert response.status_code == 400 and response.json()["error"]["field"] == next(iter(params))


async def test_events_and_errors_survive_a_restart(tmp_path):
    settings = {"durability": "batch", "data_dir": str(tmp_path)}
    async with eye(**settings) as (_, client):
        auth = await token_for(client)
        await client.post("/api/events", headers=auth, json=[pageview(), {"session_id": S1}])
        before = [(await client.get(p, headers=auth)).json() for p in ("/api/events", "/api/errors")]
    async with eye(**settings) as (_, client):
        after = [(await client.get(p, headers=auth)).json() for p in ("/api/events", "/api/errors")]
    assert after == before and len(before[0]["results"]) == 1 and len(before[1]["results"]) == 4


async def test_replayed_events_do_not_duplicate_stored_rows(tmp_path):
    """A crash after the journal commit but before the store's flush: the replay fills the gap, once."""
    settings = {"durability": "batch", "data_dir": str(tmp_path)}
    async with eye(**settings) as (herald, client):
        auth = await token_for(client)
        await client.post("/api/events", headers=auth, json=[pageview(), {}])
        await herald.flush_sinks()
        # Lose what the store would write next (as a crash would), then stop without a snapshot.
        store = herald.sinks[next(iter(herald.sinks))]
        await client.post("/api/events", headers=auth, json=[pageview(path="/second")])
        store._events.clear()
        herald.snapshot_seq = herald.seq  # no final snapshot: the next start replays the journal
    async with eye(**settings) as (_, client):
        events = (await client.get("/api/events", headers=auth)).json()["results"]
        errors = (await client.get("/api/errors", headers=auth)).json()["results"]
    assert sorted(e["data"]["path"] for e in events) == ["/", "/second"]
    assert len(errors) == 5


async def test_schemas_come_from_plugins_and_a_directory(tmp_path):
    (tmp_path / "video.json").write_text(json.dumps({"category": "video", "name": "play", "schema": {
        "type": "object", "required": ["video_id"]}}))
    extra = types.ModuleType("eye_extra")

    @hookimpl
    def herald_analytics_schemas():
        return [{"category": "video", "name": "pause", "schema": {"type": "object", "required": ["at"]}}]

    extra.herald_analytics_schemas = herald_analytics_schemas
    sys.modules["eye_extra"] = extra
    settings = {"environ": {"HERALD_ANALYTICS_SCHEMA_DIR": str(tmp_path)}}
    async with eye([("analytics", hooks), ("eye_extra", extra)], **settings) as (_, client):
        auth = await token_for(client)
        listed = {(s["category"], s["name"]) for s in (await client.get("/api/schemas", headers=auth)).json()}
        assert {("video", "play"), ("video", "pause"), ("page interaction", "pageview")} <= listed
        video = {"session_id": S1, "category": "video", "data": {"x": 1}, "timestamp": "2021-01-01 00:00:00"}
        ids = (await client.post("/api/events", headers=auth, json=[{**video, "name": "play"},
                                                                    {**video, "name": "pause"}])).json()["ids"]
        fields = {e["field"] for e in (await client.get("/api/errors", headers=auth)).json()["results"]}
        assert fields == {"data.video_id", "data.at"} and len(ids) == 2


async def test_every_route_is_in_the_openapi_document():
    async with eye() as (_, client):
        paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/events", "/api/events/{event_id}", "/api/errors", "/api/errors/{error_id}",
                 "/v1/admin/tokens", "/v1/admin/tokens/{name}"):
        assert path in paths, path
    assert "401" in paths["/api/events"]["post"]["responses"]

"""The HTTP API through the ASGI app: ingestion, queries, errors, docs, metrics."""

import orjson
import pytest

from .conftest import app_client

LAUNCH = {"user_id": "foo2", "device_id": "bar2", "type": "app_launch", "time_stamp": "2021-02-28 16:22:52"}


def event(type_="app_launch", user="u1", ts="2021-02-28 16:00:00", **extra):
    return {"user_id": user, "type": type_, "time_stamp": ts, **extra}


async def test_post_event_is_accepted_with_its_id(client):
    r = await client.post("/v1/event", json={**LAUNCH, "id": "client-key-1"})
    assert r.status_code == 202
    assert r.json() == {"id": "client-key-1"}
    actor = (await client.get("/v1/actors/foo2")).json()
    assert actor["key"] == "foo2"
    assert actor["states"]["fitness"]["last_launch_at"] == "2021-02-28T16:22:52+00:00"
    assert actor["timers"] == [{"plugin": "fitness", "name": "nudge", "due": "2021-02-28T16:32:52+00:00"}]


@pytest.mark.parametrize(
    "body, field, code",
    [
        (b'{"type": "app_launch"', None, "malformed_json"),
        (b"[1, 2]", None, "invalid_type"),
        (b'{"type": "app_launch", "time_stamp": "2021-02-28 16:00:00"}', "key", "missing"),
        (b'{"type": "app_launch", "user_id": "u", "time_stamp": "28/02/2021"}', "time_stamp", "invalid_timestamp"),
        (b'{"type": 3, "user_id": "u", "time_stamp": "2021-02-28 16:00:00"}', "type", "invalid_type"),
        (b'{"type": "training_program_started", "user_id": "u", "time_stamp": "2021-02-28 16:00:00"}',
         "training_program_id", "missing"),
        (b'{"type": "app_launch", "user_id": "u", "timestamp": "2999-01-01T00:00:00Z"}', "timestamp", "in_future"),
    ],
)
async def test_bad_events_get_400_naming_the_field(client, body, field, code):
    r = await client.post("/v1/event", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["field"], error["code"]) == (field, code)
    assert error["message"]


async def test_oversized_bodies_get_413(client):
    big = orjson.dumps(event(padding="x" * 40_000))
    r = await client.post("/v1/event", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    huge = orjson.dumps([event(padding="x" * 1000)] * 600)
    assert (await client.post("/v1/events", content=huge)).status_code == 413


async def test_get_on_ingestion_routes_is_405(client):
    r = await client.get("/v1/event")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_unknown_types_are_accepted_and_counted(client):
    for _ in range(2):
        assert (await client.post("/v1/event", json=event("app_closed"))).status_code == 202
    actor = (await client.get("/v1/actors/u1")).json()
    assert actor["unknown"] == {"app_closed": 2}
    assert actor["states"] == {}


async def test_batch_json_array_with_mixed_lines(client):
    batch = [event(user="a"), {"type": "app_launch"}, event(user="b"), "nope"]
    r = await client.post("/v1/events", json=batch)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2 and len(body["ids"]) == 2
    assert [(x["line"], x["error"]["field"]) for x in body["rejected"]] == [(2, "key"), (4, None)]
    assert (await client.get("/v1/actors/a")).status_code == 200
    assert (await client.get("/v1/actors/b")).status_code == 200


async def test_batch_ndjson_reports_physical_line_numbers(client):
    lines = [orjson.dumps(event(user="n1")), b"", b"{broken", orjson.dumps(event(user="n2", type_="t", ts="bad"))]
    r = await client.post("/v1/events", content=b"\n".join(lines) + b"\n",
                          headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 1
    assert [(x["line"], x["error"]["code"]) for x in body["rejected"]] == [(3, "malformed_json"), (4, "invalid_timestamp")]


async def test_batch_with_nothing_valid_is_400(client):
    r = await client.post("/v1/events", json=[{"type": "x"}])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "no_valid_events" and r.json()["rejected"][0]["line"] == 1
    r = await client.post("/v1/events", json={"not": "a list"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type"
    r = await client.post("/v1/events", json=[])
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_batch"


async def test_actor_404_is_json(client):
    r = await client.get("/v1/actors/nobody")
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "no actor with key 'nobody'", "field": "key"}


async def test_unknown_route_is_json_404(client):
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_notify_sink_keeps_notifications_and_drops_repeated_keys(client):
    for _ in range(2):
        r = await client.post("/v1/notify", json={"message": "hi"}, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202
    assert r.json() == {"duplicate": True}
    await client.post("/v1/notify", json={"message": "other"}, headers={"Idempotency-Key": "k2"})
    body = (await client.get("/v1/notify")).json()
    assert body["received"] == 2 and body["duplicates"] == 1
    assert [n["payload"]["message"] for n in body["notifications"]] == ["hi", "other"]
    assert len((await client.get("/v1/notify?limit=1")).json()["notifications"]) == 1
    for bad in ("-1", "²", "99999999999999999999999"):
        r = await client.get(f"/v1/notify?limit={bad}")
        assert r.status_code == 400 and r.json()["error"]["field"] == "limit"
    assert (await client.post("/v1/notify", content=b"[]")).status_code == 400


async def test_healthz_and_metrics(client):
    await client.post("/v1/event", json=LAUNCH)
    await client.post("/v1/event", json={"type": "app_launch"})
    health = (await client.get("/healthz")).json()
    assert health["ready"] is True and health["plugins"] == ["fitness"]
    assert health["actors"] == 1 and health["timers_pending"] == 1
    assert health["clock"].startswith("2021-02-28T16:22:52")
    text = (await client.get("/metrics")).text
    assert 'herald_events_accepted_total{type="app_launch"} 1.0' in text
    assert 'herald_events_rejected_total{code="missing",type="app_launch"} 1.0' in text
    assert "herald_timers_pending 1.0" in text
    from engine._metrics import LATENCY_SAMPLE

    batch = [{**LAUNCH, "user_id": f"h{i}"} for i in range(2 * LATENCY_SAMPLE)]
    assert (await client.post("/v1/events", json=batch)).status_code == 202
    text = (await client.get("/metrics")).text
    assert f'herald_events_accepted_total{{type="app_launch"}} {1 + 2 * LATENCY_SAMPLE}.0' in text
    assert 'herald_handler_seconds_count{type="app_launch"} 2.0' in text  # one event in LATENCY_SAMPLE is timed


async def test_aliases_are_counted_under_their_types_own_name(client):
    upper = {**LAUNCH, "type": "APP_LAUNCH"}
    assert (await client.post("/v1/event", json=upper)).status_code == 202
    assert (await client.post("/v1/event", json=LAUNCH)).status_code == 202
    assert (await client.post("/v1/event", json={"type": "TRAINING_PROGRAM_STARTED", "user_id": "u",
                                                 "time_stamp": "2021-02-28 16:00:00"})).status_code == 400
    text = (await client.get("/metrics")).text
    assert 'herald_events_accepted_total{type="app_launch"} 2.0' in text
    assert "APP_LAUNCH" not in text and "TRAINING_PROGRAM_STARTED" not in text
    assert 'herald_events_rejected_total{code="missing",type="training_program_started"} 1.0' in text


async def test_openapi_lists_every_route_and_docs_are_served_locally(client):
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path, method in [("/v1/event", "post"), ("/v1/events", "post"), ("/v1/actors/{key}", "get"),
                         ("/v1/notify", "post"), ("/v1/notify", "get"), ("/healthz", "get"), ("/metrics", "get")]:
        assert method in doc["paths"][path], (path, method)
    assert "training_program_finished" in doc["components"]["schemas"]["Event"]["description"]
    page = (await client.get("/docs")).text
    assert "/docs/static/swagger-ui-bundle.js" in page and "http" not in page.split("<body>")[1].replace("/openapi.json", "")
    asset = await client.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert b'PACKAGE_VERSION:"5.' in asset.content  # Swagger UI 5: the first to read OpenAPI 3.1
    assert (await client.get("/docs/static/swagger-editor-bundle.js")).status_code == 404  # only the two files


async def test_plugin_routes_are_mounted_and_documented():
    from quart import Blueprint

    from engine import hookimpl
    from web import json_body, operation

    class WithRoute:
        @hookimpl
        def herald_routes(self, context):
            bp = Blueprint("extra", __name__)

            @bp.get("/v1/extra/<int:n>")
            @operation("Double a number", responses={200: json_body({"type": "object"})})
            async def double(n):
                return {"n": n * 2, "customers": len(context.keys("extra"))}

            return bp

    async with app_client([("extra", WithRoute())]) as (_, client):
        assert (await client.get("/v1/extra/21")).json() == {"n": 42, "customers": 0}
        op = (await client.get("/openapi.json")).json()["paths"]["/v1/extra/{n}"]["get"]
        assert op["summary"] == "Double a number"
        assert op["parameters"][0] == {"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}}


async def test_ingestion_is_refused_until_ready():
    async with app_client() as (herald, client):
        herald.ready = False
        r = await client.post("/v1/event", json=LAUNCH)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert (await client.get("/healthz")).status_code == 503

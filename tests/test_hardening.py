"""What a single hostile or careless request can do: nothing that stops, fools or wedges Herald."""

from __future__ import annotations

import re
import shutil
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from engine import EventType, InvalidEvent, Origin, hookimpl
from engine._event import MAX_JSON_DEPTH, decode_json
from plugins.customers import hooks as customers
from plugins.fitness import hooks as fitness
from plugins.marketplace import hooks as marketplace

from .conftest import app_client


def nested(depth: int) -> bytes:
    """An event whose ``x`` field nests ``depth`` arrays (the event object itself adds one level)."""
    return (b'{"user_id":"u","type":"t","timestamp":"2021-02-28T16:00:00Z","x":' + b"[" * depth + b"]" * depth + b"}")


def test_decode_json_counts_real_nesting_not_brackets_in_strings():
    assert decode_json(b'{"a": "' + b"[" * 500 + b'"}') == {"a": "[" * 500}
    assert decode_json(nested(MAX_JSON_DEPTH - 1))["x"]  # the object plus 63 arrays: exactly the limit
    with pytest.raises(InvalidEvent) as refused:
        decode_json(nested(MAX_JSON_DEPTH))
    assert refused.value.code == "too_deep"
    wide = orjson.dumps([[{"k": [1]}] for _ in range(1000)])  # many brackets, shallow
    assert len(decode_json(wide)) == 1000


async def test_a_body_too_deep_for_the_journal_is_refused_and_ingestion_goes_on(tmp_path):
    """The reviewer's repro: 260 levels parse in orjson but cannot be journaled. It must be a 400
    that touches nothing, and later events must be accepted and durable (202, /healthz 200)."""
    async with app_client(durability="batch", data_dir=str(tmp_path)) as (herald, client):
        for depth in (260, MAX_JSON_DEPTH):
            refused = await client.post("/v1/event", content=nested(depth), headers={"content-type": "application/json"})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_deep"
        batch = await client.post("/v1/events", content=b"[" + nested(300) + b"]")
        assert batch.status_code == 400 and batch.json()["error"]["code"] == "too_deep"
        lines = nested(300) + b"\n" + orjson.dumps({"user_id": "v", "type": "t", "timestamp": "2021-02-28T16:00:00Z"})
        ndjson = await client.post("/v1/events", content=lines, headers={"content-type": "application/x-ndjson"})
        assert ndjson.status_code == 202
        assert [r["error"]["code"] for r in ndjson.json()["rejected"]] == ["too_deep"]
        assert herald.engine.actor("u") is None
        ok = await client.post("/v1/event", json={"user_id": "w", "type": "t", "timestamp": "2021-02-28T16:00:00Z"})
        assert ok.status_code == 202
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["journal"]["failed"] is None
        assert herald.journal.stats()["events"] == 2
        for path in ("/v1/notify", "/customers"):
            deep = await client.post(path, content=b'{"a":' + b"[" * 300 + b"]" * 300 + b"}",
                                     headers={"content-type": "application/json"})
            assert deep.status_code in (400, 404), (path, deep.text)


async def test_every_json_route_refuses_deep_bodies():
    async with app_client([("customers", customers)]) as (herald, client):
        deep = b'{"customer": {"id": 1, "attributes": {"email": ' + b"[" * 100 + b"]" * 100 + b"}}}"
        refused = await client.post("/customers", content=deep, headers={"content-type": "application/json"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_deep"
        refused = await client.post("/v1/notify", content=b"[" * 100 + b"]" * 100)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_deep"


@pytest.mark.parametrize("path", ["/v1/event", "/v1/events"])
@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
async def test_cross_site_simple_requests_get_415(client, path, media):
    body = orjson.dumps({"user_id": "u", "type": "app_launch", "timestamp": "2021-02-28T16:00:00Z"})
    refused = await client.post(path, content=body if path.endswith("event") else b"[" + body + b"]",
                                headers={"content-type": media})
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"]["code"] == "unsupported_media_type"
    assert (await client.get("/v1/actors/u")).status_code == 404


async def test_json_routes_refuse_text_plain():
    async with app_client([("customers", customers)]) as (_, client):
        body = orjson.dumps({"customer": {"id": 5, "attributes": {"email": "a@b.c"}}})
        refused = await client.post("/customers", content=body, headers={"content-type": "text/plain"})
        assert refused.status_code == 415
        assert (await client.post("/customers", content=body, headers={"content-type": "application/json"})).status_code == 201
        assert (await client.post("/v1/load/customers", content=b"", headers={"content-type": "text/plain"})).status_code == 415


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01 00:00:00+01:00"])
async def test_timestamps_with_extreme_offsets_are_400(client, stamp):
    for field in ("timestamp", "time_stamp"):
        response = await client.post("/v1/event", json={"user_id": "u", "type": "app_launch", field: stamp})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field


# -- where an event may come from -------------------------------------------------------------


class _Secret:
    name = "secret"

    @hookimpl
    def herald_event_types(self, config):
        return [EventType("secret.granted", lambda state, event: (state, ()), origin=Origin.INTERNAL),
                EventType("secret.asked", lambda state, event: (state, ()))]


async def test_internal_types_and_the_engines_own_are_refused_on_the_public_routes():
    async with app_client([_Secret()]) as (herald, client):
        for type_ in ("secret.granted", "herald.load", "herald.anything"):
            body = {"type": type_, "key": "k", "timestamp": "2021-02-28T16:00:00Z",
                    "data": {"loader": "customers", "body": "{}"}}
            single = await client.post("/v1/event", json=body)
            assert single.status_code == 400 and single.json()["error"]["code"] == "reserved", single.text
            assert single.json()["error"]["field"] == "type"
            batch = await client.post("/v1/events", json=[body])
            assert batch.status_code == 400 and batch.json()["rejected"][0]["error"]["code"] == "reserved"
        assert herald.engine.actor("k") is None
        accepted = herald.metrics.hot.accepted
        public = {"type": "secret.asked", "key": "k", "timestamp": "2021-02-28T16:00:00Z"}
        assert (await client.post("/v1/event", json=public)).status_code == 202
        # The same internal type from a source (in-process) is accepted.
        await herald.accept([{"type": "secret.granted", "key": "k", "timestamp": "2021-02-28T16:00:01Z"}])
        assert (accepted["secret.asked"], accepted["secret.granted"], accepted["herald.load"]) == (1, 1, 0)
        rejected = herald.metrics.render().decode()
        assert 'herald_events_rejected_total{code="reserved",type="secret.granted"} 2.0' in rejected


# -- a journal that cannot be written ----------------------------------------------------------


async def test_a_full_disk_is_a_truthful_503_and_herald_recovers_without_a_restart(tmp_path):
    """SQLite's own "database or disk is full" (a page limit on the journal's connection): the event
    whose commit failed, and every later one until the journal takes writes again, answer 503 and
    are not applied; /healthz says why; once the journal can be reopened Herald rebuilds the actors
    from it and accepts events again, all without a restart."""
    import trio

    async with app_client(durability="batch", data_dir=str(tmp_path), journal_retry=2.0) as (herald, client):
        def launch(user: str, padding: int = 0) -> dict:
            return {"user_id": user, "type": "app_launch", "timestamp": "2021-02-28T16:00:00Z", "pad": "x" * padding}

        assert (await client.post("/v1/event", json=launch("kept"))).status_code == 202
        pages = herald.journal.stats()["bytes"] // 4096
        herald.journal.add_write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 8}"))
        await herald.journal.commit()
        statuses = []
        for i in range(20):
            response = await client.post("/v1/event", json=launch(f"big{i}", 30_000))
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "journal_failed"
                assert response.json()["error"]["message"].startswith("not applied")
                break
        assert statuses[-1] == 503, statuses
        failed_user = f"big{len(statuses) - 1}"
        after = await client.post("/v1/event", json=launch("after"))
        assert after.status_code == 503 and after.json()["error"]["code"] in ("journal_failed", "not_ready")
        assert herald.engine.actor("after") is None  # refused before it was applied
        health = await client.get("/healthz")
        assert health.status_code == 503, health.text
        body = health.json()
        assert body["ready"] is False and body["status"] == "journal_failed"
        assert "full" in body["journal"]["failed"] and "full" in body["journal"]["journal_failure"]

        with trio.fail_after(30):  # the retry reopens the journal (without the page limit) and rebuilds
            while (await client.get("/healthz")).status_code != 200:
                await trio.sleep(0.05)
        assert herald.engine.actor(failed_user) is None  # its 503 said "not applied": it is not
        assert herald.engine.actor("kept") is not None and herald.engine.actor("big0") is not None
        assert (await client.post("/v1/event", json=launch("after"))).status_code == 202
        assert herald.engine.actor("after") is not None
        keys = {event.key for _, event, *_ in herald.journal.read_events(0)}
        assert failed_user not in keys and {"kept", "big0", "after"} <= keys


# -- open doors -------------------------------------------------------------------------------

TOKEN = "t0ken-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_with_an_admin_token_personal_data_and_writes_need_it(tmp_path):
    from plugins.crm import hooks as crm

    plugins = [("customers", customers), ("crm", crm)]
    async with app_client(plugins, admin_token=TOKEN) as (herald, client):
        await herald.accept([{"type": "attributes", "user_id": "7", "timestamp": 1560073640,
                              "id": "m1", "data": {"email": "seven@example.com"}}])
        attempts = [
            ("GET", "/v1/actors/7", None), ("GET", "/customers", None), ("GET", "/customers/7", None),
            ("POST", "/customers", {"customer": {"id": 8, "attributes": {"email": "e@x.y"}}}),
            ("PATCH", "/customers/7", {"customer": {"attributes": {"city": "X"}}}), ("DELETE", "/customers/7", None),
            ("POST", "/v1/notify", {"type": "nudge"}), ("GET", "/v1/notify", None),
            ("POST", "/v1/outbox/replay", {}), ("GET", "/mock-crm/users", None),
            ("POST", "/mock-crm/_outage", {"down": True}), ("DELETE", "/v1/subjects/u1", None),
        ]
        for method, path, body in attempts:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
            # A success forgets this address's failures: no lockout (see test_guessing_the_token_is_slowed_down).
            assert (await client.get("/v1/journal", headers=BEARER)).status_code == 200
        load = await client.post("/v1/load/customers", content=b"", headers={"content-type": "application/x-ndjson"})
        assert load.status_code == 401
        assert herald.engine.actor("8") is None
        # The scheme is case-insensitive; the token is not.
        assert (await client.get("/v1/actors/7", headers={"Authorization": f"bearer {TOKEN}"})).status_code == 200
        assert (await client.get("/customers/7", headers=BEARER)).json()["customer"]["attributes"]["email"]
        assert (await client.post("/mock-crm/_outage", json={"down": False}, headers=BEARER)).status_code == 200
        load = await client.post("/v1/load/customers", content=b"", headers={**BEARER, "content-type": "application/x-ndjson"})
        assert load.status_code == 200
        # What stays public: ingestion, health, metrics, docs.
        for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
            assert (await client.get(path)).status_code == 200, path


async def test_herald_delivers_to_its_own_sink_with_the_token_and_to_nobody_else():
    from engine import Notify
    from engine._outbox import NotifyExecutor
    from engine.testing import Receiver
    import httpx

    async with Receiver.running() as receiver, httpx.AsyncClient() as http:
        executor = NotifyExecutor(http, credentials={receiver.url + "/own": {"authorization": f"Bearer {TOKEN}"}})
        await executor(Notify(receiver.url + "/own/v1/notify", {"n": 1}, "k1"))
        await executor(Notify(receiver.url + "/elsewhere", {"n": 2}, "k2"))
        own, other = await receiver.wait_for(2)
        assert own["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert "authorization" not in other["headers"]
    from engine import Config
    from engine.host import Herald

    default = Herald(Config(admin_token=TOKEN, durability="memory", port=8123)).outbox.executors[Notify]
    assert default.credentials == {"http://127.0.0.1:8123/v1/notify": {"authorization": f"Bearer {TOKEN}"}}
    configured = Herald(Config(admin_token=TOKEN, durability="memory", notify_url="http://x.test/n"))
    assert configured.outbox.executors[Notify].credentials == {}


async def test_the_customers_ui_asks_for_the_token_once_and_every_form_needs_its_csrf_token():

    async with app_client([("customers", customers)], admin_token=TOKEN) as (herald, client):
        await herald.accept([{"type": "attributes", "user_id": "7", "timestamp": 1560073640,
                              "id": "m1", "data": {"email": "seven@example.com"}}])
        page = await client.get("/ui/customers/7")
        assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/customers/7"
        assert (await client.post("/ui/customers/7/edit", data={"rows": "0"})).status_code == 401
        form = await client.get("/ui/login?next=/ui/customers/7")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
        assert "HttpOnly" in form.headers["set-cookie"] and "SameSite=Strict" in form.headers["set-cookie"]
        wrong = await client.post("/ui/login", data={"csrf": csrf, "token": "nope", "next": "/ui/customers/7"})
        assert wrong.status_code == 401 and "herald_session" not in wrong.headers.get("set-cookie", "")
        forged = await client.post("/ui/login", data={"csrf": "forged", "token": TOKEN})
        assert forged.status_code == 403
        offsite = await client.post("/ui/login", data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"})
        assert offsite.status_code == 303 and offsite.headers["location"] == "/ui"
        cookie = offsite.headers["set-cookie"]
        assert "herald_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await client.get("/ui/customers/7")).status_code == 200
        edit = await client.get("/ui/customers/7/edit")
        token = re.search(r'name="csrf" value="([^"]+)"', edit.text)[1]
        fields = {"rows": "1", "name-0": "email", "value-0": "new@example.com", "orig-0": "seven@example.com",
                  "new_rows": "0"}
        refused = await client.post("/ui/customers/7/edit", data=fields)  # no CSRF token
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        assert herald.engine.actor("7").states["customers"].attributes["email"] == "seven@example.com"
        saved = await client.post("/ui/customers/7/edit", data={**fields, "csrf": token})
        assert saved.status_code == 303
        assert herald.engine.actor("7").states["customers"].attributes["email"] == "new@example.com"


def test_a_public_bind_without_a_token_is_refused_in_one_line():
    from .test_cli import run

    refused = run("serve", "--host", "0.0.0.0", "--port", "1", env={"HERALD_DATA_DIR": "/nonexistent"})
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "HERALD_ADMIN_TOKEN" in refused.stderr and "--insecure" in refused.stderr
    from engine.cli import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost") and _loopback("127.8.0.1")
    assert not _loopback("0.0.0.0") and not _loopback("::") and not _loopback("192.0.2.1") and not _loopback("example.com")


# -- secrets never leave the process ----------------------------------------------------------


def test_urls_are_shown_without_their_credentials():
    from engine import redact_text, redact_url

    assert redact_url("https://bob:hunter2@crm.example/api?key=s3cret&v=2") == "https://bob:***@crm.example/api?key=***&v=***"
    assert redact_url("http://tok3n@h:9/x") == "http://***@h:9/x" and redact_url("http://h/p") == "http://h/p"
    text = "ConnectError: http://u:pw@127.0.0.1:9/feed?key=abc, then (http://h/x)."
    assert redact_text(text) == "ConnectError: http://u:***@127.0.0.1:9/feed?key=***, then (http://h/x)."


async def test_healthz_logs_and_delivery_errors_never_show_configured_secrets(tmp_path):
    import httpx
    import trio

    from .conftest import herald_process

    secrets = ("hunter2", "s3cret", "n0tify", "qu3ry")
    env = {"HERALD_MARKETPLACE_PROVIDER_URL": "http://feed:hunter2@127.0.0.1:9/feed?key=s3cret",
           "HERALD_MARKETPLACE_POLL_SECONDS": "0.2", "HERALD_CRM_URL": "http://crm:hunter2@127.0.0.1:9/?k=s3cret",
           "HERALD_NOTIFY_URL": "http://hook:n0tify@127.0.0.1:9/hook?sig=qu3ry", "HERALD_ADMIN_TOKEN": TOKEN,
           "HERALD_LOG_LEVEL": "INFO", "HERALD_OUTBOX_DELAYS": "0.1", "HERALD_OUTBOX_MAX_AGE": "0.3"}
    async with herald_process(tmp_path, **env) as url, httpx.AsyncClient() as client:
        finished = {"user_id": "u", "type": "training_program_finished", "training_program_id": "p",
                    "timestamp": "2021-02-28T17:00:00Z"}
        started = {**finished, "type": "training_program_started", "timestamp": "2021-02-28T16:00:00Z"}
        for event in (started, finished):
            assert (await client.post(url + "/v1/event", json=event)).status_code == 202
        with trio.fail_after(20):  # the poller and the delivery both fail against port 9
            while True:
                health = (await client.get(url + "/healthz")).text
                dead = (await client.get(url + "/v1/outbox?status=dead", headers=BEARER)).text
                if '"last_error":"ConnectError' in health.replace(" ", "") and '"error":' in dead and "answered" not in dead:
                    if orjson.loads(dead)["effects"]:
                        break
                await trio.sleep(0.1)
        assert "feed:***@127.0.0.1:9/feed?key=***" in health
        for secret in secrets:
            assert secret not in health and secret not in dead, secret
    log = (tmp_path / "herald.log").read_text()
    assert "hook:***@127.0.0.1:9/hook?sig=***" in log  # the start line says where notifications go
    for secret in (*secrets, TOKEN):
        assert secret not in log, secret


def test_sign_in_redirects_stay_on_this_server():
    from web import safe_next

    for target in ("/\\evil.example", "//evil.example", "/\\/evil.example", "https://evil.example/x", "/a\\b",
                   "/ok\x00", "ui/customers", "", None):
        assert safe_next(target) == "/ui", target
    assert safe_next("/ui/customers/7?saved=1") == "/ui/customers/7?saved=1"


def _order(key: str, event_id: str = "order-1001") -> dict:
    return {"id": event_id, "key": key, "type": "ping", "timestamp": "2021-02-28T16:00:00Z"}


async def test_an_event_id_used_for_one_key_does_not_suppress_another_keys_event():
    """Issue 23, item 8: ids are idempotency keys per actor key, so whoever posts an id first
    neither drops another key's event with that id nor learns that the id was used."""
    async with app_client() as (herald, client):
        first = await client.post("/v1/event", json=_order("mallory"))
        assert first.status_code == 202 and "duplicate" not in first.json()
        victim = await client.post("/v1/event", json=_order("alice"))
        assert victim.status_code == 202 and victim.json() == {"id": "order-1001"}  # not "duplicate": applied
        assert herald.engine.actor("alice").unknown == {"ping": 1}
        batch = await client.post("/v1/events", json=[_order("bob"), _order("mallory"), _order("alice", "order-7")])
        assert batch.status_code == 202 and batch.json()["duplicates"] == ["order-1001"]  # mallory's own repeat only
        assert herald.engine.actor("bob").unknown == {"ping": 1}
        again = await client.post("/v1/event", json=_order("alice"))  # a retry of the same (key, id)
        assert again.status_code == 202 and again.json() == {"id": "order-1001", "duplicate": True}
        assert herald.engine.actor("alice").unknown == {"ping": 2}  # order-1001 once, order-7 once
        assert herald.engine.actor("mallory").unknown == {"ping": 1}


async def test_ids_stay_scoped_by_key_after_a_restart_from_a_snapshot_and_from_the_journal(tmp_path):
    import sqlite3

    from engine._journal import DB_NAME

    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with app_client(durability="batch", data_dir=str(live)) as (herald, client):
        for key in ("mallory", "alice"):
            assert (await client.post("/v1/event", json=_order(key))).json() == {"id": "order-1001"}
        await herald.snapshot()
        for key in ("mallory", "alice"):  # after the snapshot: in the journal only, until the stop
            assert (await client.post("/v1/event", json=_order(key, "order-2002"))).json() == {"id": "order-2002"}
        await herald.journal.commit()
        crashed.mkdir()
        with sqlite3.connect(live / DB_NAME) as a, sqlite3.connect(crashed / DB_NAME) as b:
            a.backup(b)  # what a crash leaves: order-2002 is replayed from the journal's rows
    for data_dir, replayed in ((live, 0), (crashed, 2)):  # the stop wrote a last snapshot: nothing to replay
        async with app_client(durability="batch", data_dir=str(data_dir)) as (herald, client):
            assert herald.progress["replayed"] == replayed
            for event_id in ("order-1001", "order-2002"):
                for key in ("mallory", "alice"):
                    repeat = await client.post("/v1/event", json=_order(key, event_id))
                    assert repeat.json() == {"id": event_id, "duplicate": True}, (data_dir, key, event_id)
                fresh = await client.post("/v1/event", json=_order("bob", event_id))
                assert fresh.json() == {"id": event_id}, (data_dir, event_id)
            assert herald.engine.actor("bob").unknown == {"ping": 2}


# -- what a browser may do with an answer: security headers ------------------------------------

#: At least 16 characters (the floor a token must meet).
PAGE_TOKEN = "headers-and-proxies-t0ken"
PAGE_BEARER = {"Authorization": f"Bearer {PAGE_TOKEN}"}
#: The plugins with web pages and raw routes (every installed one would start slower).
PAGE_PLUGINS = [fitness, ("customers", customers), marketplace]
#: Sample values for the path parameters of every GET route (an actor and a customer that exist).
SAMPLES = {"key": "runner-1", "raw_id": "7", "filename": "herald.css", "event_id": "e1", "error_id": "1",
           "user_id": "runner-1", "entity_id": "1", "name": "n"}
ASSETS = {"/docs/static/<path:filename>": "/docs/static/swagger-ui.css"}
SECURITY = {"content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
            "x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@asynccontextmanager
async def served(plugins=None, **settings):
    """A Herald with ``plugins`` (default: every installed one), in memory: ``(herald, app, connect)``, where
    ``connect(peer)`` is an httpx client whose requests come from the address ``peer`` (as hypercorn gives it)."""
    import httpx

    from engine import Config
    from engine.host import Herald
    from engine._plugins import PluginHost
    from server import create_app

    config = Config(durability="memory", **settings)
    herald = Herald(config, None if plugins is None else PluginHost.from_objects(config, plugins))
    app = create_app(herald)

    def connect(peer: str = "127.0.0.1") -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 50123)),
                                 base_url="http://herald.test")

    async with herald.running():
        await herald.wait_ready()
        yield herald, app, connect


def iso_utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _sample_path(rule: str) -> str:
    return ASSETS.get(rule) or re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", lambda m: SAMPLES[m[1]], rule)


async def test_every_html_page_carries_the_security_headers_and_loads_nothing_inline():
    """Generated from the app's routes (plugins' pages included): every HTML answer has the strict policy,
    and no page has an inline script, style or event handler that the policy would block."""
    async with served(PAGE_PLUGINS, admin_token=PAGE_TOKEN) as (herald, app, connect), connect() as client:
        await herald.accept([{"type": "attributes", "user_id": "7", "timestamp": 1560073640, "id": "m1",
                              "data": {"email": "seven@example.com"}},
                             {"type": "app_launch", "user_id": "runner-1", "timestamp": iso_utc_now(), "id": "m2"}])
        pages = {}
        for rule in app.app.url_map.iter_rules():
            if "GET" in rule.methods and rule.endpoint != "static":
                answer = await client.get(_sample_path(rule.rule), headers=PAGE_BEARER)
                assert answer.headers.get("x-content-type-options") == "nosniff", rule.rule
                if answer.headers.get("content-type", "").startswith("text/html"):
                    pages[rule.rule] = answer
        # Signed out: the sign-in page, the redirect to it, a refused form.
        pages["redirect"] = await client.get("/ui/customers/7")
        pages["login"] = await client.get("/ui/login")
        pages["refused"] = await client.post("/ui/login", data={"csrf": "forged", "token": PAGE_TOKEN})
    assert {"/ui", "/ui/actors", "/ui/actors/<actor_key:key>", "/ui/deliveries", "/ui/events", "/ui/customers",
            "/ui/customers/<raw_id>", "/ui/customers/<raw_id>/edit", "/docs"} <= set(pages), sorted(pages)
    assert [pages[p].status_code for p in ("redirect", "login", "refused")] == [303, 200, 403]
    for name, answer in pages.items():
        assert {h: answer.headers.get(h) for h in SECURITY} == SECURITY, name
        if answer.status_code == 200:
            html = answer.text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), name  # every script is a file
            assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), name  # no inline style or handler
    assert "SwaggerUIBundle" not in pages["/docs"].text


async def test_json_error_and_raw_answers_carry_nosniff():
    """Answers of the ingestion fast path, of Quart's routes and errors, and of plugins' raw ASGI routes."""
    async with served(PAGE_PLUGINS, admin_token=PAGE_TOKEN) as (_, _app, connect), connect() as client:
        event = {"type": "app_launch", "user_id": "u", "timestamp": iso_utc_now()}
        answers = {
            "202": await client.post("/v1/event", json=event),
            "400 fast": await client.post("/v1/event", content=b"{", headers={"content-type": "application/json"}),
            "405 fast": await client.get("/v1/events"),
            "401 load": await client.post("/v1/load/customers", content=b"x"),
            "404": await client.get("/no/such/page"),
            "405": await client.delete("/healthz"),
            "401": await client.get("/v1/outbox"),
            "415": await client.post("/v1/notify", content=b"{}", headers={"content-type": "text/plain",
                                                                          **PAGE_BEARER}),
            "raw route": await client.get("/search"),
            "metrics": await client.get("/metrics"),
            "script": await client.get("/docs/explorer.js"),
        }
    assert [a.status_code for a in list(answers.values())[:8]] == [202, 400, 405, 401, 404, 405, 401, 415]
    for name, answer in answers.items():
        assert answer.headers.get("x-content-type-options") == "nosniff", name
    assert answers["404"].headers["content-security-policy"] == SECURITY["content-security-policy"]
    assert answers["script"].headers["content-type"].startswith("text/javascript")
    assert 'url: "/openapi.json"' in answers["script"].text


# -- behind a reverse proxy: the scheme and client address a trusted proxy reports --------------


class _WhoAmI:
    """A plugin's route (Quart) and raw ASGI route that say what Herald makes of the client."""

    name = "whoami"

    @hookimpl
    def herald_routes(self, context):
        from quart import Blueprint, request

        from web import client_address, request_is_https

        bp = Blueprint("whoami", __name__)

        @bp.get("/whoami")
        async def whoami():
            return {"client": client_address(), "https": request_is_https(), "scheme": request.scheme}

        return bp

    @hookimpl
    def herald_asgi_routes(self, context):
        from web import client_address, respond_json

        async def raw(scope, receive, send):
            await respond_json(send, 200, {"client": client_address(scope), "scheme": scope["scheme"]})

        return {"/whoami-raw": raw}


async def test_cookies_are_secure_when_a_trusted_proxy_says_https_and_not_when_an_untrusted_peer_says_it():
    https = {"X-Forwarded-Proto": "https"}
    async with served([fitness], admin_token=PAGE_TOKEN, trusted_proxies="10.0.0.0/8, 2001:db8::1") as (_, _app, connect):
        async with connect("10.1.2.3") as proxied, connect("192.0.2.7") as direct, connect("2001:db8::1") as proxied6:
            form = await proxied.get("/ui/login", headers=https)
            assert "herald_csrf=" in form.headers["set-cookie"] and "Secure" in form.headers["set-cookie"]
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
            seed = form.headers["set-cookie"].split(";")[0]  # (httpx keeps a Secure cookie from http:// URLs)
            signed = await proxied.post("/ui/login", headers={**https, "Cookie": seed},
                                        data={"csrf": csrf, "token": PAGE_TOKEN})
            assert signed.status_code == 303 and signed.headers["location"] == "/ui"
            assert "herald_session=" in signed.headers["set-cookie"] and "Secure" in signed.headers["set-cookie"]
            assert "Secure" in (await proxied6.get("/ui/login", headers=https)).headers["set-cookie"]
            # The same proxy over plain HTTP, and anyone else saying https: no Secure (a browser on
            # http:// would drop a Secure cookie, and the peer's word is worth nothing).
            for client, headers in ((proxied, {}), (direct, https), (direct, {"X-Forwarded-Proto": "HTTPS"})):
                client.cookies.clear()
                cookie = (await client.get("/ui/login", headers=headers)).headers["set-cookie"]
                assert "herald_csrf=" in cookie and "Secure" not in cookie, (headers, cookie)
    async with served([fitness], admin_token=PAGE_TOKEN) as (_, _app, connect), connect("10.1.2.3") as client:
        cookie = (await client.get("/ui/login", headers=https)).headers["set-cookie"]
        assert "Secure" not in cookie  # no proxy is trusted unless configured


async def test_the_client_address_comes_from_x_forwarded_for_only_from_a_trusted_proxy():
    async def who(connect, peer, headers):
        async with connect(peer) as client:
            quart = (await client.get("/whoami", headers=headers)).json()
            raw = (await client.get("/whoami-raw", headers=headers)).json()
        assert raw == {"client": quart["client"], "scheme": quart["scheme"]}  # the fast path agrees
        return quart["client"], quart["scheme"]

    chain = {"X-Forwarded-For": "198.51.100.66, 203.0.113.9, 10.0.0.3", "X-Forwarded-Proto": "https"}
    plugins = [_WhoAmI()]
    async with served(plugins, trusted_proxies="10.0.0.0/8") as (_, _app, connect):
        # One proxy: the address it saw. Two (both trusted): the first untrusted from the right; what
        # the client itself put first (198.51.100.66) is not believed.
        assert await who(connect, "10.0.0.2", {"X-Forwarded-For": "203.0.113.9"}) == ("203.0.113.9", "http")
        assert await who(connect, "10.0.0.2", chain) == ("203.0.113.9", "https")
        assert await who(connect, "::ffff:10.0.0.2", chain) == ("203.0.113.9", "https")  # a dual-stack socket
        # Untrusted peers: their headers are ignored.
        assert await who(connect, "192.0.2.7", chain) == ("192.0.2.7", "http")
        assert await who(connect, "11.0.0.2", chain) == ("11.0.0.2", "http")
        # A trusted proxy's nonsense is ignored; Forwarded (RFC 7239) is not read at all.
        assert await who(connect, "10.0.0.2", {"X-Forwarded-For": "unknown", "X-Forwarded-Proto": "gopher"}) == (
            "10.0.0.2", "http")
        assert await who(connect, "10.0.0.2", {"Forwarded": "for=203.0.113.9;proto=https"}) == ("10.0.0.2", "http")
    async with served(plugins) as (_, _app, connect):  # none trusted by default
        assert await who(connect, "10.0.0.2", chain) == ("10.0.0.2", "http")


def test_the_trusted_proxies_setting_is_validated_with_a_clear_error(monkeypatch, capsys):
    from engine import Config, ConfigError
    from server import main

    parsed = Config.from_env({"HERALD_TRUSTED_PROXIES": " 10.0.0.1, 192.168.0.0/16,,::1 "}).trusted_proxies
    assert [str(n) for n in parsed] == ["10.0.0.1/32", "192.168.0.0/16", "::1/128"]
    assert Config.from_env({}).trusted_proxies == ()
    for value, problem in (("10.0.0.0/33", "'10.0.0.0/33' is neither an IP address nor a network in CIDR notation"),
                           ("10.0.0.1, nginx", "'nginx' is neither an IP address nor a network in CIDR notation"),
                           ("10.1.2.3/8", "'10.1.2.3/8' has host bits set: the network is 10.0.0.0/8")):
        with pytest.raises(ConfigError) as refused:
            Config.from_env({"HERALD_TRUSTED_PROXIES": value})
        assert str(refused.value).startswith(f"HERALD_TRUSTED_PROXIES={value!r}: {problem}"), refused.value
    monkeypatch.setenv("HERALD_TRUSTED_PROXIES", "10.0.0.0/33")
    assert main(["serve", "--port", "1"]) == 2  # refused before anything starts, in one line
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("herald: HERALD_TRUSTED_PROXIES='10.0.0.0/33': "), error


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None, reason="needs nginx and openssl")
async def test_behind_the_documented_nginx_the_cookies_are_secure(tmp_path):
    """docs/security.md's nginx block, as written but for ports and certificate, ends TLS in front of a
    real ``herald serve`` that trusts it: the browser's cookies are Secure, and signing in works."""
    import subprocess

    import httpx
    import trio

    from .conftest import free_port, herald_process

    docs = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    [server] = re.findall(r"```nginx\n(.*?)```", docs, re.S)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    port = free_port()
    async with herald_process(tmp_path, HERALD_ADMIN_TOKEN=PAGE_TOKEN, HERALD_TRUSTED_PROXIES="127.0.0.1") as url:
        server = (server.replace("listen 443 ssl", f"listen 127.0.0.1:{port} ssl")
                  .replace("/etc/ssl/herald.example.com.crt", str(tmp_path / "cert.pem"))
                  .replace("/etc/ssl/herald.example.com.key", str(tmp_path / "key.pem"))
                  .replace("http://127.0.0.1:8000", url))
        temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/nginx.log;\n"
                                             f"events {{}}\nhttp {{ access_log off; {temp}\n{server}}}\n")
        nginx = subprocess.Popen(["nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=False) as browser:
                with trio.fail_after(10):
                    while True:
                        assert nginx.poll() is None, (tmp_path / "nginx.log").read_text()
                        try:
                            form = await browser.get("/ui/login")
                            break
                        except httpx.TransportError:
                            await trio.sleep(0.05)
                assert "Secure" in form.headers["set-cookie"] and form.headers["strict-transport-security"]
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
                signed = await browser.post("/ui/login", data={"csrf": csrf, "token": PAGE_TOKEN})
                assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]
                assert (await browser.get("/ui")).status_code == 200  # the Secure session cookie came back over https
            async with httpx.AsyncClient(base_url=url) as direct:  # Herald itself, over http: no Secure
                assert "Secure" not in (await direct.get("/ui/login")).headers["set-cookie"]
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)


# -- what a token guards never enters as a public type (issue 23: 1) ---------------------------


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


async def test_customers_cannot_be_deleted_or_stripped_of_their_email_without_the_token():
    """The exploit: customers.delete / customers.update (email null) through the public ingestion routes."""
    async with app_client([("customers", customers)], admin_token=TOKEN) as (herald, client):
        created = await client.post("/customers", json={"customer": {"id": 5555, "attributes": {"email": "a@b.c"}}},
                                    headers=BEARER)
        assert created.status_code == 201, created.text
        delete = {"type": "customers.delete", "key": "5555", "timestamp": _now_iso()}
        strip = {"type": "customers.update", "key": "5555", "timestamp": _now_iso(),
                 "data": {"attributes": {"email": None}}}
        for event in (delete, strip):
            single = await client.post("/v1/event", json=event)
            assert single.status_code == 400 and single.json()["error"]["code"] == "reserved", single.text
        batch = await client.post("/v1/events", json=[delete, strip])
        assert batch.status_code == 400 and batch.json()["accepted"] == 0
        assert [r["error"]["code"] for r in batch.json()["rejected"]] == ["reserved", "reserved"]
        ndjson = await client.post("/v1/events", content=orjson.dumps(strip) + b"\n" + orjson.dumps(delete),
                                   headers={"content-type": "application/x-ndjson"})
        assert [r["error"]["code"] for r in ndjson.json()["rejected"]] == ["reserved", "reserved"]
        shown = await client.get("/customers/5555", headers=BEARER)
        assert shown.status_code == 200 and shown.json()["customer"]["attributes"]["email"] == "a@b.c"
        # The API itself still writes them (behind the token).
        patched = await client.patch("/customers/5555", json={"customer": {"attributes": {"city": "Oslo"}}},
                                     headers=BEARER)
        assert patched.status_code == 200 and patched.json()["customer"]["attributes"]["city"] == "Oslo"
        assert (await client.delete("/customers/5555", headers=BEARER)).status_code == 204
        assert (await client.get("/customers/5555", headers=BEARER)).status_code == 404


async def test_every_type_a_guarded_route_writes_is_refused_on_the_public_routes():
    """Generated from the OpenAPI document of a Herald with every bundled plugin: each type an operation
    behind a credential declares it writes (x-herald-writes) is refused by POST /v1/event and /v1/events."""
    import importlib

    from engine.host import available_plugins

    plugins = [(name, importlib.import_module(module)) for name, module in available_plugins().items()]
    async with app_client(plugins, admin_token=TOKEN) as (herald, client):
        document = (await client.get("/openapi.json")).json()
        written: dict[str, set[str]] = {}
        for path, ops in document["paths"].items():
            for method, op in ops.items():
                if op.get("security"):
                    for type_ in op.get("x-herald-writes", ()):
                        written.setdefault(type_, set()).add(f"{method.upper()} {path}")
        assert {"customers.create", "customers.update", "customers.delete", "crm.erase", "herald.load",
                "analytics.client_created", "analytics.client_revoked"} <= set(written), written
        assert "DELETE /customers/{raw_id}" in written["customers.delete"]
        events = [{"type": type_, "key": "k", "timestamp": _now_iso(), "data": {"attributes": {"email": "e@x.y"}}}
                  for type_ in sorted(written)]
        for event in events:
            single = await client.post("/v1/event", json=event)
            assert single.status_code == 400 and single.json()["error"]["code"] == "reserved", (event, single.text)
        batch = await client.post("/v1/events", json=events)
        assert batch.status_code == 400, batch.text
        assert [r["error"]["code"] for r in batch.json()["rejected"]] == ["reserved"] * len(events)
        assert herald.engine.actor("k") is None


class _Leaky:
    """A plugin whose admin route writes a public type (declared or not)."""

    name = "leaky"

    def __init__(self, declare: tuple[str, ...] = ("leaky.set",)) -> None:
        self.declare = declare

    @hookimpl
    def herald_event_types(self, config):
        return [EventType("leaky.set", lambda state, event: (state, ())),
                EventType("leaky.kept", lambda state, event: (state, ()), origin=Origin.INTERNAL)]

    @hookimpl
    def herald_routes(self, context):
        from datetime import datetime, timezone

        from quart import Blueprint, request

        from engine import Event
        from web import admin_guard, json_response, operation

        bp = Blueprint("leaky", __name__, url_prefix="/leaky")
        bp.before_request(admin_guard(context.config.admin_token))

        @bp.post("/<type_>")
        @operation("Write one event", writes=self.declare)
        async def write(type_: str):
            now = datetime.now(timezone.utc)
            await context.accept([Event(request.args.get("id", "e1"), type_, "k", now, {}, now)])
            return json_response({}, 202)

        return [bp]


@pytest.mark.parametrize(("token", "declared"), [(TOKEN, ("leaky.set",)), (None, ("leaky.kept", "nobody.declares.this"))])
def test_a_guarded_route_that_declares_a_public_type_is_refused_when_the_app_is_built(token, declared):
    from engine import Config, PluginError
    from engine.host import Herald, PluginHost
    from server import create_app

    config = Config(durability="memory", admin_token=token)
    with pytest.raises(PluginError) as refused:
        create_app(Herald(config, PluginHost.from_objects(config, [_Leaky(declared)])))
    message = str(refused.value)
    assert "\n" not in message and "POST /leaky/{type_}" in message and declared[-1] in message, message
    assert "Origin.INTERNAL" in message
    create_app(Herald(config, PluginHost.from_objects(config, [_Leaky(("leaky.kept", "herald.load"))])))


async def test_a_guarded_request_that_accepts_a_public_type_undeclared_is_refused_and_logged(caplog):
    import logging

    async with app_client([_Leaky(())], admin_token=TOKEN) as (herald, client):
        with caplog.at_level(logging.ERROR):
            refused = await client.post("/leaky/leaky.set", headers=BEARER)
        assert refused.status_code == 500 and herald.engine.actor("k") is None
        assert "POST /leaky/{type_} is behind a credential check but wrote 'leaky.set', a public event type" in caplog.text
        assert (await client.post("/leaky/leaky.kept", headers=BEARER)).status_code == 202
        assert herald.engine.actor("k") is not None
        # Outside a guarded request the same context writes public types (a plugin's sources do).
        from datetime import datetime, timezone

        from engine import Event

        now = datetime.now(timezone.utc)
        await herald.context.accept([Event("e2", "leaky.set", "k2", now, {}, now)])
        assert herald.engine.actor("k2") is not None


# -- a batch's answer is bounded (issue 23: 7) --------------------------------------------------


async def test_a_big_bad_batch_gets_a_small_answer_that_counts_every_line(client):
    body = b"x\n" * 30_000  # 60 KB of lines that are not JSON (100k of them answered 14.6 MB)
    refused = await client.post("/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "no_valid_events"
    assert len(refused.content) < 16_000, len(refused.content)
    answer = refused.json()
    assert (answer["rejected_count"], answer["rejected_by_code"], answer["rejected_truncated"]) == (
        30_000, {"malformed_json": 30_000}, True)
    assert [r["line"] for r in answer["rejected"]] == list(range(1, 101))
    assert "first 100" in answer["error"]["message"]


async def test_a_batch_lists_its_first_rejected_lines_whichever_pass_refused_them(client):
    """Odd lines are not JSON (refused while reading), even lines lack a type (refused by the parse)."""
    good = orjson.dumps({"user_id": "u", "type": "app_launch", "timestamp": "2021-02-28T16:00:00Z"})
    lines = [b"{" if n % 2 else b'{"user_id": "u", "timestamp": "2021-02-28T16:00:00Z"}' for n in range(1, 301)]
    accepted = await client.post("/v1/events", content=b"\n".join([*lines, good]),
                                 headers={"content-type": "application/x-ndjson"})
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1
    answer = accepted.json()
    assert [r["line"] for r in answer["rejected"]] == list(range(1, 101))
    assert [r["error"]["code"] for r in answer["rejected"][:2]] == ["malformed_json", "missing"]
    assert answer["rejected_count"] == 300 and answer["rejected_truncated"] is True
    assert answer["rejected_by_code"] == {"malformed_json": 150, "missing": 150}
    few = await client.post("/v1/events", json=[{"type": "t"}, orjson.loads(good)])
    assert few.json()["rejected_truncated"] is False and few.json()["rejected_count"] == 1
    assert few.json()["rejected_by_code"] == {"missing": 1}


# -- keys that come back whole (issue 23: 9) -----------------------------------------------------

#: Keys a link must carry as they are ("/", "?", "#", "%2F", dot segments, a leading "/", RTL letters, NUL).
ODD_KEYS = ["..", ".", "../../v1/journal", "a/b", "/lead", "trail/", "a//b", "a%2Fb", "%2e%2e", "a?b=1", "a#top",
            "a&b=c+d", "a\\b", " spaced ", "שלום", "nul\x00x", "rtl\u202eabc"]
#: What URL parsers take for "." and ".." segments (the WHATWG URL standard: "%2e" too, in any case).
_DOT_SEGMENTS = {".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"}


def _resolve(page_url: str, href: str) -> str:
    """Where a browser goes from ``page_url`` following ``href`` (urljoin, plus the encoded dot segments)."""
    import html
    from urllib.parse import urljoin, urlsplit

    href = html.unescape(href)
    assert not {s.lower() for s in urlsplit(href).path.split("/")} & _DOT_SEGMENTS, href
    return urljoin(page_url, href)


async def test_every_console_link_to_an_actor_comes_back_to_that_exact_key():
    """Keys as an old journal may hold them (put in-process: NUL and bidi controls are refused at the
    door now). Each actor's clock is its own minute: the page a link leads to, and that page's JSON
    twin, show that actor's. The key search and the events tail link the same way."""
    import html
    import re
    from datetime import datetime, timedelta, timezone
    from urllib.parse import quote

    from engine import Event

    start = datetime(2021, 2, 28, 16, 0, tzinfo=timezone.utc)
    minute = {key: start + timedelta(minutes=n) for n, key in enumerate(ODD_KEYS)}
    async with app_client() as (herald, client):
        await herald.accept([Event(f"odd-{n}", "app_launch", key, minute[key], {}, minute[key])
                             for n, key in enumerate(ODD_KEYS)])
        listing_url = "http://herald.test/ui/actors?plugin=fitness&per_page=500"
        listing = (await client.get(listing_url)).text
        links = {html.unescape(text): _resolve(listing_url, href)
                 for href, text in re.findall(r'<li><a href="([^"]+)">(.*?)</a>', listing, re.S)}
        assert set(links) == set(ODD_KEYS)
        for key in ODD_KEYS:
            clock = minute[key].strftime("%Y-%m-%d %H:%M:%S UTC")
            page = await client.get(links[key])
            assert page.status_code == 200, (key, links[key], page.text[:300])
            assert html.unescape(re.search(r"<h1>(.*?)</h1>", page.text, re.S)[1]) == f"Actor {key}", key
            assert f'data-figure="clock">{clock}<' in page.text, key
            twin = await client.get(_resolve(links[key], re.search(r'data-live="([^"]+)"', page.text)[1]))
            assert twin.status_code == 200 and twin.json()["figures"]["clock"] == clock, key  # the live refresh
            if key.strip() == key:
                found = await client.get("/ui/actors", params={"key": key})  # the search box
                assert found.status_code == 303 and _resolve(str(found.url), found.headers["location"]) == links[key]
            if key not in (".", ".."):  # the API takes the same segment (no client sends these two as one)
                answer = await client.get("/v1/actors/" + quote(key, safe=""))
                assert answer.status_code == 200 and answer.json()["key"] == key, key
        # The tail of ingestion links the keys of its events the same way.
        typed = [key for key in ODD_KEYS if key.isprintable()]
        sent = [{"key": key, "type": "app_launch", "timestamp": minute[key].isoformat()} for key in typed]
        assert (await client.post("/v1/events", json=sent)).status_code == 202
        tail_url = "http://herald.test/ui/events"
        rows = re.findall(r'<td class="wrap"><a href="([^"]+)">(.*?)</a>', (await client.get(tail_url)).text, re.S)
        assert {html.unescape(text): _resolve(tail_url, href) for href, text in rows} == {k: links[k] for k in typed}


async def test_keys_with_control_characters_or_nothing_but_whitespace_are_refused_at_every_door():
    from urllib.parse import quote

    from plugins.fitness import hooks as fitness

    async with app_client([fitness, ("customers", customers)]) as (herald, client):
        for key in ("a\x00b", "\x00", "line\nbreak", "tab\there", "esc\x1b[31m", "del\x7f", "c1\x85", "rtl\u202eabc",
                    "iso\u2066x\u2069", "lrm\u200e", "ls\u2028", " ", "   ", "\t\n", "\u3000", "\u00a0"):
            for shape in ({"key": key, "timestamp": "2021-02-28T16:00:00Z"},  # the fast parse
                          {"user_id": key, "timestamp": 1614528000}):  # the checked parse (epoch seconds)
                event = {"type": "app_launch", **shape}
                single = await client.post("/v1/event", json=event)
                assert single.status_code == 400, (key, single.text)
                error = single.json()["error"]
                assert error["field"] == "key" and error["code"] in ("control_character", "blank"), error
                batch = await client.post("/v1/events", json=[event])
                assert batch.status_code == 400 and batch.json()["rejected"][0]["error"]["field"] == "key"
            assert (await client.get("/v1/actors/" + quote(key, safe=""))).status_code == 404, key
        # Printable keys stay accepted, spaces and joiners inside them too.
        for key in (" leading space", "שלום", "family \U0001F468\u200d\U0001F469", "nbsp\u00a0inside", "../x"):
            sent = {"key": key, "type": "app_launch", "timestamp": "2021-02-28T16:00:00Z"}
            assert (await client.post("/v1/event", json=sent)).status_code == 202, key
            assert herald.engine.actor(key) is not None
        # The customers' loader and message lines take only customer ids (digits): they refuse the same keys.
        lines = b"\n".join(orjson.dumps({"type": "attributes", "user_id": key, "timestamp": 1560073640, "id": f"m{n}",
                                         "data": {"email": "x@y.z"}})
                           for n, key in enumerate(["\x00", " ", "1\u202e2", "7"]))
        report = (await client.post("/v1/load/customers", content=lines,
                                    headers={"content-type": "application/x-ndjson"})).json()
        assert report["applied"] == 1 and [e["line"] for e in report["errors"]] == [1, 2, 3], report
        single = await client.post("/v1/event", content=lines.split(b"\n")[0], headers={"content-type": "application/json"})
        assert single.status_code == 400 and single.json()["error"]["field"] in ("key", "user_id")


# -- sessions, CSRF tokens bound to them, guessing the token (issue 23: 2, 3, 6) ----------------------------------

CUSTOMER = {"type": "attributes", "user_id": "7", "timestamp": 1560073640, "id": "m1",
            "data": {"email": "seven@example.com"}}
EDIT = {"rows": "1", "name-0": "email", "value-0": "new@example.com", "orig-0": "seven@example.com", "new_rows": "0"}


def _csrf_of(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text)[1]


async def _sign_in(client, token: str = TOKEN) -> str:
    """Sign in through the form; the new session cookie's value."""
    form = await client.get("/ui/login")
    signed = await client.post("/ui/login", data={"csrf": _csrf_of(form), "token": token})
    assert signed.status_code == 303, signed.text
    return client.cookies["herald_session"]


async def test_a_csrf_token_from_an_anonymous_visit_is_refused_in_a_signed_in_session():
    async with app_client([("customers", customers)], admin_token=TOKEN) as (herald, client):
        await herald.accept([CUSTOMER])
        # What a page on a sibling origin can get for itself: an anonymous sign-in form and its cookie.
        anonymous = await client.get("/ui/login")
        pre_token, pre_cookie = _csrf_of(anonymous), client.cookies["herald_csrf"]
        signed = await client.post("/ui/login", data={"csrf": pre_token, "token": TOKEN})  # login CSRF holds
        assert signed.status_code == 303
        pre_cookie_gone = "herald_csrf" not in client.cookies
        # The victim is signed in; the sibling page sets the cookie it knows and posts the edit form.
        client.cookies.set("herald_csrf", pre_cookie, domain="herald.test", path="/ui")
        forged = await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": pre_token})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        assert pre_cookie_gone  # signing in dropped the pre-session cookie: its binding is done with
        assert herald.engine.actor("7").states["customers"].attributes["email"] == "seven@example.com"
        # The form's own token is bound to this session: it works here, and in no other session.
        own = _csrf_of(await client.get("/ui/customers/7/edit"))
        assert own != pre_token
        # A browser saying the post comes from another origin of the site is refused even with the right token.
        sibling = await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": own},
                                    headers={"Sec-Fetch-Site": "same-site"})
        assert sibling.status_code == 403
        first = client.cookies["herald_session"]
        await _sign_in(client)  # a second session (the first one ends: signing in again replaces it)
        assert (await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": own})).status_code == 403
        client.cookies.set("herald_session", first, domain="herald.test", path="/ui")
        assert (await client.get("/ui/customers/7")).status_code == 303  # replaced on signing in again
        await _sign_in(client)
        own = _csrf_of(await client.get("/ui/customers/7/edit"))
        saved = await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": own},
                                  headers={"Sec-Fetch-Site": "same-origin"})
        assert saved.status_code == 303
        assert herald.engine.actor("7").states["customers"].attributes["email"] == "new@example.com"


async def test_without_a_token_forms_need_the_token_of_their_own_cookie_from_this_origin():
    async with app_client([("customers", customers)]) as (herald, client):
        await herald.accept([CUSTOMER])
        token = _csrf_of(await client.get("/ui/customers/7/edit"))
        for headers in ({"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": token}, headers=headers)
            assert refused.status_code == 403, headers
        assert (await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": "é" * 64})).status_code == 403
        seed = client.cookies["herald_csrf"]
        client.cookies.set("herald_csrf", "0" * 32, domain="herald.test", path="/ui")
        assert (await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": token})).status_code == 403
        client.cookies.set("herald_csrf", seed, domain="herald.test", path="/ui")
        assert (await client.post("/ui/customers/7/edit", data={**EDIT, "csrf": token})).status_code == 303


async def test_every_sign_in_gets_its_own_session_and_signing_out_ends_it():
    async with app_client([fitness], admin_token=TOKEN) as (herald, client):
        first = await _sign_in(client)
        client.cookies.clear()
        second = await _sign_in(client)
        assert first != second and len(second) >= 43  # 256 random bits, whoever signs in whenever
        overview = await client.get("/ui/overview.json")
        assert overview.status_code == 200
        out = await client.post("/ui/logout", data={"csrf": _csrf_of(await client.get("/ui"))})
        assert out.status_code == 303 and "herald_session" not in client.cookies
        # A copy of the cookie saved before signing out reads nothing any more; the other session lives on.
        for saved, status in ((second, 303), (first, 200)):
            client.cookies.set("herald_session", saved, domain="herald.test", path="/ui")
            assert (await client.get("/ui/overview.json")).status_code == status


async def test_sessions_end_after_their_idle_time_and_their_lifetime(autojump_clock):
    import trio

    from engine import Config
    from web import ui_guard

    minute, hour = 60, 3600
    async with app_client([fitness], admin_token=TOKEN) as (herald, client):
        await _sign_in(client)
        for _ in range(2):  # each request restarts the idle time
            await trio.sleep(25 * minute)
            assert (await client.get("/ui/overview.json")).status_code == 200
        await trio.sleep(30 * minute)
        assert (await client.get("/ui/overview.json")).status_code == 303
        await _sign_in(client)
        for _ in range(28):  # busy all along: 11 h 40 min
            await trio.sleep(25 * minute)
            assert (await client.get("/ui/overview.json")).status_code == 200
        await trio.sleep(20 * minute)  # 12 h after signing in
        answer = await client.get("/ui/overview.json")
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login?next=/ui/overview.json"
        sessions = ui_guard(herald.context).sessions
        assert len(sessions) == 0  # both ended, neither kept
        assert (sessions.idle, sessions.lifetime) == (30 * minute, 12 * hour)  # the defaults
    configured = Config.from_env({"HERALD_UI_SESSION_IDLE": "60", "HERALD_UI_SESSION_MAX": "300"})
    assert (configured.ui_session_idle, configured.ui_session_max) == (60, 300)


async def test_a_restart_or_a_new_token_ends_every_session():
    async with app_client([fitness], admin_token=TOKEN) as (_, client):
        cookie = await _sign_in(client)
    async with app_client([fitness], admin_token=TOKEN) as (_, client):  # a new token needs a restart too
        client.cookies.set("herald_session", cookie, domain="herald.test", path="/ui")
        assert (await client.get("/ui/overview.json")).status_code == 303


async def test_guessing_the_token_is_slowed_down(autojump_clock, caplog):
    import trio

    async with app_client([("customers", customers)], admin_token=TOKEN) as (herald, client):
        wrong = {"Authorization": "Bearer " + "x" * 26}
        # 300 wrong tokens at once (on the ingestion fast path's bearer route: the quickest to ask).
        statuses = [(await client.post("/v1/load/customers", content=b"", headers=wrong)).status_code
                    for _ in range(300)]
        assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
        # Locked: the right token is not even checked, on any route of the token, nor on the sign-in form.
        load = await client.post("/v1/load/customers", content=b"", headers=BEARER)
        assert load.status_code == 429 and load.headers["retry-after"] == "1"
        locked = await client.get("/v1/journal", headers=BEARER)
        assert locked.status_code == 429 and locked.json()["error"]["code"] == "too_many_failures"
        assert locked.headers["Retry-After"] == "1"
        assert (await client.get("/customers/7", headers=BEARER)).status_code == 429
        form = await client.get("/ui/login")
        page = await client.post("/ui/login", data={"csrf": _csrf_of(form), "token": TOKEN})
        assert page.status_code == 429 and "Too many failed sign-ins" in page.text and "herald_session" not in client.cookies
        lockouts = [r.getMessage() for r in caplog.records if "failed attempts" in r.getMessage()]
        assert lockouts == ["127.0.0.1: 11 failed attempts at the admin token; its attempts are refused (429) for 1 s"]
        assert not any(TOKEN in r.getMessage() or "x" * 26 in r.getMessage() for r in caplog.records)

        await trio.sleep(1)  # the lockout is over: one more wrong attempt locks again, twice as long
        assert (await client.post("/ui/login", data={"csrf": _csrf_of(form), "token": "nope"})).status_code == 429
        assert (await client.get("/v1/journal", headers=BEARER)).headers["Retry-After"] == "2"
        await trio.sleep(2)
        assert (await client.get("/v1/journal", headers=BEARER)).status_code == 200  # and the failures are forgotten
        assert [(await client.get("/v1/journal", headers=wrong)).status_code for _ in range(10)] == [401] * 10
        await client.post("/ui/login", data={"csrf": _csrf_of(form), "token": TOKEN})
        assert (await client.get("/ui/overview.json")).status_code == 200


async def test_failed_attempts_are_counted_per_client_address_behind_a_trusted_proxy_too():
    wrong = {"Authorization": "Bearer " + "x" * 26}
    async with served([fitness], admin_token=PAGE_TOKEN, trusted_proxies="10.0.0.0/8") as (_, _app, connect):
        async with connect("192.0.2.7") as guesser, connect("192.0.2.8") as other, connect("10.0.0.2") as proxy:
            for _ in range(11):
                await guesser.post("/v1/load/customers", content=b"", headers=wrong)
            assert (await guesser.get("/v1/journal", headers=PAGE_BEARER)).status_code == 429
            assert (await other.get("/v1/journal", headers=PAGE_BEARER)).status_code == 200  # another address
            # Through the proxy: each client it reports is counted on its own, the proxy itself never.
            via = {"X-Forwarded-For": "198.51.100.1"}
            for _ in range(11):
                await proxy.get("/v1/journal", headers={**wrong, **via})
            assert (await proxy.get("/v1/journal", headers={**PAGE_BEARER, **via})).status_code == 429
            for client in ("198.51.100.2", "192.0.2.8"):
                answer = await proxy.get("/v1/journal", headers={**PAGE_BEARER, "X-Forwarded-For": client})
                assert answer.status_code == 200, client


def test_failed_attempts_are_remembered_for_a_bounded_number_of_addresses():
    from web import Guesses

    now = [0.0]
    record = Guesses(free=2, limit=3, forget=100, clock=lambda: now[0])
    for address in ("a", "b", "c", "d"):
        assert [record.failed(address) for _ in range(3)] == [0, 0, 1.0]
    assert len(record) == 3 and record.wait("a") == 0 and record.wait("d") == 1.0
    now[0] = 1.0
    assert record.failed("d") == 2.0 and record.wait("d") == 2.0
    now[0] = 1000.0  # a quiet while: forgotten
    assert record.failed("d") == 0 and record.wait("b") == 0
    record.failed("e")
    assert len(record) == 2  # the quiet ones were dropped, not kept until the bound


def test_a_short_admin_token_is_refused_at_start_in_one_line(monkeypatch, capsys, tmp_path):
    import socket

    from engine import Config, ConfigError
    from server import main

    monkeypatch.setenv("HERALD_ADMIN_TOKEN", "fifteen-chars-x")
    with socket.socket() as busy:  # were the token let through, the run would end at once anyway
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--data-dir", str(tmp_path), "--durability", "memory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("herald: HERALD_ADMIN_TOKEN is too short"), err
    assert "16 characters" in err and "fifteen-chars-x" not in err
    with pytest.raises(ConfigError, match="16 characters"):
        Config(admin_token="a")
    assert Config(admin_token="x" * 16).admin_token == "x" * 16 and Config(admin_token=None).admin_token is None

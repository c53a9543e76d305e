"""The operator console at /ui through HTTP (in process): every page and form, bad input, filters, sign-in."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import trio

from engine.testing import Receiver
from plugins.customers import hooks as customers
from plugins.fitness import hooks as fitness

from .conftest import app_client

UTC = timezone.utc
TOKEN = "console-admin-token-0123456789"


def _stamp(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def _training(key: str, program: str = "p1") -> list[dict]:
    """A program started 40 minutes ago and finished now: a congratulation (a Notify) is due at once."""
    return [{"type": "training_program_started", "user_id": key, "timestamp": _stamp(40), "training_program_id": program},
            {"type": "training_program_finished", "user_id": key, "timestamp": _stamp(0), "training_program_id": program}]


def _csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text)[1]


def _figure(page, name: str) -> str:
    return re.search(rf'data-figure="{name}"[^>]*>([^<]*)<', page.text)[1]


async def _until(condition, seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not await condition():
            await trio.sleep(0.02)


async def _dead_letters(herald) -> int:
    return (await herald.journal.query(lambda j: j.outbox_counts()))["dead"]


def _outbox_holds(herald, count: int, status: str = "dead"):
    async def check() -> bool:
        return (await herald.journal.query(lambda j: j.outbox_counts()))[status] == count

    return check


# -- overview ---------------------------------------------------------------------------------------------------


async def test_the_overview_shows_figures_charts_and_plugins_and_its_json_twin_moves(tmp_path):
    async with app_client(durability="batch", data_dir=tmp_path) as (herald, client):
        page = await client.get("/ui")
        assert page.status_code == 200 and "<title>Overview · Herald</title>" in page.text
        assert _figure(page, "actors") == "0" and _figure(page, "status") == "ready"
        assert page.text.count('<svg id="chart-') == 2 and 'role="img"' in page.text
        assert "app_launch, training_program_cancelled, training_program_finished" in page.text  # fitness's types
        assert _figure(page, "lateness") == "1 h" and _figure(page, "snapshot") == "none yet"
        assert 'aria-live="polite"' in page.text and "console.js" in page.text

        await client.post("/v1/events", json=[{"type": "app_launch", "user_id": f"u{i}", "timestamp": _stamp(1)}
                                               for i in range(3)])
        live = (await client.get("/ui/overview.json")).json()
        assert live["figures"]["actors"] == "3" and live["figures"]["timers"] == "3"
        assert live["figures"]["events_total"] == "3" and live["figures"]["next_due"].endswith("UTC")
        assert set(live["regions"]) == {"charts", "sources", "cluster"}
        assert live["regions"]["charts"].count("<svg") == 2


async def test_the_overview_counts_outbox_states_and_sources_health(tmp_path):
    async with Receiver.running(statuses=[400]) as receiver, \
            app_client(durability="batch", data_dir=tmp_path, notify_url=receiver.url + "/hook") as (herald, client):
        herald.context.health("poller", {"state": "polling", "url": "http://user:secret@feed.test/x?key=k"})
        await client.post("/v1/events", json=_training("u1"))
        await _until(_outbox_holds(herald, 1))
        page = await client.get("/ui")
        assert _figure(page, "outbox_dead") == "1" and _figure(page, "outbox_pending") == "0"
        assert "poller" in page.text and "polling" in page.text and "secret" not in page.text


# -- actors ------------------------------------------------------------------------------------------------------


async def test_find_an_actor_by_key_and_an_unknown_key_is_a_404_page(client):
    await client.post("/v1/event", json={"type": "app_launch", "user_id": "some/one", "timestamp": _stamp(1)})
    found = await client.get("/ui/actors", params={"key": " some/one "})
    assert found.status_code == 303 and found.headers["location"] == "/ui/actors/some%2Fone"  # the key: one segment
    for path in (found.headers["location"], "/ui/actors/some/one"):  # as typed, too
        page = await client.get(path)
        assert page.status_code == 200 and "<h1>Actor some/one</h1>" in page.text
    missing = await client.get("/ui/actors/nobody")
    assert missing.status_code == 404 and "No actor has the key “nobody”." in missing.text
    assert 'role="alert"' in missing.text and 'value="nobody"' in missing.text  # the find form, filled in


async def test_the_keys_of_a_plugin_are_listed_in_order_and_paged(client):
    await client.post("/v1/events", json=[{"type": "app_launch", "user_id": f"k{i:02d}", "timestamp": _stamp(1)}
                                           for i in range(12)])
    first = await client.get("/ui/actors", params={"plugin": "fitness", "per_page": 5})
    assert re.findall(r'href="/ui/actors/(k\d\d)"', first.text) == ["k00", "k01", "k02", "k03", "k04"]
    assert "Showing 1–5 of 12 keys of fitness" in first.text and "Page 1 of 3" in first.text
    last = await client.get("/ui/actors", params={"plugin": "fitness", "per_page": 5, "page": 3})
    assert re.findall(r'href="/ui/actors/(k\d\d)"', last.text) == ["k10", "k11"] and "Previous page" in last.text
    beyond = await client.get("/ui/actors", params={"plugin": "fitness", "page": 9})
    assert beyond.status_code == 200 and "/ui/actors/k" not in beyond.text


@pytest.mark.parametrize("query, message", [
    ({"page": "0"}, "page: must be an integer from 1 to 1000000000"),
    ({"page": "two"}, "page: must be an integer from 1 to 1000000000"),
    ({"per_page": "501"}, "per_page: must be an integer from 1 to 500"),
])
async def test_bad_paging_parameters_are_a_400_page_naming_them(client, query, message):
    page = await client.get("/ui/actors", params=query)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert message in page.text and "<h1>Bad request</h1>" in page.text


async def test_an_unknown_plugin_is_a_404_page(client):
    page = await client.get("/ui/actors", params={"plugin": "nope"})
    assert page.status_code == 404 and "No plugin is called “nope”. Plugins: fitness." in page.text


async def test_an_actor_page_shows_its_timer_until_it_fires_then_the_delivery(tmp_path):
    env = {"HERALD_FITNESS_NUDGE_MINUTES": "0.01"}  # a nudge 0.6 s after the launch
    async with Receiver.running() as receiver, app_client(
            durability="batch", data_dir=tmp_path, environ=env, notify_url=receiver.url + "/hook") as (herald, client):
        await client.post("/v1/event", json={"type": "app_launch", "user_id": "u1", "timestamp": _stamp(0)})
        page = await client.get("/ui/actors/u1")
        assert "<th scope=\"row\">nudge</th>" in page.text and "No timer is pending." not in page.text
        assert "app_launch" in page.text and "&#34;last_launch_at&#34;" in page.text  # its event and its state
        await receiver.wait_for(1)

        async def delivered() -> bool:
            return "badge-delivered" in (await client.get("/ui/actors/u1")).text

        await _until(delivered)
        page = await client.get("/ui/actors/u1")
        assert "No timer is pending." in page.text and receiver.url + "/hook" in page.text
        assert "&#34;notifications_sent&#34;: 1" in page.text


async def test_an_actor_page_without_a_journal_says_so(client):
    await client.post("/v1/event", json={"type": "app_launch", "user_id": "u1", "timestamp": _stamp(1)})
    page = await client.get("/ui/actors/u1")
    assert "No journal (durability memory): events are not kept." in page.text


# -- deliveries ----------------------------------------------------------------------------------------------------


async def test_deliveries_filter_by_status_and_receiver_and_a_dead_one_is_replayed(tmp_path):
    async with Receiver.running(statuses=[400, 400, 200]) as receiver, \
            app_client(durability="batch", data_dir=tmp_path, notify_url=receiver.url + "/hook") as (herald, client):
        await client.post("/v1/events", json=_training("u1") + _training("u2"))
        await _until(_outbox_holds(herald, 2))
        page = await client.get("/ui/deliveries", params={"status": "dead"})
        assert page.text.count('class="badge badge-dead"') == 2 and "/hook answered 400" in page.text
        assert "Replay all dead letters" in page.text
        assert "badge-dead" not in (await client.get("/ui/deliveries", params={"status": "delivered"})).text
        assert "No delivery" in (await client.get("/ui/deliveries", params={"receiver": "elsewhere.test"})).text
        assert (await client.get("/ui/deliveries", params={"receiver": "127.0.0.1"})).text.count("badge-dead") == 2
        older = await client.get("/ui/deliveries", params={"per_page": 1})
        assert older.text.count("badge-dead") == 1 and "Older deliveries" in older.text
        ids = re.findall(r'name="id" value="(\d+)"', page.text)

        refused = await client.post("/ui/deliveries/replay", data={"id": ids[0]})  # no CSRF token
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        assert await _dead_letters(herald) == 2
        bad = await client.post("/ui/deliveries/replay", data={"id": "x", "csrf": _csrf(page)})
        assert bad.status_code == 400 and "id: must be the number of a dead delivery" in bad.text

        one = await client.post("/ui/deliveries/replay", data={"id": ids[0], "csrf": _csrf(page)})
        assert one.status_code == 303 and one.headers["location"] == "/ui/deliveries?status=dead&replayed=1"
        assert "1 dead letter replayed" in (await client.get(one.headers["location"])).text
        await receiver.wait_for(1)  # the replayed one reached the receiver (its 3rd answer: 200)
        await _until(_outbox_holds(herald, 1))
        everything = await client.post("/ui/deliveries/replay", data={"csrf": _csrf(page)})
        assert everything.headers["location"] == "/ui/deliveries?status=dead&replayed=1"  # the other one
        await receiver.wait_for(2)
        await _until(_outbox_holds(herald, 2, "delivered"))
        delivered = await client.get("/ui/deliveries", params={"status": "delivered"})
        assert delivered.text.count("badge-delivered") == 2


async def test_a_bad_status_filter_is_a_400_page(client):
    page = await client.get("/ui/deliveries", params={"status": "lost"})
    assert page.status_code == 400 and "status: must be one of pending, retrying, delivered, dead" in page.text


async def test_deliveries_without_a_journal_list_the_dead_letters_kept_in_memory():
    async with Receiver.running(statuses=[400]) as receiver, \
            app_client([fitness], notify_url=receiver.url + "/hook") as (herald, client):
        await client.post("/v1/events", json=_training("u1"))
        with trio.fail_after(10):
            while not herald.outbox.dead:
                await trio.sleep(0.02)
        page = await client.get("/ui/deliveries")
        assert "only dead letters are kept" in page.text and page.text.count("badge-dead") == 1
        assert "No delivery is delivered" in (await client.get("/ui/deliveries", params={"status": "delivered"})).text


# -- events --------------------------------------------------------------------------------------------------------


async def test_the_events_tail_shows_accepted_and_rejected_events_and_filters_them(client):
    await client.post("/v1/events", json=[
        {"type": "app_launch", "user_id": "alice", "timestamp": _stamp(1)},
        {"type": "training_program_started", "user_id": "bob", "timestamp": _stamp(1)},  # no program id
    ])
    await client.post("/v1/event", content=b"{not json", headers={"content-type": "application/json"})
    page = await client.get("/ui/events")
    assert page.text.count("badge-accepted") == 1 and page.text.count("badge-rejected") == 2
    assert "<strong>training_program_id</strong>: is required for training program events (missing)" in page.text
    assert 'href="/ui/actors/alice"' in page.text
    rejected = await client.get("/ui/events", params={"outcome": "rejected"})
    assert "badge-accepted" not in rejected.text and rejected.text.count("badge-rejected") == 2
    by_key = await client.get("/ui/events", params={"key": "ali"})
    assert by_key.text.count("<tr class=") == 1 and "alice" in by_key.text
    by_type = await client.get("/ui/events", params={"type": "training_program_started"})
    assert by_type.text.count("<tr class=") == 1 and "bob" in by_type.text
    assert (await client.get("/ui/events", params={"outcome": "maybe"})).status_code == 400

    last = int(re.search(r'data-after="(\d+)"', page.text)[1])
    assert (await client.get("/ui/events.json", params={"after": last})).json()["count"] == 0
    await client.post("/v1/event", json={"type": "app_launch", "user_id": "carol", "timestamp": _stamp(1)})
    newer = (await client.get("/ui/events.json", params={"after": last})).json()
    assert newer["count"] == 1 and newer["last"] == last + 1 and "carol" in newer["rows"]
    assert (await client.get("/ui/events.json", params={"after": last, "key": "zed"})).json()["count"] == 0


# -- sign-in, CSRF, one layout ------------------------------------------------------------------------------------


async def test_with_a_token_the_console_asks_for_it_once_and_forms_need_their_csrf_token():
    async with app_client([fitness], admin_token=TOKEN) as (herald, client):
        for path in ("/ui", "/ui/actors", "/ui/deliveries", "/ui/events", "/ui/overview.json", "/ui/events.json"):
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == f"/ui/login?next={path}", path
        assert (await client.post("/ui/deliveries/replay", data={})).status_code == 401
        form = await client.get("/ui/login?next=/ui/deliveries")
        assert "<h1>Sign in to Herald</h1>" in form.text and 'aria-label="Main"' not in form.text
        signed = await client.post("/ui/login", data={"csrf": _csrf(form), "token": TOKEN, "next": "/ui/deliveries"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/deliveries"
        assert "HttpOnly" in signed.headers["set-cookie"] and "SameSite=Strict" in signed.headers["set-cookie"]
        page = await client.get("/ui/deliveries?status=dead")
        assert page.status_code == 200 and "Sign out" in page.text
        assert (await client.post("/ui/deliveries/replay", data={"csrf": "forged"})).status_code == 403
        assert (await client.post("/ui/deliveries/replay", data={"csrf": _csrf(page)})).status_code == 303
        saved = client.cookies["herald_session"]
        out = await client.post("/ui/logout", data={"csrf": _csrf(page)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (await client.get("/ui")).status_code == 303
        # Signing out ended the session itself: a copy of its cookie kept elsewhere reads nothing.
        client.cookies.set("herald_session", saved, domain="herald.test", path="/ui")
        assert (await client.get("/ui/overview.json")).status_code == 303


async def test_the_console_and_the_customers_pages_share_one_layout_and_navigation():
    async with app_client([fitness, ("customers", customers)]) as (herald, client):
        console, people = await client.get("/ui"), await client.get("/ui/customers")
        navigation = re.compile(r'<nav aria-label="Main">(.*?)</nav>', re.S)
        links = [re.findall(r'<a href="([^"]+)"', navigation.search(p.text)[1]) for p in (console, people)]
        assert links[0] == links[1] == ["/ui", "/ui/actors", "/ui/deliveries", "/ui/events", "/ui/customers", "/docs"]
        assert '<a href="/ui" aria-current="page">' in console.text
        assert '<a href="/ui/customers" aria-current="page">' in people.text
        sheet = "/ui/assets/herald.css"
        assert sheet in console.text and sheet in people.text
        assert (await client.get(sheet)).status_code == 200
        assert (await client.get("/ui/assets/console.js")).status_code == 200


async def test_an_actor_pages_json_twin_gives_its_live_regions(client):
    await client.post("/v1/event", json={"type": "app_launch", "user_id": "u1", "timestamp": _stamp(1)})
    live = (await client.get("/ui/actor.json", params={"key": "u1"})).json()
    assert live["figures"]["timers"] == "1" and live["figures"]["plugins"] == "1"
    assert set(live["regions"]) == {"timers", "states", "events", "effects"} and "nudge" in live["regions"]["timers"]
    assert (await client.get("/ui/actor.json", params={"key": "nobody"})).status_code == 404


class _Cluster:
    """What the overview reads of a cluster node (``Cluster.health()``'s shape), without a broker."""

    rebalances = 3

    def __init__(self, engine) -> None:
        self.engine = engine

    def engines(self):
        return [self.engine]

    def engine_for(self, key):
        return self.engine if key != "elsewhere" else None

    def owner_url(self, key):
        return ("node-b", "http://127.0.0.2:8000")

    def owns(self, key):
        return key != "replicated"

    def replica_lag_of(self, key):
        return 7

    def health(self):
        return {"node": "node-a", "partitions": 4, "owned": [0, 2], "ready": [0, 2], "lag": {"0": 5, "2": 0},
                "rebalances": 3, "restore": {"actors": 10, "seconds": 0.1, "restoring": []}, "singletons": True,
                "nodes": {"node-a": {"url": "http://127.0.0.1:8000", "partitions": [0, 2], "seen": 0.2},
                          "node-b": {"url": "http://127.0.0.2:8000", "partitions": [1, 3], "seen": 0.4}}}


async def test_in_a_cluster_the_overview_shows_the_nodes_and_their_partitions(herald_and_client):
    herald, client = herald_and_client
    await client.post("/v1/event", json={"type": "app_launch", "user_id": "replicated", "timestamp": _stamp(1)})
    herald.cluster = _Cluster(herald.engine)
    try:
        page = await client.get("/ui")
        nodes = re.search(r"<caption>Nodes</caption>(.*?)</table>", page.text, re.S)[1]
        assert re.findall(r'<th scope="row">(node-\w)</th><td>[^<]*</td><td>([^<]*)</td>', nodes) == [
            ("node-a", "0, 2"), ("node-b", "1, 3")]
        assert "0, 2 of 4" in page.text and "p0: 5, p2: 0" in page.text and "<dd>3</dd>" in page.text
        assert "node-b" in (await client.get("/ui/overview.json")).json()["regions"]["cluster"]
        replica = await client.get("/ui/actors/replicated")
        assert "this node shows its replica, 7 messages behind the owner" in replica.text
        other = await client.get("/ui/actors/elsewhere")
        assert other.status_code == 200 and 'href="http://127.0.0.2:8000/ui/actors/elsewhere"' in other.text
    finally:
        herald.cluster = None

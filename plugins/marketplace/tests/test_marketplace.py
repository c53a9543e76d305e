"""The marketplace end to end in process: a real mock provider, the poller, /search, restarts."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio

from plugins.marketplace import hooks
from plugins.marketplace.mock import MockProvider
from plugins.marketplace.poller import PollError
from web.testing import app_client

from .feeds import CAMELA, RESPONSES, document, write_feeds


def feeds(tmp_path: Path, *names: str) -> Path:
    """A directory holding the given provider responses (generated in the seed's shape, see
    :mod:`.feeds`), named so that they rotate in this order."""
    return write_feeds(tmp_path / "feeds", *(RESPONSES[name] for name in names))


def market(url: str | None = None, **settings):
    """A Herald with the marketplace. Its poller reads the provider once at start, then sleeps an
    hour: after :func:`first_poll`, the tests poll explicitly with :func:`poll`."""
    environ = {"HERALD_MARKETPLACE_BREAKER_FAILURES": "2", "HERALD_MARKETPLACE_POLL_SECONDS": "3600"}
    if url:
        environ["HERALD_MARKETPLACE_PROVIDER_URL"] = url
    return app_client([("marketplace", hooks)], environ=environ, **settings)


async def first_poll(herald) -> dict:
    """Wait for the poll the poller makes at start; return its health."""
    health = hooks.parts(herald.context)[1].health
    with trio.fail_after(10):
        while health["last_success"] is None and health["last_error"] is None:
            await trio.sleep(0.01)
    return health


async def search(client, **params) -> list[str]:
    response = await client.get("/search", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is None
    return [e["title"] for e in body["data"]["events"]]


def max_age(response: httpx.Response) -> int:
    """The seconds of ``Cache-Control: public, max-age=N`` (the only form /search sends)."""
    value = response.headers["cache-control"]
    assert re.fullmatch(r"public, max-age=\d+", value), value
    return int(value.rpartition("=")[2])


async def poll(herald) -> dict:
    _index, poller = hooks.parts(herald.context)
    async with httpx.AsyncClient() as client:
        return await poller.poll(client)


async def test_two_polls_keep_every_plan_ever_online_with_its_latest_values(tmp_path):
    with MockProvider(feeds(tmp_path, "response_1.xml", "response_2.xml")).running() as provider:
        async with market(provider.url) as (herald, client):
            health = await first_poll(herald)
            assert (health["plans_in_last_feed"], health["changed_in_last_feed"]) == (3, 3)
            assert await poll(herald) == {"plans": 2, "skipped": 1, "changed": 1}  # only Los Morancos changed
            # The seed's example: deployed 2021-02-01, searching up to 2022-07-03 -> 291, 322, 1591.
            assert await search(client, starts_at="2021-02-01T00:00:00Z", ends_at="2022-07-03T00:00:00Z") == [
                "Pantomima Full", "Camela en concierto", "Los Morancos"]
            body = (await client.get("/search", params={"starts_at": "2021-07-31T00:00:00"})).json()
            [morancos] = body["data"]["events"]
            assert morancos == {"id": morancos["id"], "title": "Los Morancos", "start_date": "2021-07-31",
                                "start_time": "20:00:00", "end_date": "2021-07-31", "end_time": "21:20:00",
                                "min_price": 65.0, "max_price": 75.0}
            # Answers carry an ETag that changes with the plans, and may be kept until the next poll
            # (an hour, ±10 %, from the last one here; never more than the interval); a repeat may be
            # answered 304, with the same freshness.
            answer = await client.get("/search")
            assert 3600 * 0.9 - 5 < max_age(answer) <= 3600
            again = await client.get("/search", headers={"If-None-Match": answer.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            assert max_age(answer) - 2 <= max_age(again) <= max_age(answer)
            # Containment: a window cutting through a plan does not return it.
            assert await search(client, starts_at="2021-06-30T21:30:00", ends_at="2021-07-01T00:00:00") == []
            assert await search(client, starts_at="2021-06-30T21:00:00", ends_at="2021-06-30T22:00:00") == [
                "Camela en concierto"]
            assert await search(client) == ["Pantomima Full", "Camela en concierto", "Los Morancos"]
            # Offline plans are never returned; the broken one is reported in the health.
            assert "Tributo a Juanito Valderrama" not in await search(client, starts_at="2021-01-01T00:00:00Z")
            health = (await client.get("/healthz")).json()["sources"]["marketplace"]
            assert health["skipped_in_last_feed"] == 1 and health["searchable_plans"] == 3
            assert health["last_success"] and health["last_error"] is None
            # A plan's history is on its actor: the journal holds each change.
            view = (await client.get("/v1/actors/plan:1591:1642")).json()["states"]["marketplace"]
            assert view["end"] == "2021-07-31T21:20:00" and view["ever_online"] is True


async def test_a_poll_that_changes_a_plan_replaces_the_kept_answers(tmp_path):
    with MockProvider(feeds(tmp_path, "response_1.xml", "response_2.xml"), once=True).running() as provider:
        async with market(provider.url) as (herald, client):
            await first_poll(herald)
            query = {"starts_at": "2021-07-31T00:00:00"}
            before = await client.get("/search", params=query)
            assert (await client.get("/search", params=query)).content == before.content  # kept, asked again
            assert (await poll(herald))["changed"] == 1  # Los Morancos changed
            after = await client.get("/search", params=query)
            assert after.headers["etag"] != before.headers["etag"] and after.content != before.content
            [morancos] = after.json()["data"]["events"]
            assert (morancos["end_time"], morancos["min_price"], morancos["max_price"]) == ("21:20:00", 65.0, 75.0)


async def test_query_strings_meaning_the_same_window_get_the_same_answer(tmp_path):
    with MockProvider(feeds(tmp_path, "response_1.xml", "response_2.xml"), once=True).running() as provider:
        async with market(provider.url) as (herald, client):
            await first_poll(herald)
            await poll(herald)
            variants = ["starts_at=2021-02-01T00:00:00Z&ends_at=2022-07-03T00:00:00Z",
                        "ends_at=2022-07-03T00:00:00Z&starts_at=2021-02-01T00:00:00Z",
                        "starts_at=2021-02-01T00%3A00%3A00Z&ends_at=2022-07-03T00%3A00%3A00Z",
                        "starts_at=2021-02-01T00:00:00.000Z&ends_at=2022-07-03T00:00:00.000Z",
                        "starts_at=2021-02-01T01:00:00%2B01:00&ends_at=2022-07-03T00:00:00Z",
                        "starts_at=2021-02-01T00:00:00Z&ends_at=2022-07-03T00:00:00Z&other=1"]
            answers = set()
            for _ in range(2):  # built, then kept
                for variant in variants:
                    response = await client.get(f"/search?{variant}")
                    assert response.status_code == 200, (variant, response.text)
                    answers.add(response.content)
            [answer] = answers
            assert [e["title"] for e in httpx.Response(200, content=answer).json()["data"]["events"]] == [
                "Pantomima Full", "Camela en concierto", "Los Morancos"]
            # A bad variant is still an error each time, and does not disturb the kept answers.
            for _ in range(2):
                bad = await client.get("/search?starts_at=2021-02-01T00:00:00Z&ends_at=2020-07-03T00:00:00Z")
                assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_range"
            assert (await client.get(f"/search?{variants[0]}")).content == answer


async def test_an_offline_plan_is_never_searchable_even_when_well_formed(tmp_path):
    offline = replace(CAMELA, base_id="900", plan_id="901", title="Offline but valid", sell_mode="offline")
    directory = write_feeds(tmp_path / "feeds", document(CAMELA, offline))
    with MockProvider(directory, once=True).running() as provider:
        async with market(provider.url) as (herald, client):
            health = await first_poll(herald)
            assert health["last_error"] is None
            assert await search(client, starts_at="2021-01-01T00:00:00Z") == ["Camela en concierto"]


async def test_bad_parameters_get_the_contracts_error_shape(tmp_path):
    async with market() as (_, client):
        for params, code in (({"starts_at": "yesterday"}, "invalid_parameter"),
                             ({"ends_at": "2021-13-01T00:00:00"}, "invalid_parameter"),
                             ({"starts_at": "2022-01-01T00:00:00Z", "ends_at": "2021-01-01T00:00:00Z"}, "invalid_range")):
            response = await client.get("/search", params=params)
            assert response.status_code == 400
            assert response.json()["data"] is None and response.json()["error"]["code"] == code
        assert (await client.post("/search")).status_code == 405
        assert await search(client) == []


async def test_a_provider_that_is_down_or_sends_garbage_changes_nothing(tmp_path):
    directory = feeds(tmp_path, "response_1.xml")
    (directory / "01.xml").write_bytes(b"<eventList><output><base_event base_event_id=")  # truncated
    with MockProvider(directory).running() as provider:
        async with market(provider.url) as (herald, client):
            await first_poll(herald)
            before = await search(client)
            with pytest.raises(PollError):
                await poll(herald)  # the truncated feed
            assert await search(client) == before == ["Pantomima Full", "Camela en concierto", "Los Morancos"]
            provider.status = 503
            with pytest.raises(PollError):
                await poll(herald)  # second failure in a row: the breaker opens
            health = (await client.get("/healthz")).json()["sources"]["marketplace"]
            assert health["circuit"] == "open" and health["consecutive_failures"] == 2
            served = provider.served
            with pytest.raises(PollError, match="circuit"):
                await poll(herald)  # not even called
            assert provider.served == served
            assert await search(client) == before  # still answering, from memory
            # After the cool-down one attempt goes through; success closes the circuit.
            _index, poller = hooks.parts(herald.context)
            poller.open_until = 0
            provider.status = 200
            await poll(herald)
            health = (await client.get("/healthz")).json()["sources"]["marketplace"]
            assert health["circuit"] == "closed" and health["consecutive_failures"] == 0
            assert b"herald_marketplace_polls_total{outcome=\"failed\"} 2.0" in (await client.get("/metrics")).content


async def test_an_unchanged_feed_journals_nothing_and_restart_keeps_the_plans(tmp_path):
    settings = {"durability": "batch", "data_dir": str(tmp_path / "data")}
    with MockProvider(feeds(tmp_path, "response_1.xml", "response_2.xml"), once=True).running() as provider:
        async with market(provider.url, **settings) as (herald, client):
            await first_poll(herald)
            await poll(herald)
            seq = herald.seq
            etag = (await client.get("/search")).headers["etag"]
            assert (await poll(herald))["changed"] == 0
            assert (await client.get("/search")).headers["etag"] == etag  # nothing changed, same answer
            assert herald.seq == seq
            before = (await client.get("/search")).json()
    async with market(**settings) as (_, client):  # no provider at all now
        assert (await client.get("/search")).json() == before
        assert len(before["data"]["events"]) == 3


async def test_generic_routes_cannot_inject_plans():
    async with market() as (_, client):
        response = await client.post("/v1/event", json={
            "type": "marketplace.plan_seen", "key": "plan:1:1", "timestamp": "2021-01-01T00:00:00Z", "data": {}})
        assert response.status_code == 400 and response.json()["error"]["code"] == "reserved"


async def test_the_poller_loop_backs_off_on_failures(autojump_clock):
    """With nothing listening at the provider's address every poll fails, and the loop waits
    twice as long after each failure (virtual time, so minutes pass in milliseconds; the refused
    connection is a transport's, so that no real socket wait lets the clock jump)."""
    from plugins.marketplace.poller import Poller

    attempts = []

    def refused(request: httpx.Request) -> httpx.Response:
        attempts.append(trio.current_time())
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async with market() as (herald, _client):
        index, _ = hooks.parts(herald.context)
        poller = Poller(herald.context, index, "http://127.0.0.1:9/api/events", interval=10, trip_after=100,
                        max_backoff=1000, register_metrics=False, transport=httpx.MockTransport(refused))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            await trio.sleep(700)
            nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) >= 4
    for n, gap in enumerate(gaps[:5], start=1):
        assert 10 * 2 ** n * 0.9 <= gap <= 10 * 2 ** n * 1.1, gaps
    assert poller.health["consecutive_failures"] == len(attempts)
    assert "ConnectError" in poller.health["last_error"]


async def test_search_is_in_the_openapi_document():
    async with market() as (_, client):
        doc = (await client.get("/openapi.json")).json()
    operation = doc["paths"]["/search"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["starts_at", "ends_at"]
    assert {"200", "400", "500"} <= set(operation["responses"])


async def test_answers_may_be_kept_until_the_plans_change_and_never_past_it(autojump_clock):
    """``Cache-Control: max-age`` counts down to the instant the next poll changes the plans,
    announced before the poll reads the feed (so a slow read does not leave caches empty): a cache
    counting whole seconds, as nginx does, has dropped an answer by then. Never above the interval;
    with no provider, the interval. A provider whose feed changes at every read, in virtual time."""
    from plugins.marketplace.poller import Poller

    reads = []

    def provider(request: httpx.Request) -> httpx.Response:
        reads.append(trio.current_time())
        return httpx.Response(200, content=(RESPONSES["response_1.xml"], RESPONSES["response_2.xml"])[len(reads) % 2])

    environ = {"HERALD_MARKETPLACE_POLL_SECONDS": "4"}  # no provider: this Herald's own poller never reads
    async with app_client([("marketplace", hooks)], environ=environ) as (herald, client):
        assert max_age(await client.get("/search")) == 4
        index, _ = hooks.parts(herald.context)
        async def inline(parse):  # parsed on the event loop: virtual time never jumps during a parse
            return parse()

        poller = Poller(herald.context, index, "http://provider.test/api/events", interval=4,
                        transport=httpx.MockTransport(provider), register_metrics=False, run_sync=inline)
        samples = []  # (when, max-age, ETag)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            while len(reads) < 8:
                answer = await client.get("/search")
                samples.append((trio.current_time(), max_age(answer), answer.headers["etag"]))
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert len({etag for *_, etag in samples}) >= 6  # the plans changed at (nearly) every poll
    for when, age, etag in samples:
        assert 0 <= age <= 4
        # A kept answer (max-age 0 is not kept) is still the plans' answer until it ends, through the
        # last second of its max-age.
        assert not age or all(e == etag for later, _a, e in samples if when <= later < when + age + 1), (when, age)
    ages = [age for _t, age, _e in samples]
    assert max(ages) >= 2 and 0 in ages  # kept for seconds after a poll; not at all just before one
    # The polls read the feed ahead of the instant they applied it (at least a second before): the
    # answers in the second after a read are still those from before it.
    ahead = 0
    for read in reads[1:-1]:  # (the samples end at the last read)
        before = [e for when, _a, e in samples if when <= read]
        after = [e for when, _a, e in samples if read < when < read + 1]
        ahead += bool(after) and all(e == before[-1] for e in after)
    assert ahead == len(reads[1:-1]), (ahead, reads)
    assert index.poll_due is None  # the poller stopped: nothing is scheduled


async def test_plans_applied_without_this_nodes_poller_are_searched_with_their_latest_values():
    """As on a cluster node that does not poll: plan events reach the engine (there through the
    replicas) and each change marks the search index stale, so /search never answers old values."""
    from datetime import datetime, timezone

    from engine import Event
    from plugins.marketplace.feed import PlanValues
    from plugins.marketplace.model import SEEN, seen_data

    def seen(title: str) -> Event:
        at = datetime.now(timezone.utc)
        values = PlanValues("291", "291", title, "online", "2021-06-30T21:00:00", "2021-06-30T22:00:00", 15.0, 30.0)
        return Event(f"seen-{title}", SEEN, "plan:291:291", at, seen_data(values), at)

    async with market() as (herald, client):
        for title in ("Camela en concierto", "Camela, segunda fecha"):
            assert await herald.context.accept([seen(title)]) == [False]  # not a repeat
            assert await search(client, starts_at="2021-06-30T00:00:00Z", ends_at="2021-07-01T00:00:00Z") == [title]

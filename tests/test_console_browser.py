"""The operator console in a real headless Chromium (Playwright), against a real `herald serve`.

The browser runs in a worker thread (Playwright's sync API) while the trio loop
serves the test's receiver. Every request the page makes off the server is
recorded and refused: the console needs nothing from elsewhere.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest
import trio

from engine.testing import Receiver
from tests.chromium import expect as _expect, local_page
from tests.conftest import herald_process

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium)"),
]

TIMEOUT_MS = 20_000
TOKEN = "console-browser-token-0123456789"
UTC = timezone.utc
#: What a keyboard user can reach (and what Tab must therefore reach).
FOCUSABLE = 'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]:not([tabindex="-1"])'


def _stamp(minutes_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()



def in_chromium(base_url: str, scenario: Callable[[Any], Any]) -> Any:
    """Run ``scenario(page)`` in a fresh headless Chromium; fail if the page asked for anything off
    ``base_url`` or raised a script error."""
    errors: list[str] = []
    with local_page(base_url) as (page, offsite):
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        result = scenario(page)
    assert offsite == [], "the console asked for files off this machine"
    assert errors == [], errors
    return result


async def browse(base_url: str, scenario: Callable[[Any], Any]) -> Any:
    return await trio.to_thread.run_sync(in_chromium, base_url, scenario)


async def test_the_overview_renders_figures_and_charts_and_a_figure_moves_without_a_reload(tmp_path):
    async with herald_process(tmp_path) as url:
        def scenario(page: Any) -> None:
            page.goto("/ui")
            actors = page.locator('[data-figure="actors"]')
            _expect(actors).to_have_text("0")
            for chart in ("chart-events", "chart-effects"):
                svg = page.locator(f"svg#{chart}")
                _expect(svg).to_be_visible()
                assert svg.bounding_box()["width"] > 200
                assert svg.get_attribute("role") == "img" and page.locator(f"#{chart}-desc").count() == 1
            assert page.get_by_role("button", name="Pause live updates").is_visible()  # console.js is running
            page.evaluate("window.__same_page = true")
            posted = httpx.post(url + "/v1/events", json=[{"type": "app_launch", "user_id": f"u{i}",
                                                           "timestamp": _stamp()} for i in range(3)])
            assert posted.status_code == 202
            _expect(actors).to_have_text("3")
            _expect(page.locator('[data-figure="events_total"]')).to_have_text("3")
            assert page.evaluate("window.__same_page") is True  # changed in place: no reload

        await browse(url, scenario)


async def test_an_actor_found_by_key_shows_its_timer_then_that_it_fired_and_the_delivery(tmp_path):
    async with Receiver.running() as receiver, herald_process(
            tmp_path, HERALD_FITNESS_NUDGE_MINUTES="0.05", HERALD_NOTIFY_URL=receiver.url + "/hook") as url:
        def scenario(page: Any) -> None:
            assert httpx.post(url + "/v1/event", json={"type": "app_launch", "user_id": "runner-7",
                                                       "timestamp": _stamp()}).status_code == 202
            page.goto("/ui/actors")
            page.get_by_label("Find an actor by key").fill("runner-7")
            page.get_by_role("button", name="Find").click()
            page.wait_for_url("**/ui/actors/runner-7")
            timers = page.locator('[data-region="timers"]')
            _expect(timers.get_by_role("row", name="nudge")).to_be_visible()
            # Three seconds later the timer fires; the page follows without a reload.
            _expect(timers).to_contain_text("No timer is pending.")
            _expect(page.locator('[data-region="effects"] .badge-delivered')).to_have_text("delivered")
            _expect(page.locator('[data-region="effects"]')).to_contain_text(receiver.url + "/hook")
            _expect(page.locator('[data-figure="timers"]')).to_have_text("0")

        await browse(url, scenario)
        [nudge] = receiver.delivered
        assert nudge["json"]["type"] == "nudge" and nudge["json"]["user_id"] == "runner-7"


async def test_a_dead_delivery_is_replayed_from_the_page_and_reaches_the_receiver(tmp_path):
    async with Receiver.running(statuses=[400, 200]) as receiver, herald_process(
            tmp_path, HERALD_NOTIFY_URL=receiver.url + "/hook") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post("/v1/events", json=[
                {"type": "training_program_started", "user_id": "u1", "timestamp": _stamp(40), "training_program_id": "p1"},
                {"type": "training_program_finished", "user_id": "u1", "timestamp": _stamp(0), "training_program_id": "p1"}])
            with trio.fail_after(10):
                while not (await client.get("/v1/outbox", params={"status": "dead"})).json()["effects"]:
                    await trio.sleep(0.05)
        assert receiver.delivered == []

        def scenario(page: Any) -> None:
            page.goto("/ui/deliveries")
            page.get_by_label("Status").select_option("dead")
            page.get_by_role("button", name="Filter").click()
            row = page.get_by_role("row").filter(has=page.locator(".badge-dead"))
            _expect(row).to_contain_text("answered 400")
            row.get_by_role("button", name="Replay").click()
            _expect(page.get_by_role("status")).to_contain_text("1 dead letter replayed")

        await browse(url, scenario)
        with trio.fail_after(10):
            [request] = await receiver.wait_for(1)
        assert request["json"]["type"] == "congratulate" and len(receiver.requests) == 2
        assert receiver.requests[0]["headers"]["idempotency-key"] == request["headers"]["idempotency-key"]


async def test_the_console_asks_for_the_token_once_and_a_form_without_its_csrf_token_is_refused(tmp_path):
    async with herald_process(tmp_path, HERALD_ADMIN_TOKEN=TOKEN) as url:
        def scenario(page: Any) -> None:
            page.goto("/ui/deliveries")
            page.wait_for_url("**/ui/login?next=/ui/deliveries")
            page.get_by_label("Admin token").fill("not-the-token")
            page.get_by_role("button", name="Sign in").click()
            _expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ui/deliveries")
            session = next(c for c in page.context.cookies() if c["name"] == "herald_session")
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            page.goto("/ui/events")  # signed in once: every console page opens
            _expect(page.get_by_role("heading", name="Events")).to_be_visible()
            # A forged post (no CSRF token) from the signed-in page is refused, and so is a form stripped of its token.
            status = page.evaluate("""async () => (await fetch('/ui/deliveries/replay', {method: 'POST',
                body: new URLSearchParams({id: '1'}), credentials: 'same-origin'})).status""")
            assert status == 403
            page.evaluate("document.querySelector('form.signout input[name=csrf]').remove()")
            page.get_by_role("button", name="Sign out").click()
            _expect(page.get_by_role("alert")).to_have_text("The form expired.")
            page.goto("/ui")
            _expect(page.get_by_role("heading", name="Overview")).to_be_visible()  # still signed in
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/ui/login")
            page.goto("/ui")
            page.wait_for_url("**/ui/login?next=/ui")

        await browse(url, scenario)


async def test_a_page_on_another_port_of_the_same_host_cannot_post_a_signed_in_form(tmp_path):
    """A same-site page (SameSite=Strict lets the session cookie go with its posts) that sets the
    CSRF cookie of an anonymous visit of its own and posts that visit's token: refused (403)."""
    import re
    from urllib.parse import urlsplit

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with herald_process(tmp_path, HERALD_ADMIN_TOKEN=TOKEN) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            made = await client.post("/customers", json={"customer": {"id": 77, "attributes": {"email": "a@b.example"}}},
                                     headers=bearer)
            assert made.status_code == 201, made.text
            anonymous = await client.get("/ui/login")  # what the sibling page's own server can fetch
            pre_token = re.search(r'name="csrf" value="([^"]+)"', anonymous.text)[1]
            pre_cookie = client.cookies["herald_csrf"]
        sibling = f"http://{urlsplit(url).hostname}:1"  # another port of the same host: the same site
        fields = {"rows": "1", "name-0": "email", "value-0": "forged@evil.example", "orig-0": "a@b.example",
                  "new_rows": "0", "csrf": pre_token}
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        evil = (f'<form method="post" action="{url}/ui/customers/77/edit">{inputs}</form>'
                "<script>document.forms[0].submit()</script>")

        def scenario(page: Any) -> str:
            page.goto("/ui/login")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ui")
            # The sibling page sets Herald's CSRF cookie (cookies are not scoped by port), then posts the form.
            page.route(sibling + "/**", lambda route: route.fulfill(
                status=200, content_type="text/html", body=evil,
                headers={"Set-Cookie": f"herald_csrf={pre_cookie}; Path=/ui; HttpOnly; SameSite=Strict"}))
            page.goto(sibling + "/offer.html")
            page.wait_for_url(lambda at: at.startswith(url))  # the form is posted
            page.wait_for_load_state("load")
            return page.content()

        answer = await browse(url, scenario)
        assert "csrf_failed" in answer, answer
        async with httpx.AsyncClient(base_url=url) as client:
            customer = (await client.get("/customers/77", headers=bearer)).json()["customer"]
        assert customer["attributes"]["email"] == "a@b.example"


def _tab_through(page: Any) -> None:
    """Tab from the top of the page: every control is reached, each with a visible focus ring."""
    count = page.evaluate(f"""() => {{
        const all = [...document.querySelectorAll('{FOCUSABLE}')].filter(e => !e.disabled);
        all.forEach((e, i) => e.dataset.kb = i);
        return all.length;
    }}""")
    assert count > 0
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: set[int] = set()
    for _ in range(count + 3):
        page.keyboard.press("Tab")
        focused = page.evaluate("""() => { const e = document.activeElement; const s = getComputedStyle(e);
            return [e.dataset.kb ?? null, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2]; }""")
        if focused[0] is not None:
            assert focused[1], f"no visible focus on control {focused[0]} of {page.url}"
            reached.add(int(focused[0]))
    assert reached == set(range(count)), (page.url, sorted(set(range(count)) - reached))


async def test_keyboard_alone_reaches_every_control_of_every_page(tmp_path):
    async with herald_process(tmp_path) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post("/v1/events", json=[{"type": "app_launch", "user_id": "kb-1", "timestamp": _stamp()},
                                                  {"type": "app_launch"}])

        def scenario(page: Any) -> None:
            for path in ("/ui", "/ui/actors", "/ui/actors/kb-1", "/ui/deliveries", "/ui/events"):
                page.goto(path)
                page.wait_for_load_state("load")
                _tab_through(page)
            # And the find form works from the keyboard: skip link, then into the form, type, Enter.
            page.goto("/ui/actors")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            page.get_by_label("Find an actor by key").focus()
            page.keyboard.type("kb-1")
            page.keyboard.press("Enter")
            page.wait_for_url("**/ui/actors/kb-1")

        await browse(url, scenario)


async def test_every_link_to_an_actor_opens_that_actor_whatever_its_key_holds(tmp_path):
    """Chromium resolves links as every browser does (dot segments, "%2e", "\\", "?", "#"): each key's
    link in the actors list opens that key's page, and its live refresh keeps to that actor."""
    keys = ["..", ".", "../../v1/journal", "/lead", "a//b", "a%2Fb", "%2e%2e", "a?b=1", "a#top", "a\\b", "שלום"]
    async with herald_process(tmp_path) as url:
        posted = httpx.post(url + "/v1/events", json=[{"type": "app_launch", "key": key, "timestamp": _stamp()}
                                                      for key in keys])
        assert posted.status_code == 202 and posted.json()["accepted"] == len(keys)

        def scenario(page: Any) -> None:
            for key in keys:
                page.goto("/ui/actors?plugin=fitness&per_page=500")
                page.get_by_role("link", name=key, exact=True).click()
                page.wait_for_load_state()
                assert page.locator("h1").inner_text() == f"Actor {key}", (key, page.url)
                if key in ("..", "a?b=1", "a#top"):  # the live refresh (every 2 s) asks for the same actor
                    with page.expect_response(lambda r: "/actor.json" in r.url, timeout=10_000) as refresh:
                        pass
                    assert refresh.value.status == 200, (key, refresh.value.url)

        await browse(url, scenario)

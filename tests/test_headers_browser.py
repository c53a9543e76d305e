"""Herald's pages under its Content-Security-Policy, in a real headless Chromium (Playwright).

One signed-in walk through every kind of page (sign-in, the console's overview with its live
refresh, an actor, deliveries, the tail, the customers pages with a form submitted, ``/docs``):
each must work and the browser must report no violation of the policy, neither as a
``securitypolicyviolation`` event nor on its console. A deliberate violation at the end proves
that the listener hears them.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import trio

from tests.chromium import expect as _expect, local_page
from tests.conftest import herald_process

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium)"),
]

TIMEOUT_MS = 20_000
TOKEN = "headers-browser-token-0123456789"
#: Every violation the page sees, reported on the console with a prefix the test collects.
LISTEN = """document.addEventListener("securitypolicyviolation", e =>
    console.error("CSP violation: " + e.violatedDirective + " " + (e.blockedURI || "inline") + " on "
                  + e.documentURI));"""


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat()



def _walk(base_url: str) -> dict[str, Any]:
    violations: list[str] = []
    errors: list[str] = []
    with local_page(base_url) as (page, offsite):
        page.set_default_timeout(TIMEOUT_MS)
        page.add_init_script(LISTEN)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: violations.append(msg.text) if msg.type == "error" and (
            "CSP violation" in msg.text or "Content Security Policy" in msg.text) else None)
        # Sign-in.
        page.goto("/ui/customers/7")
        page.wait_for_url("**/ui/login?next=/ui/customers/7")
        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/customers/7")
        _expect(page.get_by_role("heading", name="Customer 7")).to_be_visible()
        # The customers list, the edit form submitted.
        page.goto("/ui/customers")
        _expect(page.get_by_role("status")).to_contain_text("Showing 1–1 of 1 customer")
        page.goto("/ui/customers/7/edit")
        page.get_by_label("email", exact=True).fill("seven@herald.example")
        page.get_by_role("button", name="Save changes").click()
        _expect(page.get_by_role("status")).to_contain_text("Changes saved.")
        _expect(page.get_by_role("row", name="email seven@herald.example")).to_be_visible()
        # The overview: console.js runs and a figure moves without a reload.
        page.goto("/ui")
        actors = page.locator('[data-figure="actors"]')
        _expect(actors).to_have_text("1")
        assert page.get_by_role("button", name="Pause live updates").is_visible()
        page.evaluate("window.__same_page = true")
        posted = httpx.post(base_url + "/v1/event", json={"type": "app_launch", "user_id": "runner-1",
                                                           "timestamp": _stamp()})
        assert posted.status_code == 202
        _expect(actors).to_have_text("2")
        assert page.evaluate("window.__same_page") is True
        # An actor's page, deliveries, the tail of events (live too).
        page.goto("/ui/actors/runner-1")
        _expect(page.get_by_role("heading", name="runner-1")).to_be_visible()
        _expect(page.locator('[data-region="timers"]').get_by_role("row", name="nudge")).to_be_visible()
        page.goto("/ui/deliveries")
        _expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
        page.goto("/ui/events")
        _expect(page.get_by_role("heading", name="Events")).to_be_visible()
        _expect(page.get_by_role("button", name="Pause live updates")).to_be_visible()
        # The API explorer draws its operations.
        page.goto("/docs")
        page.wait_for_function("document.querySelectorAll('.swagger-ui .opblock').length > 10")
        _expect(page.locator(".swagger-ui .info .title")).to_contain_text("Herald")
        page.locator(".swagger-ui .opblock-summary").first.click()  # an operation opens (its body renders)
        _expect(page.locator(".swagger-ui .opblock-body").first).to_be_visible()
        clean = list(violations)
        # The listener hears a violation: an inline style attribute, added on purpose.
        page.goto("/ui")
        with page.expect_console_message(lambda msg: "CSP violation" in msg.text):
            page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
        canary = violations[len(clean):]
    return {"violations": clean, "canary": canary, "errors": errors, "offsite": offsite}


async def test_every_page_works_under_the_content_security_policy_with_no_violation(tmp_path):
    async with herald_process(tmp_path, HERALD_ADMIN_TOKEN=TOKEN, HERALD_FITNESS_NUDGE_MINUTES="60") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            accepted = await client.post("/v1/event", json={"type": "attributes", "user_id": "7",
                                                            "timestamp": _stamp(), "data": {"email": "seven@example.com"}})
            assert accepted.status_code == 202, accepted.text
        seen = await trio.to_thread.run_sync(_walk, url)
    assert seen["violations"] == [], seen["violations"]
    assert seen["errors"] == [] and seen["offsite"] == [], seen
    assert len(seen["canary"]) >= 1 and "style-src" in seen["canary"][0], seen["canary"]

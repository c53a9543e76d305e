"""End to end: `herald serve`, `herald load` into it, the assignment's verify tool, and the web UI in Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from plugins.customers.tests.summaries import expected_summaries
from engine.testing import free_port, herald_command

SHARED = next((p / "shared" for p in Path(__file__).resolve().parents if (p / "shared" / "tools").is_dir()), None)
VERIFY = SHARED / "tools" / "verify_customers.py" if SHARED else None

USERS, ANONYMOUS = 20, 3


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A messages file of the seed's shape (20 customers with email, city, ip and more; duplicated
    event lines; anonymous lines) and its expected summaries, from bench.gen_customers."""
    from bench.gen_customers import generate

    tmp = tmp_path_factory.mktemp("generated")
    messages, verify = tmp / "messages.data", tmp / "verify.csv"
    report = generate(str(messages), str(verify), users=USERS, attrs=10, events=600, max_events=15, dupes=0.1,
                      seed=1, anonymous=ANONYMOUS)
    return messages, verify, report


@pytest.fixture(scope="module")
def server(tmp_path_factory, generated):
    """A real `herald serve` with the generated file loaded through `herald load` (module-wide)."""
    messages, _verify, report = generated
    tmp = tmp_path_factory.mktemp("customers")
    port = free_port()
    env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_PORT": str(port), "HERALD_DATA_DIR": str(tmp / "data")}
    log = open(tmp / "herald.log", "wb")
    proc = subprocess.Popen([*herald_command(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp / "herald.log").read_text()
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "herald serve did not start"
            time.sleep(0.1)
        loaded = subprocess.run([*herald_command(), "load", "customers", str(messages), "--url", url, "--quiet"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert loaded.returncode == 0, loaded.stderr
        lines = report["lines"]  # duplicated event lines are applied (idempotently), anonymous ones skipped
        assert f"{lines:,} lines, {lines - ANONYMOUS:,} applied, skipped: anonymous {ANONYMOUS}" in loaded.stdout
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()


def test_the_loaded_server_matches_the_expected_summaries(server, generated):
    _messages, verify, _report = generated
    found, page = {}, 1
    while customers := httpx.get(server + "/customers", params={"page": page, "per_page": 7}).json()["customers"]:
        found.update({c["id"]: (c["attributes"], c["events"]) for c in customers})
        page += 1
    assert found == expected_summaries(verify) and len(found) == USERS


@pytest.mark.skipif(VERIFY is None or not VERIFY.exists(),
                    reason="optional: the assignment's own verify tool is in ../shared/tools, not beside the repository")
def test_verify_tool_passes_against_the_loaded_server(server, generated):
    result = subprocess.run([sys.executable, str(VERIFY), "--base-url", server, "--csv", str(generated[1])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_herald_load_reports_bad_lines_with_their_numbers(server, generated, tmp_path):
    bad = tmp_path / "bad.data"
    good = next(line for line in generated[0].read_bytes().splitlines() if b'"user_id"' in line)
    bad.write_bytes(good + b"\n{not json\n"
                    + b'{"id":"q","type":"event","user_id":"1","timestamp":1}\n')
    result = subprocess.run([*herald_command(), "load", "customers", str(bad), "--url", server, "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3 lines, 1 applied" in result.stdout
    assert "line 2: not valid JSON" in result.stdout and "line 3: name:" in result.stdout


# -- the web UI in a real browser ------------------------------------------------------


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.browser
def test_list_show_edit_save_reload(server, page):
    page.goto(server + "/ui/customers")
    assert page.title().startswith("Customers")
    assert "Showing 1–20 of 20 customers" in page.get_by_role("status").inner_text()
    page.get_by_role("link", name="2", exact=True).click()
    assert page.title().startswith("Customer 2")
    assert page.get_by_role("heading", name="Customer 2").is_visible()
    city = httpx.get(server + "/customers/2").json()["customer"]["attributes"]["city"]
    assert page.get_by_role("row", name=f"city {city}").is_visible()

    page.get_by_role("link", name="Edit attributes").click()
    page.get_by_label("city", exact=True).fill("Herald City")
    page.get_by_label("New attribute name").fill("plan")
    page.get_by_label("Value", exact=True).fill("gold plus")
    page.get_by_role("button", name="Save changes").click()

    expect(page.get_by_role("status")).to_contain_text("Changes saved.")
    page.reload()
    assert page.get_by_role("row", name="city Herald City").is_visible()
    assert page.get_by_role("row", name="plan gold plus").is_visible()
    assert httpx.get(server + "/customers/2").json()["customer"]["attributes"]["plan"] == "gold plus"


@pytest.mark.browser
def test_remove_an_attribute_with_the_keyboard_only(server, page):
    page.goto(server + "/ui/customers/3/edit")
    assert "ip" in httpx.get(server + "/customers/3").json()["customer"]["attributes"]
    page.get_by_label("Remove ip", exact=True).focus()
    page.keyboard.press("Space")
    page.get_by_role("button", name="Save changes").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/customers/3?saved=1")
    assert "ip" not in httpx.get(server + "/customers/3").json()["customer"]["attributes"]
    assert page.get_by_role("row", name="ip", exact=False).count() == 0


@pytest.mark.browser
def test_a_failed_save_explains_itself_and_keeps_the_input(server, page):
    page.goto(server + "/ui/customers/4/edit")
    page.get_by_label("email", exact=True).fill("")
    page.get_by_label("New attribute name").fill("city")  # exists already
    page.get_by_label("Value", exact=True).fill("Nowhere")
    page.get_by_role("button", name="Save changes").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The changes were not saved")
    assert "Email is required" in alert.inner_text() and "“city” exists already" in alert.inner_text()
    assert page.title().startswith("Error:")
    email = page.get_by_label("email", exact=True)
    assert email.get_attribute("aria-invalid") == "true"
    assert page.get_by_label("New attribute name").input_value() == "city"  # the input is kept
    # Nothing was saved.
    assert httpx.get(server + "/customers/4").json()["customer"]["attributes"]["email"] != ""


@pytest.mark.browser
def test_filter_and_paginate(server, page):
    page.goto(server + "/ui/customers?per_page=5")
    assert "Page 1 of 4" in page.get_by_role("navigation", name="Pagination").inner_text()
    page.get_by_role("link", name="Next page").click()
    expect(page.get_by_role("status")).to_contain_text("Showing 6–10 of 20")
    email = httpx.get(server + "/customers/11").json()["customer"]["attributes"]["email"]
    page.get_by_label("Filter by id or email").fill(email.upper())
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Showing 1–1 of 1 customers")
    assert page.get_by_role("link", name="11", exact=True).is_visible()

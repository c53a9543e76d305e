"""Headless Chromium for the browser tests: a page that may reach only the server under test."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextmanager
def local_page(base_url: str) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page (relative URLs resolve against ``base_url``) and the list of the requests it tried to
    make off that server, each refused (Playwright's sync API: call it from one thread)."""
    from playwright.sync_api import sync_playwright

    local = urlsplit(base_url).netloc
    offsite: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(base_url=base_url).new_page()

            def only_local(route: Any) -> None:
                if urlsplit(route.request.url).netloc == local or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    offsite.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            yield page, offsite
        finally:
            browser.close()


#: How long an assertion on a page waits: past the slowest live refresh (the overview polls every 5 s),
#: with room for a busy machine. Playwright's own default (5 s) races that refresh.
EXPECT_TIMEOUT_MS = 20_000


def expect(target: Any) -> Any:
    """Playwright's ``expect`` with :data:`EXPECT_TIMEOUT_MS`."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright_expect(target)

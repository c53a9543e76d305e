"""`/docs` in a real headless Chromium: Swagger UI renders every operation of `/openapi.json`.

For Herald (a real `herald serve`) and for the mock CRM on its own (its ``standalone_app()``
served by hypercorn). The browser runs in a worker thread (Playwright's sync API) so that the
trio loop keeps serving meanwhile; every request the page makes off this machine is recorded
and refused, so the explorer is proven to need nothing from the internet.
"""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest
import trio

from tests.chromium import local_page
from tests.conftest import herald_process

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium)"),
]

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
TIMEOUT_MS = 30_000
#: What Swagger UI shows when it cannot read a document (4.x on 3.1: the version pragma).
ERROR_TEXTS = ("does not specify a valid version field", "Unable to render this definition",
               "Failed to load API definition")


def operations(document: dict[str, Any]) -> tuple[set[tuple[str, str]], int]:
    """The document's (METHOD, path) pairs, and how many blocks Swagger UI draws for them
    (an operation appears once under each of its tags, once in "default" without one)."""
    ops = {(method.upper(), path) for path, item in document["paths"].items() for method in item
           if method in HTTP_METHODS}
    blocks = sum(max(1, len(op.get("tags", ()))) for item in document["paths"].values()
                 for method, op in item.items() if method in HTTP_METHODS)
    return ops, blocks


def render_docs(base_url: str, expected_blocks: int) -> dict[str, Any]:
    """Open ``base_url/docs`` in Chromium; wait until Swagger UI has drawn the operations; report."""
    page_errors: list[str] = []
    console_errors: list[str] = []
    with local_page(base_url) as (page, offsite):
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
        page.goto(base_url + "/docs", wait_until="load", timeout=TIMEOUT_MS)
        # Rendered (the title of the document), or failed (the version pragma / error box):
        page.wait_for_selector(".swagger-ui .info .title, .swagger-ui .version-pragma, .swagger-ui .errors-wrapper",
                               timeout=TIMEOUT_MS)
        if page.locator(".swagger-ui .info .title").count():
            page.wait_for_function("n => document.querySelectorAll('.swagger-ui .opblock').length >= n",
                                   arg=expected_blocks, timeout=TIMEOUT_MS)
        blocks = page.eval_on_selector_all(".swagger-ui .opblock", """els => els.map(el => [
            el.querySelector('.opblock-summary-method')?.textContent.trim(),
            el.querySelector('.opblock-summary-path')?.getAttribute('data-path')])""")
        return {
            "title": page.locator(".swagger-ui .info .title").first.inner_text() if blocks else "",
            "blocks": [tuple(b) for b in blocks],
            "text": page.locator("body").inner_text(),
            "error_boxes": page.locator(".swagger-ui .errors-wrapper, .swagger-ui .version-pragma").count(),
            "offsite": offsite,
            "page_errors": page_errors,
            "console_errors": console_errors,
        }


async def assert_docs_render(base_url: str, title: str) -> None:
    async with httpx.AsyncClient() as client:
        document = (await client.get(base_url + "/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    expected, blocks = operations(document)
    assert expected, "the document lists no operation"
    seen = await trio.to_thread.run_sync(render_docs, base_url, blocks)
    for text in ERROR_TEXTS:
        assert text not in seen["text"], seen["text"][:2000]
    assert seen["error_boxes"] == 0, seen["text"][:2000]
    assert seen["page_errors"] == [] and seen["console_errors"] == [], (seen["page_errors"], seen["console_errors"])
    assert seen["offsite"] == [], "the explorer asked for files off this machine"
    assert seen["title"].startswith(title), seen["title"]
    assert len(seen["blocks"]) == blocks
    assert set(seen["blocks"]) == expected


async def test_herald_docs_render_every_operation_in_chromium(tmp_path):
    async with herald_process(tmp_path) as url:
        await assert_docs_render(url, "Herald")


async def test_mock_crm_docs_render_every_operation_in_chromium():
    from engine.testing import serving
    from plugins.crm.mock_crm import standalone_app

    async with serving(standalone_app()) as url:
        await assert_docs_render(url, "Mock CRM")

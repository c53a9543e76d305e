"""The caching front (``deploy/nginx.conf``): a real nginx before a real ``herald serve`` and its poller.

``GET /search`` is answered from nginx's cache while Herald says it is fresh, and never past
Herald's next poll of the provider; nothing else is cached. The test runs the file as an
operator installs it (its ``${HERALD_...}`` settings filled in, nothing else changed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import httpx
import pytest
import trio

from deploy.front import SETTINGS, TEMPLATE, nginx_front, render
from plugins.marketplace.mock import MockProvider
from plugins.marketplace.tests.feeds import RESPONSE_1, RESPONSE_2

from .conftest import free_port, herald_process

#: The provider poll interval of the Herald under the front (seconds).
INTERVAL = 4
#: Los Morancos alone: its end and prices change between the two feeds.
WINDOW = "/search?starts_at=2021-07-31T00:00:00"


@pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (Debian: gettext-base) is not on PATH")
def test_the_documented_envsubst_command_renders_what_the_tests_run():
    """The header's install command and :func:`render` give the same file, nginx's variables kept."""
    text = TEMPLATE.read_text()
    assert sorted(set(re.findall(r"\$\{(\w+)\}", text))) == sorted(SETTINGS)
    [names] = re.findall(r"envsubst '([^']+)'", text)
    assert names.split() == [f"${name}" for name in SETTINGS]
    values = {"HERALD_LISTEN": "80", "HERALD_UPSTREAM": "10.0.0.7:8000", "HERALD_CACHE_DIR": "/var/cache/nginx/herald",
              "HERALD_ACCESS_LOG": "/var/log/nginx/herald.access.log combined buffer=64k flush=1s"}
    rendered = subprocess.run(["envsubst", names], input=text, capture_output=True, text=True, check=True,
                              env={**os.environ, **values}).stdout
    assert rendered == render(**values)
    assert "${HERALD" not in rendered and "$uri$is_args$args" in rendered and "$http_authorization" in rendered


async def _get(client: httpx.AsyncClient, path: str, **kwargs) -> httpx.Response:
    response = await client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nginx") is None,
                    reason="nginx is not on PATH (Debian: apt-get install nginx): the front is tested with the real one")
async def test_the_front_serves_search_from_its_cache_and_never_past_the_next_poll(tmp_path):
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "feed.xml").write_bytes(RESPONSE_1)
    with MockProvider(feeds, once=True).running() as provider:  # serves feed.xml as it is at each poll
        async with herald_process(tmp_path, HERALD_PLUGINS="marketplace", HERALD_MARKETPLACE_PROVIDER_URL=provider.url,
                                  HERALD_MARKETPLACE_POLL_SECONDS=str(INTERVAL),
                                  HERALD_TRUSTED_PROXIES="127.0.0.1") as herald_url:
            port = free_port()
            with nginx_front(tmp_path / "front", herald_url.removeprefix("http://"), port=port):
                async with httpx.AsyncClient(base_url=herald_url) as herald, \
                        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as front:
                    with trio.fail_after(15):  # the first poll
                        while not (await _get(herald, WINDOW)).json()["data"]["events"]:
                            await trio.sleep(0.05)
                    old = (await _get(herald, WINDOW)).content
                    assert b'"end_time":"21:00:00"' in old

                    # Asked again, the same window is answered by nginx (HIT), byte for byte Herald's answer.
                    statuses = []
                    with trio.fail_after(3 * INTERVAL):  # max-age is 0 in the second before a poll
                        while not statuses or statuses[-1] != "HIT":
                            answer = await _get(front, WINDOW)
                            statuses.append(answer.headers["x-cache-status"])
                            assert answer.content == old
                            await trio.sleep(0.05)
                    assert statuses[0] in ("MISS", "EXPIRED"), statuses
                    assert re.fullmatch(r"public, max-age=[0-9]+", answer.headers["cache-control"])
                    assert int(answer.headers["cache-control"].rpartition("=")[2]) <= INTERVAL
                    assert answer.headers["etag"] == (await _get(herald, WINDOW)).headers["etag"]

                    # Nothing else is cached: credentials bypass the cache, other methods and routes pass through.
                    for headers in ({"Authorization": "Bearer someone"}, {"Cookie": "herald_session=x"}):
                        for _ in range(2):
                            assert (await _get(front, WINDOW, headers=headers)).headers["x-cache-status"] == "BYPASS"
                    for _ in range(2):
                        posted = await front.post(WINDOW, content=b"{}")
                        assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"
                        assert posted.headers.get("x-cache-status", "") == ""
                        for path in ("/healthz", "/v1/actors/plan:1591:1642", "/ui/login"):
                            response = await front.get(path)
                            assert response.status_code in (200, 303) and "x-cache-status" not in response.headers, path

                    # The feed changes. Asked all the time meanwhile, the front answers the new plan as soon as
                    # Herald does (its answers were never kept past the poll), and within one interval of the
                    # change (±10 % jitter, the poll's read ahead of its instant, at most half an interval,
                    # and the poll's own time).
                    (feeds / "next.xml").write_bytes(RESPONSE_2)
                    os.replace(feeds / "next.xml", feeds / "feed.xml")
                    changed, seen = time.monotonic(), []
                    with trio.fail_after(INTERVAL * 1.6 + 10):
                        while True:
                            direct = (await _get(herald, WINDOW)).content
                            answer = await _get(front, WINDOW)
                            seen.append((f"{time.monotonic() - changed:.2f} s", "herald new" if direct != old else "herald old",
                                         "front new" if answer.content != old else "front old",
                                         answer.headers["x-cache-status"], answer.headers["cache-control"]))
                            if direct != old:
                                assert answer.content == direct, "\n".join(map(repr, seen[-20:]))
                                break
                            await trio.sleep(0.05)
                    assert time.monotonic() - changed < INTERVAL * 1.6 + 3, seen[-5:]
                    assert b'"end_time":"21:20:00"' in answer.content
                    with trio.fail_after(3 * INTERVAL):  # and the new answer is kept in turn
                        while answer.headers["x-cache-status"] != "HIT":
                            await trio.sleep(0.05)
                            answer = await _get(front, WINDOW)
                            assert answer.content == direct

"""The reusable client, against a real `herald serve`, and its retries against a flaky transport."""

from __future__ import annotations

import httpx
import pytest
import trio

from plugins.analytics.client import AsyncEyeClient, EyeAuthError, EyeClient, EyeError, event
from engine.testing import herald_command, herald_process


async def _token(url: str, name: str) -> str:
    result = await trio.run_process([*herald_command(), "tokens", "create", name, "--url", url],
                                    capture_stdout=True, capture_stderr=True)
    return result.stdout.decode().strip().splitlines()[-1]


async def test_sync_and_async_clients_against_a_real_server(tmp_path):
    async with herald_process(tmp_path) as url:
        token = await _token(url, "shop")
        assert token.startswith("eye_")

        def use_sync() -> tuple[list[str], list[dict]]:
            with EyeClient(url, token, batch_size=3, flush_interval=60) as eye:
                for n in range(7):
                    eye.send("page interaction", "pageview", {"host": "shop.test", "path": f"/p/{n}"},
                             session_id="sync-1", timestamp=f"2021-01-01 09:00:0{n}")
                eye.send("page interaction", "pageview", {"host": "shop.test"}, session_id="sync-1")  # no path
                ids = eye.flush()
                return ids, list(eye.events(session_id="sync-1", limit=2))

        ids, stored = await trio.to_thread.run_sync(use_sync)
        assert len(ids) == 8 and [e["data"]["path"] for e in stored] == [f"/p/{n}" for n in range(7)]

        async with AsyncEyeClient(url, token, batch_size=50, flush_interval=0.05) as eye:
            await eye.send("form interaction", "submit", {"host": "h", "path": "/", "form": {"a": "b"}},
                           session_id="async-1")
            await eye.send_payload(event("page interaction", "cta click", {"host": "h", "path": "/"},
                                         session_id="async-1"))
            with trio.fail_after(5):
                while not await eye.errors(session_id="async-1"):  # the background task flushes
                    await trio.sleep(0.05)
            stored = await eye.events(session_id="async-1")
            errors = await eye.errors(session_id="async-1")
        assert [e["name"] for e in stored] == ["submit"]
        assert [(e["field"], e["code"]) for e in errors] == [("data.element", "required")]

        listing = await trio.run_process([*herald_command(), "tokens", "list", "--url", url], capture_stdout=True)
        assert "shop" in listing.stdout.decode() and "active" in listing.stdout.decode()
        await trio.run_process([*herald_command(), "tokens", "revoke", "shop", "--url", url], capture_stdout=True)

        def rejected() -> None:
            client = EyeClient(url, token)
            try:
                client.send("page interaction", "pageview", {"host": "h", "path": "/"}, session_id="x")
                with pytest.raises(EyeAuthError, match="revoked"):
                    client.flush()
                assert client.pending == 1
            finally:
                client.close(discard=True)

        await trio.to_thread.run_sync(rejected)


def test_retries_with_backoff_then_gives_up():
    answers = iter([503, 502, 202])
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        status = next(answers)
        return httpx.Response(status, json={"accepted": 1, "ids": ["e1"]} if status == 202 else {})

    with EyeClient("http://eye.test", "t0k", backoff=0.001, transport=httpx.MockTransport(handler)) as eye:
        eye.send("c", "n", {"a": 1}, session_id="s")
        assert eye.flush() == ["e1"]
    assert seen == ["Token t0k"] * 3

    def always_down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    eye = EyeClient("http://eye.test", "t0k", backoff=0.001, max_retries=2, transport=httpx.MockTransport(always_down))
    eye.send("c", "n", {"a": 1}, session_id="s")
    with pytest.raises(EyeError, match="refused"):
        eye.flush()
    eye.send("c", "n", {"a": 2}, session_id="s")
    assert eye.pending == 2, "events that could not be sent stay queued"
    with pytest.raises(EyeError):
        eye.flush()
    eye.close(discard=True)


def test_a_400_is_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": {"code": "malformed_json", "message": "bad", "field": None}})

    eye = EyeClient("http://eye.test", "t", backoff=0.001, transport=httpx.MockTransport(handler))
    eye.send("c", "n", {"a": 1}, session_id="s")
    with pytest.raises(EyeError, match="bad"):
        eye.flush()
    eye.close(discard=True)
    assert len(calls) == 1

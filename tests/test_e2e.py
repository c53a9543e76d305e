"""End to end: `herald serve` as a real process, real sockets, real receivers."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import trio

from engine.testing import Receiver

from .conftest import herald_process
from plugins.fitness.tests.test_rules import SNAPSHOT


async def test_seed_snapshot_over_http_reaches_a_real_receiver(tmp_path):
    async with Receiver.running() as receiver:
        async with herald_process(tmp_path, HERALD_NOTIFY_URL=receiver.url + "/v1/notify") as url:
            async with httpx.AsyncClient(base_url=url) as client:
                for event in SNAPSHOT:
                    assert (await client.post("/v1/event", json=event)).status_code == 202
                with trio.fail_after(10):
                    delivered = await receiver.wait_for(2)
                foo1 = (await client.get("/v1/actors/foo1")).json()
    nudge, congrats = (r["json"] for r in delivered)
    assert (nudge["type"], nudge["user_id"]) == ("nudge", "foo2")
    assert (congrats["type"], congrats["user_id"], congrats["minutes"]) == ("congratulate", "foo1", 36.3)
    assert "36 minutes" in congrats["message"]
    assert all(r["headers"]["idempotency-key"].startswith("fitness:") for r in delivered)
    assert foo1["states"]["fitness"]["programs_finished"] == 1


async def test_live_nudge_fires_in_real_time_with_the_default_sink(tmp_path):
    # A 1.2 s nudge window; the notification goes to Herald's own /v1/notify.
    async with herald_process(tmp_path, HERALD_FITNESS_NUDGE_MINUTES="0.02") as url:
        launched = datetime.now(timezone.utc)
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/v1/event", json={"user_id": "live", "type": "app_launch",
                                                     "timestamp": launched.isoformat()})
            assert r.status_code == 202
            with trio.fail_after(10):
                while not (notes := (await client.get("/v1/notify")).json()["notifications"]):
                    await trio.sleep(0.1)
    [note] = notes
    assert note["payload"]["type"] == "nudge" and note["payload"]["user_id"] == "live"
    due = datetime.fromisoformat(note["payload"]["due_at"])
    assert due == launched + timedelta(seconds=1.2)


ADMIN_TOKEN = "e2e-admin-token-0123456789"
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")


async def run_schemathesis(tmp_path, max_examples: int) -> str:
    """Every schemathesis check on every documented operation of `herald serve` (all bundled plugins,
    HERALD_ADMIN_TOKEN set): the admin bearer token and a client token of The Eye, each where the
    operation's security scheme asks for it (see schemathesis.toml). Fails on any failure."""
    async with herald_process(tmp_path, HERALD_ADMIN_TOKEN=ADMIN_TOKEN) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            created = await client.post("/v1/admin/tokens", json={"name": "schemathesis"},
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert created.status_code == 201, created.text
        result = await trio.run_process(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(SCHEMATHESIS_CONFIG),
             "run", url + "/openapi.json", "--checks", "all", "--max-examples", str(max_examples), "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path,  # its cache stays out of the repo
            env={**os.environ, "HERALD_ADMIN_TOKEN": ADMIN_TOKEN, "EYE_TOKEN": created.json()["token"]},
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output, output[-6000:]
    return output


async def test_schemathesis_all_checks_find_nothing(tmp_path):
    await run_schemathesis(tmp_path, max_examples=8)  # the deeper pass (100) runs under -m slow


@pytest.mark.slow
async def test_schemathesis_all_checks_find_nothing_deeper(tmp_path):
    await run_schemathesis(tmp_path, max_examples=100)

"""End to end: `herald serve` as a real process, real sockets, real receivers."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import httpx
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


async def test_schemathesis_finds_no_server_errors(tmp_path):
    async with herald_process(tmp_path) as url:
        result = await trio.run_process(
            [sys.executable, "-m", "schemathesis.cli", "run", url + "/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path,  # its cache stays out of the repo
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output[-4000:]
    assert "passed" in output

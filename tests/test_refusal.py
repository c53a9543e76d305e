"""One truth for readiness: every reason to refuse events answers the same through ingestion (503 with
the reason's code) and ``/healthz`` (503, ``status`` the same code), and both accept together.

Single mode runs the in-process app; the cluster's reasons drive a cluster node's state without a
broker (its producer is a stand-in that acknowledges at once), so each reason is met for sure.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx
import trio

from engine import Config
from engine.host import Herald, PluginHost
from engine._cluster import _Healing
from web.testing import app_client
from plugins.fitness import hooks as fitness

EVENT = {"type": "app_launch", "user_id": "u1", "timestamp": "2021-03-01T08:00:00Z"}


async def answers(client: httpx.AsyncClient) -> tuple[tuple[int, str], tuple[int, str]]:
    """(status, code) of /healthz and of a posted event."""
    health = await client.get("/healthz")
    posted = await client.post("/v1/event", json=EVENT)
    body = posted.json()
    return ((health.status_code, health.json()["status"]),
            (posted.status_code, body["error"]["code"] if posted.status_code == 503 else "accepted"))


async def walk(client: httpx.AsyncClient, reasons: list[tuple[str, Callable[[], None], Callable[[], None]]]) -> None:
    assert await answers(client) == ((200, "ready"), (202, "accepted"))
    for code, enter, leave in reasons:
        enter()
        health, posted = await answers(client)
        assert health == (503, code) and posted == (503, code), (code, health, posted)
        body = (await client.get("/healthz")).json()
        assert body["ready"] is False and body["refusal"]["code"] == code and body["refusal"]["reason"]
        leave()
        assert await answers(client) == ((200, "ready"), (202, "accepted")), code


async def test_every_refusal_of_a_single_process_is_told_alike_by_ingestion_and_healthz():
    async with app_client([fitness]) as (herald, client):
        def status(value: str, ready: bool = False) -> Callable[[], None]:
            def set_it() -> None:
                herald.status, herald.ready = value, ready
            return set_it

        def replaying(on: bool, value: str) -> Callable[[], None]:
            def set_it() -> None:
                herald._replaying, herald.status = on, value
            return set_it

        await walk(client, [
            ("starting", status("starting"), status("ready", True)),
            ("joining", status("joining"), status("ready", True)),
            ("loading", status("loading"), status("ready", True)),
            ("replaying", replaying(True, "replaying"), replaying(False, "ready")),
            ("recovering", replaying(True, "recovering"), replaying(False, "ready")),
            # The journal failed: refused at once, before the background retry noticed (ready still True).
            ("journal_failed", lambda: herald.journal.fail(OSError("disk full")), herald.journal.resume),
            ("stopping", status("stopping"), status("ready", True)),
            ("failed", status("failed"), status("ready", True)),
        ])


class _Acknowledging:
    """A producer that acknowledges every message at once (no broker)."""

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = 0, on_delivery: Any = None,
                headers: Any = None) -> None:
        if on_delivery is not None:
            on_delivery(None, _Message(partition))

    def poll(self, timeout: float = 0) -> int:
        return 0


class _Message:
    def __init__(self, partition: int) -> None:
        self._partition = partition

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return 0


async def test_every_refusal_of_a_cluster_node_is_told_alike_by_ingestion_and_healthz():
    from server import create_app

    config = Config(cluster="127.0.0.1:1", durability="memory", cluster_replicas=False)
    herald = Herald(config, PluginHost.from_objects(config, [fitness]))
    cluster = herald.cluster
    # A node that joined (not run here: its state is driven below).
    herald.status, herald.ready = "ready", True
    cluster._token = trio.lowlevel.current_trio_token()
    cluster._producer = _Acknowledging()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(herald)), base_url="http://h") as client:
        def setter(name: str, value: Any, back: Any) -> tuple[Callable[[], None], Callable[[], None]]:
            return lambda: setattr(cluster, name, value), lambda: setattr(cluster, name, back)

        restoring = _Healing("the producer failed: PRODUCER_FENCED")
        restoring.phase = "restoring"
        await walk(client, [
            ("joining", *setter("_producer", None, cluster._producer)),
            ("cluster_failed", *setter("failure", "the broker lost data", None)),
            ("healing", *setter("_healing", _Healing("the producer failed: PRODUCER_FENCED"), None)),
            ("restoring", *setter("_healing", restoring, None)),
            ("healing", *setter("_stalled_for", 20.0, None)),  # woken from a stall, before the heal began
            ("broker_unreachable", *setter("_broker_seen", time.monotonic() - 10, time.monotonic())),
            ("stopping", lambda: setattr(herald, "status", "stopping"), lambda: setattr(herald, "status", "ready")),
        ])

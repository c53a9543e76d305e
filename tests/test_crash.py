"""Crash recovery with real processes: kill -9 mid-load, restart, nothing acknowledged is lost,
every notification that became due reaches a real receiver, once per idempotency key."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator

import httpx
import trio

from engine.testing import Receiver

from .conftest import free_port
from .conftest import herald_command as _herald_command

T0 = datetime(2021, 3, 1, 6, 0, tzinfo=timezone.utc)
USERS, PINGS, PAIRS, CLIENTS = 200, 80, 10, 4


class Server:
    """`herald serve` on a fixed port and data dir, which can be killed and restarted."""

    def __init__(self, tmp_path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_PORT": str(self.port),
                    "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_DURABILITY": "batch",
                    "HERALD_OUTBOX_DELAYS": "0.05,0.1,0.2,0.5,1,1,1,1,1,1", **env}
        self.log_path = tmp_path / "herald.log"
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*_herald_command(), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        async with httpx.AsyncClient() as client:
            with trio.fail_after(60):
                while True:
                    assert self.proc.poll() is None, self.log_path.read_text()
                    try:
                        if (await client.get(self.url + "/healthz")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                while self.proc.poll() is None:
                    await trio.sleep(0.05)
            assert self.proc.returncode == 0, self.log_path.read_text()[-3000:]


@asynccontextmanager
async def server(tmp_path, **env: str) -> AsyncIterator[Server]:
    s = Server(tmp_path, **env)
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def workload(rng: random.Random) -> tuple[list[list[dict]], set[str], dict[str, int]]:
    """Per-client event streams (each user's events in order, users interleaved),
    the congratulations they must cause, and each user's ping count."""
    streams: list[list[list[dict]]] = [[] for _ in range(CLIENTS)]
    expected, pings = set(), {}
    for u in range(USERS):
        user, t, events = f"user{u}", T0 + timedelta(seconds=u), []
        kinds = ["ping"] * PINGS + ["pair"] * PAIRS
        rng.shuffle(kinds)
        for n, kind in enumerate(kinds):
            t += timedelta(minutes=1)
            if kind == "ping":
                events.append({"id": f"{user}-{n}", "user_id": user, "type": "ping", "timestamp": t.isoformat()})
                continue
            program, minutes = f"p{n}", rng.choice([20, 30, 31, 45])
            finish = t + timedelta(minutes=minutes)
            events.append({"id": f"{user}-{n}-s", "user_id": user, "type": "training_program_started",
                           "training_program_id": program, "timestamp": t.isoformat()})
            events.append({"id": f"{user}-{n}-f", "user_id": user, "type": "training_program_finished",
                           "training_program_id": program, "timestamp": finish.isoformat()})
            if minutes > 30:
                expected.add(f"fitness:congratulate:{user}:{program}:{finish.isoformat()}")
            t = finish
        pings[user] = PINGS
        streams[u % CLIENTS].append(events)
    merged = []
    for users in streams:  # round-robin over the client's users keeps each user's order
        out, queues = [], [list(q) for q in users]
        while any(queues):
            for q in queues:
                if q:
                    out.append(q.pop(0))
        merged.append(out)
    return merged, expected, pings


async def send_stream(client: httpx.AsyncClient, url: str, events: list[dict], acked: set[str],
                      rng: random.Random) -> None:
    """Send singles and batches in order; stop at the first connection failure."""
    i = 0
    while i < len(events):
        if events[i]["id"] in acked:
            i += 1
            continue
        size = 1 if rng.random() < 0.3 else rng.randint(2, 40)
        chunk = [e for e in events[i:i + size] if e["id"] not in acked]
        try:
            if len(chunk) == 1:
                response = await client.post(url + "/v1/event", json=chunk[0])
            else:
                response = await client.post(url + "/v1/events", json=chunk)
        except httpx.TransportError:
            return
        assert response.status_code == 202, response.text
        acked.update(e["id"] for e in chunk)
        i += size


async def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(20261125)
    streams, expected, pings = workload(rng)
    total = sum(map(len, streams))
    assert total >= 20_000 and len(expected) > 500
    acked: set[str] = set()
    kill_after = rng.randint(total // 5, total * 3 // 5)
    async with Receiver.running() as receiver, server(tmp_path, HERALD_NOTIFY_URL=receiver.url + "/n") as herald:
        await herald.start()
        async with httpx.AsyncClient(timeout=30) as client:
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(send_stream, client, herald.url, stream, acked, random.Random(rng.random()))

                async def killer() -> None:
                    while len(acked) < kill_after:
                        await trio.sleep(0.001)
                    herald.kill()

                nursery.start_soon(killer)
            acked_at_kill = set(acked)
            assert kill_after <= len(acked_at_kill) < total

            await herald.start()  # same data dir: snapshot + journal replay
            for u in range(USERS):  # every acknowledged ping survived
                user = f"user{u}"
                actor = (await client.get(f"{herald.url}/v1/actors/{user}")).json()
                count = actor.get("unknown", {}).get("ping", 0)
                acked_pings = sum(1 for n in range(PINGS + PAIRS) if f"{user}-{n}" in acked_at_kill)
                assert count >= acked_pings, (user, count, acked_pings)

            # Clients retry what they did not see acknowledged, with the same ids.
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(send_stream, client, herald.url, stream, acked, random.Random(rng.random()))
            assert len(acked) == total
            for u in range(0, USERS, 7):  # now exactly once each: repeats were recognised
                actor = (await client.get(f"{herald.url}/v1/actors/user{u}")).json()
                assert actor["unknown"]["ping"] == pings[f"user{u}"]
                assert actor["states"]["fitness"]["programs_finished"] == PAIRS

            with trio.fail_after(60):
                while set(receiver.keys) != expected:
                    await receiver.wait_for(len(receiver.delivered) + 1)
            # Repeats could still be on their way until Herald has nothing pending and the receiver
            # has answered everything: wait for that, then count.
            with trio.fail_after(60):
                while ((await client.get(f"{herald.url}/v1/outbox?status=pending")).json()["effects"]
                       or not all(r["answered"] for r in receiver.requests)):
                    await trio.sleep(0.05)
            outbox = (await client.get(f"{herald.url}/v1/outbox?status=pending")).json()["effects"]
            dead = (await client.get(f"{herald.url}/v1/outbox?status=dead")).json()["effects"]
        await herald.stop()
    keys = receiver.keys
    assert set(keys) == expected
    # At most the deliveries in flight at the kill can repeat, with the same key.
    assert len(keys) - len(set(keys)) <= 16
    assert outbox == [] and dead == []


async def test_a_timer_due_while_down_fires_once_after_restart(tmp_path):
    async with Receiver.running() as receiver, server(
        tmp_path, HERALD_NOTIFY_URL=receiver.url + "/n", HERALD_FITNESS_NUDGE_MINUTES="0.02"  # 1.2 s
    ) as herald:
        await herald.start()
        async with httpx.AsyncClient() as client:
            launch = {"id": "launch-1", "user_id": "sleeper", "type": "app_launch",
                      "timestamp": datetime.now(timezone.utc).isoformat()}
            assert (await client.post(herald.url + "/v1/event", json=launch)).status_code == 202
        herald.kill()
        await trio.sleep(1.5)  # the process is down while the nudge falls due
        assert receiver.requests == []
        await herald.start()
        with trio.fail_after(10):
            await receiver.wait_for(1)
        await herald.stop()
        await herald.start()  # a clean restart: the nudge is known as sent
        # Had the restart armed the nudge again, it would be listed on the actor until it fired,
        # then pending in the outbox until delivered: wait until neither holds anything.
        async with httpx.AsyncClient() as client:
            with trio.fail_after(30):
                while ((await client.get(herald.url + "/v1/actors/sleeper")).json()["timers"]
                       or (await client.get(herald.url + "/v1/outbox?status=pending")).json()["effects"]
                       or not all(r["answered"] for r in receiver.requests)):
                    await trio.sleep(0.05)
        await herald.stop()
    assert [r["json"]["type"] for r in receiver.delivered] == ["nudge"]

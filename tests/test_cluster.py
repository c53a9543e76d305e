"""Herald as a cluster over Kafka: several ``herald serve --cluster`` processes on one real broker.

Each test starts its own Tansu broker (the ``kafka_bootstrap`` fixture) and
Herald processes on 127.0.0.1, posts events over HTTP, kills or stops nodes,
and compares what the cluster holds with a single in-process engine fed the
same events (:class:`engine.testing.Simulation`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx
import orjson
import pytest
import trio

from engine.testing import Receiver, Simulation, free_port, herald_command
from plugins.fitness import hooks as fitness

pytestmark = pytest.mark.kafka

BASE = datetime(2021, 3, 1, 8, 0, tzinfo=timezone.utc)
#: The events of the big test span 71 minutes; with two hours of allowed lateness the watermark never
#: fires a timer, so each user's result depends on that user's events alone, in whatever order users
#: interleave (a single process and a partitioned cluster then agree exactly).
SETTINGS = {"HERALD_ALLOWED_LATENESS": "7200"}


class Node:
    """One ``herald serve --cluster`` process: start it, wait until it serves, kill or stop it."""

    def __init__(self, tmp_path: Path, name: str, bootstrap: str, **env: str) -> None:
        self.name, self.dir = name, tmp_path / name
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HERALD_LOG_LEVEL": "INFO", "HERALD_PORT": str(self.port),
                    "HERALD_DATA_DIR": str(self.dir / "data"), "HERALD_CLUSTER": bootstrap,
                    "HERALD_NODE_ID": name, "HERALD_PLUGINS": "fitness", **env}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.dir / f"herald-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([*herald_command(), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-6000:] for p in sorted(self.dir.glob("herald-*.log")))

    async def health(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        try:
            return (await client.get(self.url + "/healthz")).json()
        except (httpx.TransportError, ValueError):
            return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM: a graceful leave (the node checkpoints and hands its partitions over)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while self.proc.poll() is None:
                await trio.sleep(0.05)
        return self.proc.returncode


async def wait_until(condition: Any, timeout: float, what: str, nodes: list[Node] = ()) -> None:
    """Wait (polling) until ``await condition()`` is true."""
    with trio.move_on_after(timeout) as scope:
        while not await condition():
            await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(n.logs() for n in nodes))


async def settled(client: httpx.AsyncClient, nodes: list[Node], partitions: int = 6, *,
                  caught_up: bool = True) -> bool:
    """Every partition is served by exactly one of ``nodes`` and restored; with ``caught_up`` also
    applied to its end (no lag), seen twice a second apart (a node measures its lag twice a second)."""
    if not await _settled_now(client, nodes, partitions, caught_up):
        return False
    if not caught_up:
        return True
    await trio.sleep(1.0)
    return await _settled_now(client, nodes, partitions, caught_up)


async def _settled_now(client: httpx.AsyncClient, nodes: list[Node], partitions: int, caught_up: bool) -> bool:
    served: list[int] = []
    for node in nodes:
        health = await node.health(client)
        if health is None or "cluster" not in health:
            return False
        cluster = health["cluster"]
        if cluster["restore"]["restoring"] or (caught_up and any(cluster["lag"].values())):
            return False
        served.extend(cluster["ready"])
    return sorted(served) == list(range(partitions))


@asynccontextmanager
async def cluster_of(tmp_path: Path, bootstrap: str, count: int, partitions: int = 6,
                     **env: str) -> AsyncIterator[tuple[httpx.AsyncClient, list[Node]]]:
    """``count`` nodes sharing the partitions (caught up); killed when the block ends."""
    nodes = [Node(tmp_path, f"n{i}", bootstrap, **env) for i in range(count)]
    try:
        for node in nodes:
            node.start()
        async with httpx.AsyncClient() as client:
            await wait_until(lambda: settled(client, nodes, partitions), 60, f"{count} nodes sharing the partitions",
                             nodes)
            yield client, nodes
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.kill()


def user_events(user: int, rng: random.Random) -> list[dict[str, Any]]:
    """Ten fitness events of one user within an hour: programs trained for 20-40 minutes, launches
    followed by a start or not (a nudge falls due when the user's next event passes it)."""
    key = f"user{user}"
    t = BASE + timedelta(seconds=rng.randrange(300))
    events = []

    def add(type_: str, minutes: float, **data: Any) -> None:
        nonlocal t
        t += timedelta(minutes=minutes)
        events.append({"id": f"{key}-{len(events)}", "type": type_, "user_id": key, "device_id": f"d{user}",
                       "timestamp": t.isoformat(), **data})

    add("app_launch", 0)
    add("training_program_started", rng.choice([1, 12]), training_program_id="p1")
    add("training_program_finished", rng.choice([20, 35]), training_program_id="p1")
    add("app_launch", 1)
    add("app_launch", rng.choice([3, 11]))
    add("training_program_started", 1, training_program_id="p2")
    add("training_program_cancelled", 1, training_program_id="p2")
    add("training_program_started", 1, training_program_id="p3")
    add("training_program_finished", rng.choice([2, 3]), training_program_id="p3")
    add("app_launch", 1)
    return events


async def expected_run(events: list[dict[str, Any]], users: list[str]) -> tuple[dict[str, Any], set[str]]:
    """What a single in-process engine holds after the same events: each user's view, the notification keys."""
    async with Simulation([fitness], env=SETTINGS) as sim:
        for raw in events:
            sim.apply(raw)
        views = {key: sim.actor_view(key) for key in users}
        keys = {n.idempotency_key for n in sim.notifications}
    return views, keys


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """What must be equal wherever the actor lives (its clock reads the wall, which differs), as JSON."""
    return orjson.loads(orjson.dumps({"states": view["states"], "timers": view["timers"], "unknown": view["unknown"]}))


async def assert_cluster_holds(client: httpx.AsyncClient, nodes: list[Node], users: list[str],
                               expected: dict[str, Any], expected_keys: set[str], receiver: Receiver) -> None:
    """Every user as the cluster holds it, asked of any node round-robin (queries go to the owner), equals
    what a single engine holds; every expected notification key arrived (nothing else), each with one body."""
    mismatched = []
    for i, key in enumerate(users):
        response = await client.get(f"{nodes[i % len(nodes)].url}/v1/actors/{key}")
        assert response.status_code == 200, (key, response.text)
        if comparable(response.json()) != comparable(expected[key]):
            mismatched.append((key, response.json(), expected[key]))
    assert not mismatched, f"{len(mismatched)} users differ, e.g. {mismatched[:1]}"
    with trio.move_on_after(60):
        while set(receiver.keys) < expected_keys:
            await trio.sleep(0.1)
    assert set(receiver.keys) == expected_keys, len(expected_keys - set(receiver.keys))
    bodies: dict[str, set[bytes]] = {}
    for request in receiver.delivered:
        bodies.setdefault(request["headers"]["idempotency-key"], set()).add(
            orjson.dumps(request["json"], option=orjson.OPT_SORT_KEYS))
    differing = {k: sorted(b) for k, b in bodies.items() if len(b) > 1}
    assert not differing, list(differing.items())[:3]


async def post_all(client: httpx.AsyncClient, nodes: list[Node], batches: list[list[dict]], progress: dict,
                   pace: float = 0.0, timeout: float = 30) -> None:
    """Post batches in order (one every ``pace`` seconds), round-robin over the nodes; a batch refused
    (503) or unanswered (a failed or stopped node) goes again, same ids, to the next node, as a client
    retrying would."""
    turn = 0
    for batch in batches:
        while True:
            node = nodes[turn % len(nodes)]
            turn += 1
            try:
                response = await client.post(node.url + "/v1/events", json=batch, timeout=timeout)
            except httpx.TransportError:
                progress["retries"] += 1
                continue
            if response.status_code == 202:
                break
            assert response.status_code == 503, response.text
            progress["retries"] += 1
            await trio.sleep(0.1)
        progress["posted"] += len(batch)
        if pace:
            await trio.sleep(pace)


async def test_three_nodes_a_killed_node_loses_nothing_and_sends_each_notification(kafka_bootstrap, tmp_path):
    rng = random.Random(16)
    users = [f"user{u}" for u in range(2000)]
    per_user = [user_events(u, rng) for u in range(2000)]
    # Four clients, each posting its users' events in order (a user's events never race each other).
    streams: list[list[dict]] = [[] for _ in range(4)]
    for u, events in enumerate(per_user):
        streams[u % 4].append(events)
    batches_of = []
    for stream in streams:
        ordered = [e for step in range(10) for events in stream for e in events[step:step + 1]]
        batches_of.append([ordered[i:i + 100] for i in range(0, len(ordered), 100)])
    all_events = [e for events in per_user for e in events]
    assert len(all_events) == 20_000
    expected, expected_keys = await expected_run(all_events, users)
    assert len(expected_keys) > 2000  # nudges and congratulations both happen

    async with Receiver.running() as receiver:
        nodes = [Node(tmp_path, f"n{i}", kafka_bootstrap, HERALD_NOTIFY_URL=receiver.url + "/notify", **SETTINGS)
                 for i in range(3)]
        try:
            for node in nodes:
                node.start()
            async with httpx.AsyncClient() as client:
                await wait_until(lambda: settled(client, nodes), 60, "three nodes sharing the partitions", nodes)
                progress = {"posted": 0, "retries": 0}
                async with trio.open_nursery() as nursery:
                    for batches in batches_of:
                        nursery.start_soon(post_all, client, nodes, batches, progress)
                    with trio.fail_after(120):
                        # Mid-stream, once the victim checkpointed some of its actors (every 2 s).
                        while progress["posted"] < 8_000 or (await nodes[1].health(client))["cluster"]["checkpoints"] < 2:
                            await trio.sleep(0.05)
                    nodes[1].kill()  # without a goodbye
                    # The others take its partitions over (restoring them) while the posts go on ...
                    await wait_until(lambda: settled(client, [nodes[0], nodes[2]], caught_up=False), 60,
                                     "the takeover", nodes)
                    restored = [(await node.health(client))["cluster"]["restore"]["actors"] for node in nodes[::2]]
                    assert sum(restored) > 0, restored  # the partitions moved, with their actors
                    nodes[1].start()  # ... and it comes back later, under the same name
                await wait_until(lambda: settled(client, nodes), 90, "the cluster to settle after the restart", nodes)
                assert progress["retries"] > 0  # the killed node really refused some posts
                # The cluster's singletons (plugins' sources) run once: on the owner of partition 0.
                healths = [(await node.health(client))["cluster"] for node in nodes]
                assert [h["singletons"] for h in healths] == [0 in h["ready"] for h in healths]
                assert sum(h["singletons"] for h in healths) == 1
                await assert_cluster_holds(client, nodes, users, expected, expected_keys, receiver)
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


async def test_a_nudge_due_during_a_rebalance_is_sent_once(kafka_bootstrap, tmp_path):
    """Partitions move on a graceful leave and back on a join; timers move with them and fire once."""
    async with Receiver.running() as receiver:
        nodes = [Node(tmp_path, f"n{i}", kafka_bootstrap, HERALD_NOTIFY_URL=receiver.url + "/notify",
                      HERALD_CLUSTER_PARTITIONS="4", HERALD_FITNESS_NUDGE_MINUTES="0.2") for i in range(2)]
        try:
            for node in nodes:
                node.start()
            async with httpx.AsyncClient() as client:
                await wait_until(lambda: settled(client, nodes, 4), 60, "two nodes sharing the partitions", nodes)
                # Launches now, nudged 12 s later by each user's own clock (running at wall speed
                # between events): the nudges fall due while the partitions move.
                now = datetime.now(timezone.utc)
                launches = [{"id": f"l{u}", "type": "app_launch", "user_id": f"u{u}", "timestamp": now.isoformat()}
                            for u in range(40)]
                response = await client.post(nodes[0].url + "/v1/events", json=launches)
                assert response.status_code == 202, response.text
                assert await nodes[1].stop() == 0  # leaves: its partitions move to n0, checkpointed
                await wait_until(lambda: settled(client, nodes[:1], 4), 30, "n0 taking every partition", nodes)
                nodes[1].start()  # joins again: some partitions move back
                await wait_until(lambda: settled(client, nodes, 4), 60, "the partitions moving back", nodes)
                with trio.move_on_after(30):
                    await receiver.wait_for(40)
                assert len(receiver.delivered) >= 40, (receiver.keys, [await n.health(client) for n in nodes])
                # Nothing more can come once no node has a delivery pending or a timer left to fire.
                async def quiet() -> bool:
                    healths = [await node.health(client) for node in nodes]
                    return all(h is not None and h["effects_pending"] == 0 and h["timers_pending"] == 0
                               for h in healths) and await settled(client, nodes, 4)

                await wait_until(quiet, 30, "no deliveries pending", nodes)
                keys = receiver.keys
                assert {key.split(":")[:3] == ["fitness", "nudge", key.split(":")[2]] for key in keys} == {True}
                assert {key.split(":")[2] for key in keys} == {f"u{u}" for u in range(40)}
                assert len(keys) == 40, f"{len(keys)} deliveries of {len(set(keys))} nudges"
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


async def test_a_query_on_any_node_answers_what_the_owner_answers(kafka_bootstrap, tmp_path):
    async with cluster_of(tmp_path, kafka_bootstrap, 2) as (client, nodes):
        events = [{"id": f"e{u}", "type": "training_program_started", "user_id": f"q{u}",
                   "training_program_id": "7", "timestamp": "2021-03-01T08:00:00Z"} for u in range(30)]
        # Keys forwarded with their own characters, never decoded into another key (six: both nodes own some).
        odds = [f"q/x?y%2Fz#é{i}" for i in range(6)]
        events += [{**events[0], "id": f"odd{i}", "user_id": odd} for i, odd in enumerate(odds)]
        assert (await client.post(nodes[0].url + "/v1/events", json=events)).status_code == 202
        await wait_until(lambda: settled(client, nodes), 30, "the events applied", nodes)
        owners = set()
        for u in range(30):
            answers = [await client.get(f"{node.url}/v1/actors/q{u}") for node in nodes]
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            assert comparable(answers[0].json()) == comparable(answers[1].json())
            assert answers[0].json()["states"]["fitness"]["running"]  # the started program is there
            served_by = {a.headers["herald-served-by"] for a in answers}
            assert len(served_by) == 1  # both answers come from the owner
            owners |= served_by
        assert owners == {"n0", "n1"}  # the keys are spread over both nodes
        for odd in odds:
            odd_answers = [await client.get(f"{node.url}/v1/actors/{quote(odd, safe='')}") for node in nodes]
            assert [a.json()["key"] for a in odd_answers] == [odd, odd]
        missing = [await client.get(f"{node.url}/v1/actors/nobody") for node in nodes]
        assert [m.status_code for m in missing] == [404, 404]
        # The owner goes away: until its partitions move, the other node's replica answers, saying so.
        before = {u: (await client.get(f"{nodes[0].url}/v1/actors/q{u}")) for u in range(30)}
        theirs = [u for u, a in before.items() if a.headers["herald-served-by"] == "n1"]
        nodes[1].kill()
        answer = await client.get(f"{nodes[0].url}/v1/actors/q{theirs[0]}")
        assert answer.status_code == 200
        assert answer.headers["herald-served-by"] == "n0" and answer.headers["herald-replica-lag"] == "0"
        assert comparable(answer.json()) == comparable(before[theirs[0]].json())


async def test_a_plugin_reads_every_actor_from_any_node_and_its_own_writes(kafka_bootstrap, tmp_path):
    """The customers plugin on two nodes: a customer created on one is listed and shown by both (each
    node keeps a replica of every partition), and each write answers with what it wrote."""
    async with cluster_of(tmp_path, kafka_bootstrap, 2, HERALD_PLUGINS="customers") as (client, nodes):
        for i in range(1, 41):
            response = await client.post(f"{nodes[i % 2].url}/customers",
                                         json={"id": i, "attributes": {"email": f"c{i}@example.com"}})
            assert response.status_code == 201, response.text
            assert response.json()["customer"]["attributes"]["email"] == f"c{i}@example.com"
        # Another node's writes reach this node's replica within its lag (milliseconds, unless busy).
        async def listed_everywhere() -> bool:
            pages = [(await client.get(f"{node.url}/customers?per_page=100")).json() for node in nodes]
            return all(page["meta"]["total"] == 40 for page in pages)

        await wait_until(listed_everywhere, 20, "every customer listed on both nodes", nodes)
        again = await client.post(f"{nodes[0].url}/customers", json={"id": 7, "attributes": {"email": "x@y.z"}})
        assert again.status_code == 409, again.text  # created on the other node: known here too
        for node in nodes:
            page = (await client.get(f"{node.url}/customers?per_page=100")).json()
            assert page["meta"]["total"] == 40
            assert [c["id"] for c in page["customers"]] == list(range(1, 41))
            shown = await client.get(f"{node.url}/customers/13")
            assert shown.status_code == 200 and shown.json()["customer"]["attributes"]["email"] == "c13@example.com"
        assert (await client.delete(f"{nodes[1].url}/customers/13")).status_code == 204
        for node in nodes:
            with trio.fail_after(10):
                while (await client.get(f"{node.url}/customers/13")).status_code != 404:
                    await trio.sleep(0.05)


async def test_a_broker_that_lost_its_data_stops_the_node_loudly(tmp_path):
    """An in-memory broker restarted: the topics are gone. The node must not quietly start over (its
    partitions would begin again at offset 0 as if nothing had happened): it refuses events with 503
    and /healthz says why."""
    from engine._kafka import DevBroker

    broker = DevBroker()
    broker.start()
    node = Node(tmp_path, "n0", broker.bootstrap)
    try:
        node.start()
        async with httpx.AsyncClient() as client:
            await wait_until(lambda: settled(client, [node]), 60, "the node to take every partition", [node])
            events = [{"type": "app_launch", "user_id": f"u{u}", "timestamp": "2021-03-01T08:00:00Z"} for u in range(50)]
            assert (await client.post(node.url + "/v1/events", json=events)).status_code == 202
            await trio.to_thread.run_sync(broker.stop)
            await trio.to_thread.run_sync(broker.start)  # same port, nothing in it

            async def failed() -> bool:
                health = await client.get(node.url + "/healthz")
                return health.status_code == 503 and health.json()["status"] == "cluster_failed"

            await wait_until(failed, 30, "the node to report the loss", [node])
            assert "the broker lost data" in (await client.get(node.url + "/healthz")).json()["cluster"]["failure"]
            refused = await client.post(node.url + "/v1/events", json=events[:1])
            assert refused.status_code == 503 and "the broker lost data" in refused.json()["error"]["message"]
            # What it held is still readable.
            assert (await client.get(node.url + "/v1/actors/u1")).status_code == 200
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
        broker.stop()


async def test_a_node_configured_for_another_partition_count_refuses_to_start(kafka_bootstrap, tmp_path):
    first = Node(tmp_path, "n0", kafka_bootstrap)
    try:
        first.start()
        async with httpx.AsyncClient() as client:
            await wait_until(lambda: settled(client, [first]), 60, "the first node", [first])
        odd = Node(tmp_path, "n1", kafka_bootstrap, HERALD_CLUSTER_PARTITIONS="4")
        odd.start()
        with trio.fail_after(30):
            while odd.proc.poll() is None:
                await trio.sleep(0.1)
        assert odd.proc.returncode == 2
        assert "has 6 partitions, this node is configured for 4" in odd.logs()
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.kill()


async def test_the_eye_works_across_nodes_tokens_events_and_errors(kafka_bootstrap, tmp_path):
    """analytics on two nodes: a token made on one works on the other (trusted clients are an actor,
    read through the replicas), events posted to either are queried from both (the store is a local
    view every node keeps whole), and so are the errors."""
    async with cluster_of(tmp_path, kafka_bootstrap, 2, HERALD_PLUGINS="analytics") as (client, nodes):
        made = await client.post(nodes[0].url + "/v1/admin/tokens", json={"name": "web"})
        assert made.status_code in (200, 201), made.text
        auth = {"authorization": f"Token {made.json()['token']}"}
        # The token is an actor of the node that made it; the other node knows it once its replica
        # has caught up (eventually consistent, docs/cluster.md): wait for that, then use it there.
        with trio.fail_after(30):
            while (await client.get(nodes[1].url + "/api/events?limit=1", headers=auth)).status_code == 401:
                await trio.sleep(0.1)
        now = datetime.now(timezone.utc).isoformat()
        for i in range(20):
            event = {"session_id": f"s{i % 4}", "category": "page interaction", "name": "pageview",
                     "timestamp": now, "data": {"host": "shop.test", "path": f"/{i}"}}
            if i == 19:
                event["data"] = {"host": "shop.test"}  # no path: refused, logged as an error
            response = await client.post(nodes[i % 2].url + "/api/events", json=event, headers=auth)
            assert response.status_code == 202, response.text

        async def everywhere() -> bool:
            for node in nodes:
                events = (await client.get(node.url + "/api/events?limit=100", headers=auth)).json()
                errors = (await client.get(node.url + "/api/errors", headers=auth)).json()
                if len(events["results"]) != 19 or len(errors["results"]) != 1:
                    return False
            return True

        await wait_until(everywhere, 20, "every event and error on both nodes", nodes)
        session = (await client.get(nodes[1].url + "/api/events?session_id=s1", headers=auth)).json()
        assert sorted(e["data"]["path"] for e in session["results"]) == ["/1", "/13", "/17", "/5", "/9"]

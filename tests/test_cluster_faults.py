"""Faults a cluster node heals from, driven for sure: a fatal producer or consumer error injected through
the node's client factory (in process, on a real broker), and real processes stopped (SIGSTOP), a
paused broker, and a node whose network link is cut (in network namespaces this test makes).

Each checks what a client relies on: nothing acknowledged is lost, nothing is applied twice (every
user's view equals a single engine's fed the same events), every notification key is delivered with
one body, the faulted node answers 503 while it cannot accept and 200 soon after, and accepts again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
import trio

from engine import Config
from engine.host import Herald, PluginHost
from engine._clients import KafkaClients
from plugins.fitness import hooks as fitness
from tests.test_cluster import SETTINGS, assert_cluster_holds, comparable, expected_run, post_all, user_events

pytestmark = pytest.mark.kafka


class _FencedProducer:
    """A real producer that, once fenced, reports PRODUCER_FENCED for every event it delivers (as a
    producer the broker fenced does: it never recovers by itself)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.fenced = False

    def produce(self, topic: str, value: Any = None, on_delivery: Any = None, **kwargs: Any) -> None:
        if self.fenced and on_delivery is not None and topic.endswith(".events"):
            from confluent_kafka import KafkaError

            callback = on_delivery

            def on_delivery(error: Any, message: Any) -> None:  # noqa: F811 - the fenced report
                callback(KafkaError(KafkaError.PRODUCER_FENCED, "injected: the producer's epoch is fenced"), message)
        self.real.produce(topic, value=value, on_delivery=on_delivery, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FaultyClients(KafkaClients):
    """Real clients, each of which a test can make fail: the latest producer fenced, or a consumer's
    error callback told of a fatal error (what librdkafka does): the group's, the replicas' or the
    directory's."""

    def __init__(self) -> None:
        self.producers: list[_FencedProducer] = []
        self.group_settings: list[dict[str, Any]] = []
        #: "replica" or "directory" -> the settings of each consumer made for it.
        self.outside: dict[str, list[dict[str, Any]]] = {"replica": [], "directory": []}

    def producer(self, settings: dict[str, Any]) -> Any:
        producer = _FencedProducer(super().producer(settings))
        self.producers.append(producer)
        return producer

    def consumer(self, settings: dict[str, Any]) -> Any:
        group = settings.get("group.id", "")
        if "partition.assignment.strategy" in settings:  # the group's consumer
            self.group_settings.append(settings)
        elif ".replica." in group or ".directory." in group:
            self.outside["replica" if ".replica." in group else "directory"].append(settings)
        return super().consumer(settings)

    def fail_outside(self, name: str) -> None:
        from confluent_kafka import KafkaError

        self.outside[name][-1]["error_cb"](KafkaError(KafkaError._FATAL, f"injected: a fatal {name} consumer error",
                                                      fatal=True))

    def fence_producer(self) -> None:
        self.producers[-2].fenced = True  # the events producer (the last one made is the changelog's)

    def fail_consumer(self) -> None:
        from confluent_kafka import KafkaError

        self.group_settings[-1]["error_cb"](KafkaError(KafkaError._FATAL, "injected: a fatal consumer error",
                                                       fatal=True))


async def owning_everything(herald: Herald, partitions: int) -> None:
    cluster = herald.cluster
    with trio.fail_after(60):
        while len(cluster.shards) < partitions or not all(s.ready for s in cluster.shards.values()) \
                or cluster.refusal() is not None:
            await trio.sleep(0.05)


@pytest.mark.parametrize("fault", ["producer", "consumer"])
async def test_a_fatal_client_error_heals_the_node_and_loses_nothing(kafka_bootstrap, fault, caplog):
    from server import create_app

    caplog.set_level(logging.INFO, logger="herald.cluster")
    rng = random.Random(25)
    users = [f"user{u}" for u in range(60)]
    per_user = [user_events(u, rng) for u in range(60)]
    ordered = [e for step in range(10) for events in per_user for e in events[step:step + 1]]
    batches = [ordered[i:i + 50] for i in range(0, len(ordered), 50)]
    expected, _ = await expected_run(ordered, users)

    clients, ended = FaultyClients(), []
    config = Config(cluster=kafka_bootstrap, durability="memory", allowed_lateness=float(SETTINGS["HERALD_ALLOWED_LATENESS"]),
                    cluster_partitions=3)
    herald = Herald(config, PluginHost.from_objects(config, [fitness]), kafka=clients, give_up=ended.append)
    async with herald.running():
        await herald.wait_ready()
        await owning_everything(herald, 3)
        transport = httpx.ASGITransport(app=create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            half = len(batches) // 2
            for batch in batches[:half]:
                assert (await client.post("/v1/events", json=batch)).status_code == 202
            if fault == "producer":
                clients.fence_producer()
                refused = await client.post("/v1/events", json=batches[half])  # reaches the broker, reported fenced
                # (healing; or restoring already, when the new clients answered before this answer was made)
                assert refused.status_code == 503 and refused.json()["error"]["code"] in ("healing", "restoring"), \
                    refused.text
            else:
                clients.fail_consumer()  # (librdkafka calls it from its own thread: the node hears it soon)
                with trio.fail_after(1):
                    while herald.refusal() is None:
                        await trio.sleep(0)
            health = await client.get("/healthz")
            started = time.monotonic()
            assert health.status_code == 503 and health.json()["status"] in ("healing", "restoring"), health.text
            assert "injected" in health.json()["refusal"]["reason"]
            assert herald.cluster.shards == {}  # given up at once
            with trio.fail_after(10):
                while (await client.get("/healthz")).status_code != 200:
                    await trio.sleep(0.02)
            healed = time.monotonic() - started
            for batch in batches[half:]:  # the refused batch again (same ids), then the rest
                answer = await client.post("/v1/events", json=batch)
                assert answer.status_code == 202, answer.text
            print(f"\n{fault} fault: healed (200 on /healthz, then accepting) in {healed:.2f} s")
            await owning_everything(herald, 3)
            # Every user as a single engine holds them: nothing acknowledged lost, nothing applied twice.
            mismatched: list[str] = users
            with trio.move_on_after(30):
                while mismatched:
                    await trio.sleep(0.1)
                    mismatched = [key for key in users if comparable(
                        (await client.get(f"/v1/actors/{key}")).json()) != comparable(expected[key])]
            assert not mismatched, f"{len(mismatched)} users differ"
            assert herald.cluster.heals == 1 and not ended
    messages = [r.getMessage() for r in caplog.records if r.name == "herald.cluster"]
    assert sum(m.startswith("healing: ") for m in messages) == 1, messages
    assert sum(m.startswith("healed in ") for m in messages) == 1, messages


@pytest.mark.parametrize("name", ["replica", "directory"])
async def test_a_fatal_error_of_a_consumer_outside_the_group_makes_a_new_one(kafka_bootstrap, name):
    """The replicas' and the directory's consumers feed reads, not ingestion: the node accepts all along,
    makes a new consumer that resumes where the failed one stood, and reads every event after it."""
    from server import create_app

    clients, ended = FaultyClients(), []
    config = Config(cluster=kafka_bootstrap, durability="memory", cluster_partitions=3,
                    allowed_lateness=float(SETTINGS["HERALD_ALLOWED_LATENESS"]))
    herald = Herald(config, PluginHost.from_objects(config, [fitness]), kafka=clients, give_up=ended.append)
    cluster = herald.cluster
    events = [{"id": f"e{i}", "type": "app_launch", "user_id": f"user{i % 30}",
               "timestamp": f"2021-03-01T08:{i // 60:02d}:{i % 60:02d}Z"} for i in range(120)]
    async with herald.running():
        await herald.wait_ready()
        await owning_everything(herald, 3)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(herald)),
                                     base_url="http://node") as client:
            assert (await client.post("/v1/events", json=events[:60])).status_code == 202
            clients.fail_outside(name)
            with trio.fail_after(10):
                while cluster.outside[name].heals < 1:
                    # Ingestion never refuses for it (one truth: nor does /healthz).
                    assert (await client.get("/healthz")).status_code == 200
                    await trio.sleep(0.02)
            assert len(clients.outside[name]) == 2  # a new consumer
            heard = cluster._directory_offset
            assert (await client.post("/v1/events", json=events[60:])).status_code == 202
            with trio.fail_after(15):
                # The replicas read every event (each once); the directory reads the announcements after.
                while sum(r.applied for r in cluster.replica_shards.values()) < len(events) \
                        or cluster._directory_offset <= heard:
                    await trio.sleep(0.05)
            assert sum(r.applied for r in cluster.replica_shards.values()) == len(events)
            assert sum(r.duplicates for r in cluster.replica_shards.values()) == 0
            assert cluster.outside[name].heals == 1 and cluster.heals == 0 and not ended


# -- real processes: a stopped node, a paused broker, a cut link ------------------------------------------

FAULT_SECONDS = 20.0


async def first_accepted(client: httpx.AsyncClient, url: str, tag: str, since: float, limit: float = 30) -> float:
    """Post a probe event to ``url`` until it answers 202; seconds from ``since`` to that answer."""
    seen: list[str] = []
    try:
        return await _first_accepted(client, url, tag, since, limit, seen)
    finally:
        if seen:
            print(f"\n{url} before accepting:", *seen[:5], sep="\n  ")


async def _first_accepted(client: httpx.AsyncClient, url: str, tag: str, since: float, limit: float,
                          seen: list[str]) -> float:
    with trio.fail_after(limit):
        for i in range(10**6):
            try:
                answer = await client.post(url + "/v1/event", timeout=3, json={
                    "id": f"{tag}-{i}", "type": "app_launch", "user_id": f"probe-{tag}",
                    "timestamp": "2021-03-01T08:00:00Z"})
                if answer.status_code == 202:
                    return time.monotonic() - since
                seen.append(f"{time.monotonic() - since:.2f}: {answer.status_code} {answer.text[:300]}")
            except httpx.TransportError as exc:
                seen.append(f"{time.monotonic() - since:.2f}: {exc!r}")
            await trio.sleep(0.05)
    raise AssertionError("unreachable")


async def ready_again(client: httpx.AsyncClient, url: str, since: float, limit: float = 10) -> float:
    """Seconds from ``since`` until ``url``'s /healthz answers 200 (fails after ``limit`` seconds)."""
    with trio.fail_after(limit):
        while True:
            try:
                if (await client.get(url + "/healthz", timeout=2)).status_code == 200:
                    return time.monotonic() - since
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


async def refusing(client: httpx.AsyncClient, url: str, limit: float = 10) -> dict[str, Any]:
    """Wait until ``url``'s /healthz answers 503; its body."""
    with trio.fail_after(limit):
        while True:
            try:
                answer = await client.get(url + "/healthz", timeout=2)
                if answer.status_code == 503:
                    return answer.json()
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


async def under_fault(tmp_path: Any, bootstrap: str, fault: Any, *, node_factory: Any = None,
                      receiver_port: int = 0) -> None:
    """Three nodes take events (600 users, posted in order per user by three clients over ~30 s) while
    ``fault(client, nodes)`` runs; then everything acknowledged must be there exactly once, each
    notification key delivered with one body."""
    from engine.testing import Receiver
    from tests.test_cluster import Node, settled, wait_until

    rng = random.Random(2025)
    users = [f"user{u}" for u in range(600)]
    per_user = [user_events(u, rng) for u in range(600)]
    streams: list[list[list[dict]]] = []
    for s in range(3):
        mine = per_user[s::3]
        ordered = [e for step in range(10) for events in mine for e in events[step:step + 1]]
        streams.append([ordered[i:i + 20] for i in range(0, len(ordered), 20)])
    expected, expected_keys = await expected_run([e for events in per_user for e in events], users)

    async with Receiver.running(port=receiver_port) as receiver:
        env = {"HERALD_NOTIFY_URL": receiver.url + "/notify", **SETTINGS}
        nodes = [Node(tmp_path, f"n{i}", bootstrap, **env) for i in range(2)]
        nodes.append(node_factory("n2", env) if node_factory else Node(tmp_path, "n2", bootstrap, **env))
        try:
            for node in nodes:
                node.start()
            async with httpx.AsyncClient() as client:
                await wait_until(lambda: settled(client, nodes), 90, "three nodes sharing the partitions", nodes)
                progress = {"posted": 0, "retries": 0}
                async with trio.open_nursery() as nursery:
                    for batches in streams:
                        nursery.start_soon(post_all, client, nodes, batches, progress, 0.25, 3)
                    with trio.fail_after(30):
                        while progress["posted"] < 1000:
                            await trio.sleep(0.05)
                    with trio.fail_after(FAULT_SECONDS + 60):
                        await fault(client, nodes)
                await wait_until(lambda: settled(client, nodes), 90, "the cluster to settle", nodes)
                await assert_cluster_holds(client, nodes, users, expected, expected_keys, receiver)
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


async def test_a_node_stopped_for_20_s_heals_and_loses_nothing(kafka_bootstrap, tmp_path):
    async def stop_node(client: httpx.AsyncClient, nodes: list[Any]) -> None:
        victim = nodes[2]
        os.kill(victim.proc.pid, signal.SIGSTOP)
        answers: list[tuple[int, str]] = []

        async def ask() -> None:  # sent while it is stopped (on a new connection): answered as it wakes
            async with httpx.AsyncClient() as fresh:
                answer = await fresh.get(victim.url + "/healthz", timeout=FAULT_SECONDS + 10)
            answers.append((answer.status_code, answer.json()["status"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(FAULT_SECONDS)  # the fault itself: a process stopped this long
            os.kill(victim.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
        assert answers and answers[0][0] == 503 and answers[0][1] in ("healing", "restoring"), answers
        ready = await ready_again(client, victim.url, resumed)
        accepted = await first_accepted(client, victim.url, "stopped", resumed)
        print(f"\nSIGSTOP {FAULT_SECONDS:.0f} s: /healthz 200 {ready:.2f} s after SIGCONT, "
              f"first event accepted {accepted:.2f} s after SIGCONT")
        assert "healed in" in victim.logs() and "healing: this process was stopped" in victim.logs()

    await under_fault(tmp_path, kafka_bootstrap, stop_node)


async def test_a_broker_paused_for_20_s_makes_every_node_refuse_then_accept(tmp_path):
    from engine._kafka import DevBroker

    broker = DevBroker()
    broker.start()

    async def pause_broker(client: httpx.AsyncClient, nodes: list[Any]) -> None:
        os.kill(broker.pid, signal.SIGSTOP)
        paused = time.monotonic()
        try:
            bodies = [await refusing(client, node.url) for node in nodes]
            assert {b["status"] for b in bodies} <= {"broker_unreachable", "healing", "restoring"}, bodies
            await trio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - paused)))
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        resumed = time.monotonic()
        ready: dict[str, float] = {}
        accepted: dict[str, float] = {}

        async def measure(node: Any) -> None:
            async with trio.open_nursery() as both:  # each node at once, from the moment the broker resumed
                async def healthy() -> None:
                    ready[node.name] = await ready_again(client, node.url, resumed)

                async def accepting() -> None:
                    accepted[node.name] = await first_accepted(client, node.url, f"paused-{node.name}", resumed)

                both.start_soon(healthy)
                both.start_soon(accepting)

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(measure, node)
        ready, accepted = [ready[n.name] for n in nodes], [accepted[n.name] for n in nodes]
        print(f"\nbroker SIGSTOP {FAULT_SECONDS:.0f} s: /healthz 200 after {', '.join(f'{r:.2f}' for r in ready)} s, "
              f"first event accepted after {', '.join(f'{a:.2f}' for a in accepted)} s (per node, from SIGCONT)")

    try:
        await under_fault(tmp_path, broker.bootstrap, pause_broker)
    finally:
        broker.stop()


# -- a node in a network namespace of its own, its link cut -----------------------------------------------

CLONE_NEWNET = 0x40000000


def _socket_in(netns: str | None, make: Any) -> socket.socket:
    """A socket made by ``make()`` inside network namespace ``netns`` (None: this process's own): a thread
    of its own enters the namespace (setns), and the socket stays in it for good."""
    found: dict[str, Any] = {}

    def run() -> None:
        try:
            if netns is not None:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns({netns})")
                finally:
                    os.close(fd)
            found["socket"] = make()
        except BaseException as exc:  # handed to the caller
            found["error"] = exc

    thread = threading.Thread(target=run)  # never a pooled thread: it stays in the namespace it entered
    thread.start()
    thread.join()
    if "error" in found:
        raise found["error"]
    return found["socket"]


def _listener(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


async def forward(listen: tuple[str | None, str, int], to: tuple[str | None, str, int], *,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Accept TCP connections at ``(netns, host, port)`` and relay each to ``to`` (another namespace's)."""
    ns, host, port = listen
    listener = trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(_socket_in, ns, lambda: _listener(host, port)))

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await sink.aclose()

    async def relay(inbound: trio.SocketStream) -> None:
        to_ns, to_host, to_port = to
        raw = await trio.to_thread.run_sync(_socket_in, to_ns, socket.socket)
        outbound = trio.socket.from_stdlib_socket(raw)
        try:
            with trio.fail_after(5):
                await outbound.connect((to_host, to_port))
        except (OSError, trio.TooSlowError):
            outbound.close()
            await inbound.aclose()
            return
        out = trio.SocketStream(outbound)
        async with trio.open_nursery() as both:
            both.start_soon(pump, inbound, out)
            both.start_soon(pump, out, inbound)

    async with trio.open_nursery() as nursery:
        task_status.started()
        with listener:
            while True:
                sock, _ = await listener.accept()
                nursery.start_soon(relay, trio.SocketStream(sock))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


async def test_a_node_whose_link_is_cut_for_20_s_refuses_then_heals_and_loses_nothing(kafka_bootstrap, tmp_path):
    """n2 runs in a network namespace of its own, joined to a second namespace by a veth pair
    (10.213.0.2/30 and 10.213.0.1/30, addresses that exist in those namespaces only). Its broker and
    notification traffic crosses that link (relayed on to loopback); the link goes down for 20 s."""
    from engine.testing import free_port, herald_command
    from tests.test_cluster import Node

    if os.geteuid() != 0:
        pytest.skip("needs root: it makes network namespaces and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` to make network namespaces")
    tag = f"{os.getpid() % 100000}"
    node_ns, far_ns, node_if, far_if = f"hzn{tag}", f"hza{tag}", f"hzn{tag}", f"hza{tag}"
    try:
        _ip("netns", "add", node_ns)
        _ip("netns", "add", far_ns)
        _ip("link", "add", node_if, "netns", node_ns, "type", "veth", "peer", "name", far_if, "netns", far_ns)
        for ns, dev, address in ((node_ns, node_if, "10.213.0.2/30"), (far_ns, far_if, "10.213.0.1/30")):
            _ip("-n", ns, "addr", "add", address, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in (node_ns, far_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {getattr(exc, 'stderr', b'') or exc}")

    broker_port = int(kafka_bootstrap.rsplit(":", 1)[1])
    receiver_port = free_port()

    class NamespacedNode(Node):
        """A node started inside ``node_ns``: it reaches the broker and the receiver at 127.0.0.1 of its
        namespace (relayed across the veth), and is reached from here at 127.0.0.1:port (relayed in)."""

        def start(self) -> None:
            self.starts += 1
            log = open(self.dir / f"herald-{self.starts}.log", "wb")
            self.proc = subprocess.Popen(["ip", "netns", "exec", node_ns, *herald_command(), "serve"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    try:
        async with trio.open_nursery() as relays:
            for port in (broker_port, receiver_port):  # node's loopback -> across the veth -> this loopback
                await relays.start(forward, (node_ns, "127.0.0.1", port), (node_ns, "10.213.0.1", port))
                await relays.start(forward, (far_ns, "10.213.0.1", port), (None, "127.0.0.1", port))
            made: list[Any] = []

            def namespaced(name: str, env: dict[str, str]) -> Any:
                node = NamespacedNode(tmp_path, name, kafka_bootstrap, **env)
                made.append(node)
                return node

            async def cut_link(client: httpx.AsyncClient, nodes: list[Any]) -> None:
                victim = nodes[2]
                _ip("-n", node_ns, "link", "set", node_if, "down")
                cut = time.monotonic()
                try:
                    body = await refusing(client, victim.url)  # its /healthz is relayed in, not across the veth
                    assert body["status"] in ("broker_unreachable", "healing", "restoring"), body
                    print(f"\nlink cut: n2's /healthz 503 ({body['status']}) {time.monotonic() - cut:.2f} s after the cut")
                    await trio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - cut)))
                    assert (await client.get(victim.url + "/healthz", timeout=5)).status_code == 503
                finally:
                    _ip("-n", node_ns, "link", "set", node_if, "up")
                restored = time.monotonic()
                ready: dict[str, float] = {}

                async def healthy() -> None:
                    ready["at"] = await ready_again(client, victim.url, restored)

                async with trio.open_nursery() as both:
                    both.start_soon(healthy)
                    accepted = await first_accepted(client, victim.url, "cut", restored)
                print(f"link cut {FAULT_SECONDS:.0f} s: n2's /healthz 200 {ready['at']:.2f} s after the link came "
                      f"back, first event accepted {accepted:.2f} s after")

            # The node listens on its namespace's loopback; here, the same port on ours relays to it.
            def factory(name: str, env: dict[str, str]) -> Any:
                node = namespaced(name, env)
                relays.start_soon(forward, (None, "127.0.0.1", node.port), (node_ns, "127.0.0.1", node.port))
                return node

            await under_fault(tmp_path, kafka_bootstrap, cut_link, node_factory=factory, receiver_port=receiver_port)
            relays.cancel_scope.cancel()
    finally:
        for ns in (node_ns, far_ns):  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

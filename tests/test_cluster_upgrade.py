"""A rolling upgrade of a two-node cluster on the dev broker: one node runs the previous version of
Herald (commit :data:`PREVIOUS`, the last one that wrote changelog format 1, extracted from this
repository's git history into a temporary directory), the other today's. Each restores partitions
the other checkpointed; then the old node is upgraded (stopped, started as today's) while the posts
go on. Nothing acknowledged is lost, nothing is applied twice (every user as a single engine holds
it), timers are where they were, and every notification key is delivered with one body.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from engine.testing import Receiver, herald_command
from tests.test_cluster import SETTINGS, Node, assert_cluster_holds, expected_run, post_all, settled, user_events, wait_until

pytestmark = pytest.mark.kafka

#: The previous version: the last commit that writes changelog format 1 (no format headers, markers
#: without an epoch). ``HERALD_PREVIOUS_TREE`` may name a checkout of it instead.
PREVIOUS = "9360baf25c8a2f07f687289b4727a8ef0fb70326"
ROOT = Path(__file__).parent.parent


def previous_tree(tmp_path: Path) -> Path:
    given = os.environ.get("HERALD_PREVIOUS_TREE")
    if given:
        return Path(given)
    if shutil.which("git") is None:
        pytest.skip("git is needed to extract the previous version")
    tree = tmp_path / "previous"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS], capture_output=True)
    if archive.returncode != 0:  # e.g. a shallow clone
        pytest.skip(f"commit {PREVIOUS[:7]} is not in this clone: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


class OldNode(Node):
    """A node running the previous version's code (its tree first on the module path)."""

    def __init__(self, tmp_path: Path, name: str, bootstrap: str, tree: Path, **env: str) -> None:
        super().__init__(tmp_path, name, bootstrap, **env)
        self.env["PYTHONPATH"] = str(tree)

    def start(self) -> None:
        self.starts += 1
        with open(self.dir / f"herald-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen([*herald_command(), "serve"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)


def changelog_formats(bootstrap: str, partitions: int) -> dict[str, set]:
    """Which markers the changelog holds: those with a format header (today's) and those without
    (the previous version's), as sets of (partition, offset)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "upgrade-test", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    found: dict[str, set] = {"with": set(), "without": set()}
    try:
        for p in range(partitions):
            consumer.assign([TopicPartition("herald.changelog", p, 0)])
            while True:
                message = consumer.poll(5)
                if message is None or (message.error() and message.error().code() == KafkaError._PARTITION_EOF):
                    break
                headers = dict(message.headers() or ())
                if headers.get("herald") == b"end":
                    found["with" if "format" in headers else "without"].add((p, message.offset()))
            consumer.unassign()
    finally:
        consumer.close()
    return found


async def test_a_rolling_upgrade_from_the_previous_version_loses_nothing(kafka_bootstrap, tmp_path):
    tree = previous_tree(tmp_path)
    rng = random.Random(24)
    users = [f"user{u}" for u in range(300)]
    per_user = [user_events(u, rng) for u in range(300)]
    ordered = [e for step in range(10) for events in per_user for e in events[step:step + 1]]
    batches = [ordered[i:i + 50] for i in range(0, len(ordered), 50)]
    thirds = [batches[:20], batches[20:40], batches[40:]]
    expected, expected_keys = await expected_run(ordered, users)
    partitions = 4

    async with Receiver.running() as receiver:
        env = {"HERALD_NOTIFY_URL": receiver.url + "/notify", "HERALD_CLUSTER_PARTITIONS": str(partitions),
               "HERALD_CLUSTER_CHECKPOINT": "1", **SETTINGS}
        new = Node(tmp_path, "n1", kafka_bootstrap, **env)
        old = OldNode(tmp_path, "n0", kafka_bootstrap, tree, **env)
        nodes = [old, new]
        try:
            async with httpx.AsyncClient() as client:
                # Today's node alone writes checkpoints (format 2) ...
                new.start()
                await wait_until(lambda: settled(client, [new], partitions), 60, "the new node", nodes)
                progress = {"posted": 0, "retries": 0}
                await post_all(client, [new], thirds[0], progress)
                await wait_until(lambda: settled(client, [new], partitions), 60, "the first third applied", nodes)
                await wait_until(lambda: changelog_formats_async(kafka_bootstrap, partitions, "with"), 30,
                                 "today's checkpoints", nodes)
                # ... which the previous version restores when it joins and takes some partitions over.
                old.start()
                await wait_until(lambda: shared(client, nodes, partitions), 90, "both nodes sharing", nodes)
                healths = [(await node.health(client))["cluster"] for node in nodes]
                assert healths[0]["restore"]["actors"] > 0, healths  # the old node restored today's checkpoints
                await post_all(client, nodes, thirds[1], progress)
                await wait_until(lambda: settled(client, nodes, partitions), 60, "the second third applied", nodes)
                # Both versions checkpoint now: the old node's markers carry no format, today's do.
                await wait_until(lambda: changelog_formats_async(kafka_bootstrap, partitions, "without"), 30,
                                 "the previous version's checkpoints", nodes)
                # The upgrade, while the posts go on: the old node leaves (its partitions, checkpointed in
                # format 1, move to today's node), then comes back as today's.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post_all, client, nodes, thirds[2], progress, 0.1, 10)
                    with trio.fail_after(30):
                        while progress["posted"] < len(ordered) * 2 // 3 + 200:
                            await trio.sleep(0.05)
                    assert await old.stop() == 0
                    await wait_until(lambda: settled(client, [new], partitions, caught_up=False), 60,
                                     "today's node taking every partition", nodes)
                    upgraded = Node(tmp_path, "n0", kafka_bootstrap, **env)
                    upgraded.starts = old.starts
                    nodes[0] = upgraded
                    upgraded.start()
                # The upgraded node serves partitions again (restored from both versions' checkpoints).
                await wait_until(lambda: shared(client, nodes, partitions), 90, "the upgraded cluster", nodes)
                assert progress["posted"] == len(ordered)
                await assert_cluster_holds(client, nodes, users, expected, expected_keys, receiver)
                print(f"\nrolling upgrade: {len(ordered)} events, {progress['retries']} posts retried, "
                      f"{len(receiver.delivered)} deliveries of {len(expected_keys)} notifications")
        finally:
            for node in [old, *nodes]:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


async def shared(client: httpx.AsyncClient, nodes: list[Node], partitions: int) -> bool:
    """Every partition served (and caught up), each node serving some."""
    if not await settled(client, nodes, partitions):
        return False
    healths = [await node.health(client) for node in nodes]
    return all(h is not None and h["cluster"]["ready"] for h in healths)


async def changelog_formats_async(bootstrap: str, partitions: int, which: str) -> bool:
    found = await trio.to_thread.run_sync(changelog_formats, bootstrap, partitions)
    return bool(found[which])

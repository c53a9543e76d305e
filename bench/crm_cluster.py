"""The crm plugin end to end on a cluster of 1 and of 3 nodes, in the same run.

For each size: a fresh Tansu broker (in memory), one PostgreSQL key store
(Debian's binaries, plugins/crm/tests/postgres.py), a mock CRM served in this
process, and ``herald serve --cluster --plugins crm`` processes with
``HERALD_CRM_KEYSTORE`` on that database. Once the nodes share the
partitions, ``--messages`` messages of the seed's stream (the producer's
simulation, without its sleeps; the internal topics with one partition each,
as in tests/test_cluster_crm.py) are written; the clock runs from the first
message written until the mock CRM holds exactly what a single process fed
the same stream sent it. The 1-node cluster is the baseline of the 3-node one.

    python -m bench.crm_cluster [--messages 6000] [--repeat 2]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.crm_cluster")

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

from engine._kafka import dev_broker
from engine.kafka import ensure_topics
from engine.testing import serving
from plugins.crm.contracts import BOOKING_TOPIC, USER_TOPIC
from plugins.crm.mock_crm import CrmStore, standalone_app
from plugins.crm.producer import Simulation
from plugins.crm.tests.postgres import postgres_server
from tests.test_cluster import Node, settled, wait_until
from tests.test_cluster_crm import produce, single_process

_databases = itertools.count()


async def one_run(count: int, messages: list, expected: dict, postgres) -> float:
    import psycopg

    name = f"bench_crm_{next(_databases)}"
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    store = CrmStore()
    with dev_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        await trio.to_thread.run_sync(lambda: ensure_topics(bootstrap, [(USER_TOPIC, 1, {}), (BOOKING_TOPIC, 1, {})]))
        async with serving(standalone_app(store)) as crm_url:
            env = {"HERALD_PLUGINS": "crm", "HERALD_CRM_KEYSTORE": postgres.url(name), "HERALD_LOG_LEVEL": "WARNING",
                   "HERALD_KAFKA_BOOTSTRAP": bootstrap, "HERALD_CRM_URL": crm_url}
            nodes = [Node(Path(tmp), f"n{i}", bootstrap, **env) for i in range(count)]
            try:
                for node in nodes:
                    node.start()
                async with httpx.AsyncClient(timeout=30) as client:
                    await wait_until(lambda: settled(client, nodes), 90, "the nodes sharing the partitions", nodes)
                    started = time.monotonic()
                    await trio.to_thread.run_sync(produce, bootstrap, messages)

                    async def done() -> bool:
                        return (store.data["users"], store.data["trips"]) == (expected["users"], expected["trips"])

                    await wait_until(done, 600, "the CRM to hold what one process sent it", nodes)
                    return time.monotonic() - started
            finally:
                for node in nodes:
                    if node.proc is not None and node.proc.poll() is None:
                        node.kill()


async def main(args: argparse.Namespace) -> None:
    messages = [(t, k, v) for _, t, k, v in itertools.islice(Simulation(seed=28).messages(), args.messages)]
    expected = await single_process(messages)
    results: dict[int, list[float]] = {1: [], 3: []}
    with postgres_server() as postgres:
        for _ in range(args.repeat):
            for count in (1, 3):
                seconds = await one_run(count, messages, expected, postgres)
                results[count].append(len(messages) / seconds)
                print(f"{count} node(s): {len(messages)} messages in {seconds:.1f} s = "
                      f"{len(messages) / seconds:.0f} messages/s", flush=True)
    one, three = statistics.median(results[1]), statistics.median(results[3])
    print(f"median: 1 node {one:.0f} messages/s, 3 nodes {three:.0f} messages/s ({three / one:.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=2)
    trio.run(main, parser.parse_args())

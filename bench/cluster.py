"""The cluster on the dev broker: takeover after SIGKILL, restore rate, ingestion with 1, 2 and 3 nodes.

Everything runs on this machine: one Tansu broker (in memory), ``herald serve
--cluster`` processes with the fitness plugin and Herald's default cluster
settings, a receiver for notifications, wrk for load.

1. **Takeover.** Two nodes; ``--users`` app launches whose nudges fall due
   5 s later; a checkpoint passes; the owner of half the partitions is
   SIGKILLed. Measured from the kill: the first event applied by the new
   owner (a probe event for a key of a lost partition is posted every 20 ms
   and asked for until the new owner answers it as its owner: every node's
   replica has it sooner), and the first nudge of a lost partition
   delivered (those fell due while nobody owned it: overdue timers).
2. **Restore rate.** One node holding ``--restore-users`` actors (each with a
   pending timer) leaves gracefully (it checkpoints); a new node restores
   them: actors/s from its ``/healthz``.
3. **Ingestion.** wrk on ``POST /v1/events`` (arrays of 500) and ``POST
   /v1/event`` against a single embedded Herald (durability batch) and a
   cluster of 1, 2 and 3 nodes (one wrk per node, the connections split
   between them), in the same run. A 202 from a node means the broker
   acknowledged the events.

    python -m bench.cluster [--users 2000] [--restore-users 100000] [--duration 5]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.cluster")

import argparse
import contextlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson

from engine._cluster import partition_of
from engine._kafka import dev_broker
from engine.testing import free_port

from ._common import generate_events, print_table, stop_process
from .http import _wrk

PARTITIONS = 6


class _Receiver:
    """Notifications' receiver: records when each idempotency key arrived (a threaded HTTP server)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.arrivals.append((time.monotonic(), self.headers.get("idempotency-key", "")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _command() -> list[str]:
    exe = shutil.which("herald")
    return [exe] if exe else [sys.executable, "-m", "server"]


class _Node:
    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}-{time.monotonic_ns()}.log"
        self.env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_PORT": str(self.port),
                    "HERALD_DATA_DIR": str(tmp / name), "HERALD_NODE_ID": name, "HERALD_PLUGINS": "fitness", **env}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*_command(), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return orjson.loads(response.read())
        except OSError:
            return None

    def stop(self) -> None:
        stop_process(self.proc, 30)


@contextlib.contextmanager
def _nodes(tmp: Path, names: list[str], env: dict[str, str]) -> Iterator[list[_Node]]:
    nodes = [_Node(tmp, name, env) for name in names]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _settled(nodes: list[_Node], timeout: float = 90) -> None:
    """Wait until the nodes serve every partition between them, caught up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served, ok = [], True
        for node in nodes:
            health = node.health()
            cluster = (health or {}).get("cluster")
            if not cluster or cluster["restore"]["restoring"] or any(cluster["lag"].values()):
                ok = False
                break
            served += cluster["ready"]
        if ok and sorted(served) == list(range(PARTITIONS)):
            return
        time.sleep(0.1)
    raise RuntimeError("the cluster did not settle; logs: " + ", ".join(str(n.log) for n in nodes))


def _post(url: str, events: list[dict[str, Any]]) -> int:
    request = urllib.request.Request(url + "/v1/events", orjson.dumps(events), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _owner_has(url: str) -> bool:
    """Whether the node at ``url`` answers this actor as its owner (not from its replica)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and response.headers.get("herald-replica-lag") is None
    except OSError:
        return False


def takeover(bootstrap: str, tmp: Path, users: int) -> dict[str, float]:
    receiver = _Receiver()
    env = {"HERALD_CLUSTER": bootstrap, "HERALD_CLUSTER_NAME": "takeover", "HERALD_NOTIFY_URL": receiver.url,
           "HERALD_FITNESS_NUDGE_MINUTES": str(5 / 60)}
    with _nodes(tmp, ["a", "b"], env) as (a, b):
        _settled([a, b])
        lost = set(a.health()["cluster"]["ready"])
        now = datetime.now(timezone.utc).isoformat()
        launches = [{"id": f"l{u}", "type": "app_launch", "user_id": f"u{u}", "timestamp": now} for u in range(users)]
        posted = time.monotonic()
        for i in range(0, users, 500):
            assert _post(b.url, launches[i:i + 500]) == 202
        time.sleep(max(0.0, posted + 3.0 - time.monotonic()))  # a checkpoint (every 2 s) covers the launches
        probes = [f"probe{i}" for i in range(10_000) if partition_of(f"probe{i}", PARTITIONS) in lost]
        a.proc.kill()
        killed = time.monotonic()
        a.proc.wait()
        applied_at = None
        for i, key in enumerate(probes):
            _post(b.url, [{"id": key, "type": "app_launch", "user_id": key, "timestamp": now}])
            # Applied by the new owner: answered by b as the owner (a replica would say its lag).
            if any(_owner_has(f"{b.url}/v1/actors/{p}") for p in probes[max(0, i - 3):i + 1]):
                applied_at = time.monotonic()
                break
            time.sleep(0.02)
        _settled([b])
        deadline = time.monotonic() + 30
        lost_users = {f"u{u}" for u in range(users) if partition_of(f"u{u}", PARTITIONS) in lost}
        first_overdue = None
        while time.monotonic() < deadline and first_overdue is None:
            for at, key in list(receiver.arrivals):
                if at > killed and key.split(":")[2:3] and key.split(":")[2] in lost_users:
                    first_overdue = at if first_overdue is None else min(first_overdue, at)
            time.sleep(0.05)
        restore = b.health()["cluster"]["restore"]
    receiver.server.shutdown()
    return {"event": (applied_at or float("nan")) - killed, "timer": (first_overdue or float("nan")) - killed,
            "restored": restore["actors"], "due_after_kill": posted + 5 - killed}


def restore_rate(bootstrap: str, tmp: Path, users: int) -> dict[str, float]:
    env = {"HERALD_CLUSTER": bootstrap, "HERALD_CLUSTER_NAME": "restore"}
    now = datetime.now(timezone.utc).isoformat()
    with _nodes(tmp, ["r1"], env) as [node]:
        _settled([node])
        for i in range(0, users, 500):
            batch = [{"type": "app_launch", "user_id": f"r{u}", "timestamp": now} for u in range(i, min(i + 500, users))]
            assert _post(node.url, batch) == 202
        _settled([node], timeout=300)
        node.stop()  # graceful: every partition checkpointed
    with _nodes(tmp, ["r2"], env) as [node]:
        _settled([node], timeout=300)
        restore = node.health()["cluster"]["restore"]
    return {"actors": restore["actors"], "seconds": restore["seconds"]}


def _bodies(path: Path, events: int, per_body: int) -> Path:
    """Bodies for wrk (one per line): the fitness mix of 20k users over the last quarter hour, no ids."""
    items = generate_events(events, 20_000, start=time.time() - 900, user_gap=20.0 * events / 200_000, ids=False)
    lines = [orjson.dumps(e) for e in items] if per_body == 1 else [
        orjson.dumps(items[i:i + per_body]) for i in range(0, len(items), per_body)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ingestion(bootstrap: str, tmp: Path, seconds: float) -> list[tuple[str, str, float, float]]:
    batches = _bodies(tmp / "batches.jsonl", 200_000, 500)
    singles = _bodies(tmp / "singles.jsonl", 50_000, 1)
    rows = []

    def load(urls: list[str], label: str) -> None:
        for kind, path, path_url, per in (("batch", batches, "/v1/events", 500), ("single", singles, "/v1/event", 1)):
            connections = max(2, 16 // len(urls))
            results: list[dict[str, Any]] = []
            threads = [threading.Thread(target=lambda u=u: results.append(
                _wrk(u + path_url, path, seconds=seconds, connections=connections, threads=1))) for u in urls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            bad = {}
            for r in results:
                for code, n in r["statuses"].items():
                    if code != 202:
                        bad[code] = bad.get(code, 0) + n
            bad = ", ".join(f"{n} x {code}" for code, n in sorted(bad.items())) or "0"
            rate = sum(r["rps"] for r in results) * per
            p99 = max(r["p99"] for r in results)
            rows.append((label, kind, rate, p99, bad))

    with _nodes(tmp, ["single"], {"HERALD_DURABILITY": "batch"}) as [single]:
        _wait(single)
        load([single.url], "single embedded process (batch)")
    for count in (1, 2, 3):
        env = {"HERALD_CLUSTER": bootstrap, "HERALD_CLUSTER_NAME": f"ingest{count}"}
        with _nodes(tmp, [f"i{count}-{k}" for k in range(count)], env) as nodes:
            _settled(nodes)
            load([n.url for n in nodes], f"cluster, {count} node{'s' if count > 1 else ''}")
    return rows


def _wait(node: _Node) -> None:
    deadline = time.monotonic() + 30
    while (node.health() or {}).get("ready") is not True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} not ready; log {node.log}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--restore-users", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: takeover, restore, ingestion")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmpdir, dev_broker() as bootstrap:
        tmp = Path(tmpdir)
        if "takeover" not in skip:
            t = takeover(bootstrap, tmp, args.users)
            print(f"takeover after SIGKILL ({t['restored']} actors restored; the lost nudges fell due "
                  f"{t['due_after_kill']:.1f} s after the kill):")
            print(f"  kill -> first event applied by the new owner: {t['event']:.2f} s")
            print(f"  kill -> first overdue timer of a lost partition delivered: {t['timer']:.2f} s", flush=True)
        if "restore" not in skip:
            r = restore_rate(bootstrap, tmp, args.restore_users)
            print(f"restore from the changelog: {r['actors']:,} actors in {r['seconds']:.2f} s "
                  f"= {r['actors'] / max(r['seconds'], 1e-9):,.0f} actors/s (reading, decoding, catching up)",
                  flush=True)
        if "ingestion" not in skip:
            rows = ingestion(bootstrap, tmp, args.duration)
            base = {kind: rate for label, kind, rate, _p99, _bad in rows if label.startswith("single")}
            print()
            print_table(("Herald", "requests", "events/s", "vs single", "p99 ms", "non-202"),
                        [(label, kind, f"{rate:,.0f}", f"{rate / base[kind]:.2f}x", f"{p99:.1f}", bad)
                         for label, kind, rate, p99, bad in rows])


if __name__ == "__main__":
    main()

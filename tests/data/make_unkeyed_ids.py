"""Writes the fixtures of data written before event ids were scoped by key (``tests/test_dedupe.py``,
``tests/test_cluster_parts.py``).

Run with a checkout of the version that wrote them (main at 60f1492) first on the path:

    PYTHONPATH=<that checkout> python3 tests/data/make_unkeyed_ids.py tests/data

- ``unkeyed_ids.sql``: a data dir's journal (SQL text of its database) as a crash left it: mallory's
  ``order-1001`` was accepted before its snapshot (which keeps ids without their key), ``order-2002``
  after it (journaled, with its key), then no final snapshot.
- ``unkeyed_ids_checkpoint.json``: a cluster partition's checkpoint holding mallory's ``order-1001``.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import trio

from engine import Config, Event
from engine.host import Herald, PluginHost
from engine._cluster import Shard, encode_event
from engine._journal import DB_NAME

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=timezone.utc)
REAL0 = T0.timestamp()


def ping(event_id: str, key: str, seconds: int) -> dict:
    return {"id": event_id, "key": key, "type": "ping", "timestamp": datetime.fromtimestamp(REAL0 + seconds, timezone.utc).isoformat()}


async def journal(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        live, crashed = Path(tmp) / "live", Path(tmp) / "crashed"
        config = Config(data_dir=str(live), durability="batch", snapshot_every=10**9)
        herald = Herald(config, PluginHost.from_objects(config, []), utcnow=lambda: REAL0 + 2.0)
        async with herald.running():
            await herald.wait_ready()
            await herald.accept([herald.engine.parse(ping("order-1001", "mallory", 0))])
            await herald.snapshot()
            await herald.accept([herald.engine.parse(ping("order-2002", "mallory", 1))])
            await herald.journal.commit()
            crashed.mkdir()
            with sqlite3.connect(live / DB_NAME) as a, sqlite3.connect(crashed / DB_NAME) as b:
                a.backup(b)
        with sqlite3.connect(crashed / DB_NAME) as conn:
            (out / "unkeyed_ids.sql").write_text("\n".join(conn.iterdump()) + "\n")


class Message:
    def __init__(self, value: bytes, offset: int, ms: int) -> None:
        self._value, self._offset, self._ms = value, offset, ms

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)


def checkpoint(out: Path) -> None:
    config = Config(cluster="127.0.0.1:9")
    shard = Shard(Herald(config, PluginHost.from_objects(config, [])).cluster, 0)
    event = Event("order-1001", "ping", "mallory", T0, {}, T0)
    shard.apply(Message(encode_event(event), 0, int(REAL0 * 1000)))
    (out / "unkeyed_ids_checkpoint.json").write_bytes(Shard.encode(*shard.capture()) + b"\n")


if __name__ == "__main__":
    target = Path(sys.argv[1])
    trio.run(journal, target)
    checkpoint(target)

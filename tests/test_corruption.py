"""A damaged journal is detected at start, reported, and its valid prefix recovered."""

import sqlite3
from pathlib import Path

import httpx

from engine.journal import DB_NAME
from engine.recovery import wal_report
from server import create_app

from .test_durability import T0, build, crash_image

from datetime import timedelta


async def journal_with(tmp_path: Path, count: int) -> Path:
    """A data dir whose journal holds ``count`` ping events (e0..), no snapshot."""
    live = build(tmp_path / "live", snapshot_every=10**9)
    async with live.running():
        await live.wait_ready()
        for i in range(count):
            raw = {"id": f"e{i}", "user_id": f"u{i % 3}", "type": "ping", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}
            await live.accept([live.engine.parse(raw)])
        crash_image(tmp_path / "live", tmp_path / "image")
    return tmp_path / "image"


async def recovered(data_dir: Path, per_user: bool = False):
    herald = build(data_dir)
    async with herald.running():
        await herald.wait_ready()
        counts = {key: (a.unknown or {}).get("ping", 0) for key, a in herald.engine.actors.items()}
        pings = sum(counts.values())
        transport = httpx.ASGITransport(app=create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            health = (await client.get("/healthz")).json()
    if per_user:
        return pings, health["journal"]["recovery"], counts
    return pings, health["journal"]["recovery"]


async def test_garbage_after_the_database_is_reported_and_cut(tmp_path):
    image = await journal_with(tmp_path, 200)
    with open(image / DB_NAME, "ab") as fh:
        fh.write(b"\x00garbage" * 1000)
    pings, report = await recovered(image)
    assert pings == 200
    assert not report["clean"] and "garbage tail" in report["problems"][0]


async def test_a_truncated_database_keeps_its_valid_prefix(tmp_path):
    image = await journal_with(tmp_path, 3000)
    db = image / DB_NAME
    size = db.stat().st_size
    with open(db, "r+b") as fh:  # a torn tail: the last pages never reached the disk
        fh.truncate(size - 3 * 4096)
    pings, report, per_user = await recovered(image, per_user=True)
    assert not report["clean"]
    assert any("integrity" in p or "malformed" in p for p in report["problems"]), report
    assert report["moved_to"] and Path(report["moved_to"]).exists()
    # A prefix survives: events 1..n in order, nothing after a gap.
    assert 0 < pings < 3000 and report["salvaged"]["events"] == pings
    # ...and it is the prefix: the first `pings` events, e0 to e{pings-1}, spread over u0..u2.
    assert per_user == {f"u{k}": len(range(k, pings, 3)) for k in range(3) if len(range(k, pings, 3))}


def test_a_torn_wal_tail_is_detected(tmp_path):
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x)")
    for i in range(5):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
    wal = tmp_path / "t.db-wal"
    committed, uncommitted, garbage = wal_report(wal)
    assert committed > 0 and garbage == 0
    data = wal.read_bytes()
    wal.write_bytes(data + b"\xff" * 3000)  # a torn write
    assert wal_report(wal) == (committed, 0, 3000)
    conn.close()

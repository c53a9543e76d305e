"""A damaged journal is detected at start, reported, and its valid prefix recovered; damage that
would lose committed events is refused until the operator salvages; copies are always kept first."""

import logging
import os
import shutil
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import trio

from engine._journal import DB_NAME, Journal, JournalError
from engine._repair import _walk_wal, wal_report
from server import create_app

from .conftest import herald_command, herald_process
from .test_durability import T0, build, crash_image


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
    # Salvaging loses the events after the damage: that is the operator's call, not automatic.
    with pytest.raises(JournalError, match="herald journal salvage"):
        open_journal(image)
    journal = open_journal(image, salvage=True)
    journal.close()
    salvage = journal.recovery.to_json()
    assert not salvage["clean"]
    assert any("integrity" in p or "malformed" in p for p in salvage["problems"]), salvage
    assert salvage["moved_to"] and Path(salvage["moved_to"]).exists()
    pings, report, per_user = await recovered(image, per_user=True)
    assert not report["clean"]  # the start after the salvage still says events were lost
    # A prefix survives: events 1..n in order, nothing after a gap.
    assert 0 < pings < 3000 and salvage["salvaged"]["events"] == pings
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


# -- recovery never destroys what it could keep ----------------------------------------------


async def journal_with_wal(tmp_path: Path, count: int, checkpoint_at: int | None = None) -> Path:
    """Like ``journal_with``, but the image is the files as they are on disk while Herald runs:
    the main file and a WAL holding the committed frames not yet checkpointed (those after
    event ``checkpoint_at``, if given)."""
    live = build(tmp_path / "live", snapshot_every=10**9)
    async with live.running():
        await live.wait_ready()
        for i in range(count):
            if i == checkpoint_at:
                with sqlite3.connect(tmp_path / "live" / DB_NAME) as conn:
                    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            raw = {"id": f"e{i}", "user_id": f"u{i % 3}", "type": "ping", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}
            await live.accept([live.engine.parse(raw)])
        image = tmp_path / "image"
        image.mkdir()
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(tmp_path / "live" / (DB_NAME + suffix), image / (DB_NAME + suffix))
    assert (image / (DB_NAME + "-wal")).stat().st_size > 0
    return image


def files(data_dir: Path, shm: bool = False) -> dict[str, bytes]:
    """The journal's files (the -shm index, which any reader rewrites, only if ``shm``)."""
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())
            if p.name.startswith(DB_NAME) and (shm or not p.name.endswith("-shm"))}


def copies(data_dir: Path) -> dict[str, bytes]:
    """The kept copies, by suffix ('' for the main file, '-wal', '-shm')."""
    out = {}
    for p in data_dir.glob(DB_NAME + ".corrupt-*"):
        suffix = next((s for s in ("-wal", "-shm") if p.name.endswith(s)), "")
        out[suffix] = p.read_bytes()
    return out


def zero_header(db: Path) -> None:
    with open(db, "r+b") as fh:
        fh.write(b"\0" * 100)


def open_journal(data_dir: Path, **kw) -> Journal:
    journal = Journal(data_dir)
    journal.open(**kw)
    return journal


def test_the_garbage_tail_cut_keeps_a_copy_of_every_file(tmp_path):
    image = trio.run(journal_with, tmp_path, 50)
    db = image / DB_NAME
    with open(db, "ab") as fh:
        fh.write(b"\x00garbage" * 1000)
    (image / (DB_NAME + "-shm")).write_bytes(b"\x01" * 32768)  # a stale index beside it
    before = files(image, shm=True)
    journal = open_journal(image)
    try:
        assert not journal.recovery.clean and "garbage tail" in journal.recovery.problems[0]
        assert journal.count_events() == 50
    finally:
        journal.close()
    kept = copies(image)
    assert kept[""] == before[DB_NAME] and kept["-shm"] == before[DB_NAME + "-shm"]


async def test_a_torn_wal_tail_is_handled_and_the_wal_kept(tmp_path):
    image = await journal_with_wal(tmp_path, 100)
    wal = image / (DB_NAME + "-wal")
    with open(wal, "ab") as fh:
        fh.write(b"\xff" * 3000)
    original = wal.read_bytes()
    pings, report = await recovered(image)
    assert pings == 100  # normal crash residue: automatic
    assert not report["clean"] and "torn or garbage tail" in report["problems"][0]
    assert copies(image)["-wal"] == original  # SQLite overwrites the WAL later: a copy was kept first


async def test_salvage_keeps_the_wal_it_salvages_from(tmp_path):
    image = await journal_with_wal(tmp_path, 3000, checkpoint_at=2500)
    db, wal = image / DB_NAME, image / (DB_NAME + "-wal")
    page_size, frames, _end = _walk_wal(wal.read_bytes())
    in_wal = {page for page, _commit, _offset in frames}
    outside = [page for page in range(2, db.stat().st_size // page_size + 1) if page not in in_wal]
    with open(db, "r+b") as fh:  # damage in the main file (a page the WAL does not cover) beside committed frames
        fh.seek((outside[len(outside) // 2] - 1) * page_size)
        fh.write(b"\x5a" * page_size)
    before = files(image)
    with pytest.raises(JournalError, match="herald journal salvage"):
        open_journal(image)
    assert files(image) == before  # refused: nothing changed, the WAL not checkpointed into the damage
    journal = open_journal(image, salvage=True)
    journal.close()
    assert 0 < journal.recovery.salvaged["events"] < 3000
    kept = copies(image)
    assert kept[""] == before[DB_NAME] and kept["-wal"] == before[DB_NAME + "-wal"]


async def test_a_zeroed_header_is_refused_not_started_empty(tmp_path):
    image = await journal_with(tmp_path, 200)
    zero_header(image / DB_NAME)
    before = files(image)
    with pytest.raises(JournalError) as info:
        open_journal(image)
    message = str(info.value)
    assert "header" in message and f"herald journal salvage --data-dir {image}" in message and "\n" not in message
    assert files(image) == before
    # The salvage rebuilds the header and keeps everything.
    journal = open_journal(image, salvage=True)
    try:
        assert journal.count_events() == 200 and journal.recovery.salvaged["events"] == 200
        assert not journal.recovery.clean
    finally:
        journal.close()
    assert copies(image)[""] == before[DB_NAME]
    pings, _report = await recovered(image)
    assert pings == 200


async def test_a_zeroed_header_with_a_wal_is_salvaged_from_both(tmp_path):
    image = await journal_with_wal(tmp_path, 300)
    zero_header(image / DB_NAME)
    before = files(image)
    with pytest.raises(JournalError, match="header"):
        open_journal(image)
    assert files(image) == before
    journal = open_journal(image, salvage=True)
    try:
        assert journal.count_events() == 300
    finally:
        journal.close()
    kept = copies(image)
    assert kept[""] == before[DB_NAME] and kept["-wal"] == before[DB_NAME + "-wal"]


async def test_a_damaged_wal_header_is_refused(tmp_path):
    image = await journal_with_wal(tmp_path, 100)
    wal = image / (DB_NAME + "-wal")
    with open(wal, "r+b") as fh:
        fh.write(b"\0\0\0\0")  # bad magic: SQLite would ignore every frame, then reset the WAL
    before = files(image)
    with pytest.raises(JournalError, match=r"header of herald\.db-wal is damaged.*herald journal salvage"):
        open_journal(image)
    assert files(image) == before


async def test_an_empty_main_file_beside_a_wal_is_refused(tmp_path):
    image = await journal_with_wal(tmp_path, 100)
    (image / DB_NAME).write_bytes(b"")  # SQLite would delete the WAL
    before = files(image)
    with pytest.raises(JournalError, match="empty while herald.db-wal holds"):
        open_journal(image)
    assert files(image) == before
    journal = open_journal(image, salvage=True)  # the WAL alone is checkpointed by hand into a fresh file
    try:
        assert journal.recovery.salvaged["events"] > 0
    finally:
        journal.close()


def test_nothing_readable_leaves_the_files_as_they_were(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"\0" * 8192)
    with pytest.raises(JournalError, match="herald journal salvage"):
        open_journal(data)
    with pytest.raises(JournalError, match="nothing could be salvaged"):
        open_journal(data, salvage=True)
    assert files(data) == {DB_NAME: b"\0" * 8192} and not copies(data)


def test_a_journal_that_lost_its_events_is_reported(tmp_path, caplog):
    image = trio.run(journal_with, tmp_path, 120)
    open_journal(image).close()  # this open records the high-water mark
    with sqlite3.connect(image / DB_NAME) as conn:  # events vanish, the file stays valid
        conn.execute("DELETE FROM event_batches")
    with caplog.at_level(logging.ERROR, logger="herald.journal"):
        journal = open_journal(image)
    journal.close()
    assert not journal.recovery.clean
    assert any("once held events up to seq 120" in p for p in journal.recovery.problems)
    assert any(r.levelno == logging.ERROR and "high-water" in r.getMessage() for r in caplog.records)


async def test_a_snapshot_raises_the_high_water_mark_during_a_run(tmp_path):
    """Not only an open records the mark: a snapshot does too, so events lost from the last run are seen."""
    live = build(tmp_path, snapshot_every=10**9)
    async with live.running():
        await live.wait_ready()
        for i in range(50):
            raw = {"id": f"e{i}", "user_id": "u", "type": "ping", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}
            await live.accept([live.engine.parse(raw)])
        await live.snapshot()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:  # the snapshot and every event vanish
        conn.execute("DELETE FROM event_batches")
        conn.execute("DELETE FROM snapshots")
    journal = open_journal(tmp_path)
    journal.close()
    assert any("once held events up to seq 50" in p for p in journal.recovery.problems), journal.recovery.problems


def test_events_ending_before_the_snapshot_are_reported(tmp_path):
    image = trio.run(journal_with, tmp_path, 30)
    with sqlite3.connect(image / DB_NAME) as conn:
        conn.execute("INSERT INTO snapshots VALUES (90, 0, x'00')")
    journal = open_journal(image)
    journal.close()
    assert any("before the latest snapshot's seq 90" in p for p in journal.recovery.problems)


def test_an_empty_journal_beside_damaged_copies_is_reported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / (DB_NAME + ".corrupt-20240101T000000")).write_bytes(b"old")
    journal = open_journal(data)
    journal.close()
    assert not journal.recovery.clean and "damaged copies" in journal.recovery.problems[0]


async def test_a_salvage_that_keeps_less_than_the_journal_held_says_so(tmp_path):
    image = await journal_with(tmp_path, 3000)
    open_journal(image).close()  # high-water mark 3000
    db = image / DB_NAME
    with open(db, "r+b") as fh:
        fh.truncate(db.stat().st_size - 3 * 4096)
    journal = open_journal(image, salvage=True)
    journal.close()
    kept = journal.recovery.salvaged["events"]
    assert 0 < kept < 3000
    assert any(f"events {kept + 1}..3000 are lost" in p for p in journal.recovery.problems)
    # ...and the next start says so too, instead of looking clean.
    pings, report = await recovered(image)
    assert pings == kept and not report["clean"]
    assert any("high-water" in p for p in report["problems"])


async def test_serve_refuses_a_zeroed_header_and_salvage_makes_it_startable(tmp_path):
    data = tmp_path / "data"
    image = await journal_with(tmp_path, 200)
    image.rename(data)
    zero_header(data / DB_NAME)
    env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_DATA_DIR": str(data), "HERALD_PORT": "1"}

    def run(*args):
        return subprocess.run([*herald_command(), *args], env=env, capture_output=True, text=True, timeout=120)

    served = await trio.to_thread.run_sync(run, "serve")
    assert served.returncode == 2, served.stderr
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herald: ") and "header" in lines[0]
    assert f"herald journal salvage --data-dir {data}" in lines[0]
    salvaged = await trio.to_thread.run_sync(run, "journal", "salvage", "--data-dir", str(data))
    assert salvaged.returncode == 0, salvaged.stderr
    assert "200 events" in salvaged.stdout and ".corrupt-" in salvaged.stdout
    async with herald_process(tmp_path) as url:
        async with httpx.AsyncClient() as client:
            health = (await client.get(url + "/healthz")).json()
    assert health["journal"]["seq"] == 200


def test_journal_salvage_exits_2_when_nothing_is_readable(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"\0" * 8192)
    result = subprocess.run([*herald_command(), "journal", "salvage", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nothing could be salvaged" in result.stderr
    assert (data / DB_NAME).read_bytes() == b"\0" * 8192

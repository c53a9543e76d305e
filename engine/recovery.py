"""Start-up checks of the journal database, and salvage of its valid prefix.

SQLite already ignores a torn tail of its write-ahead log. Herald makes that
visible: it walks the WAL's frame checksums and reports bytes that no valid
frame covers, reports (and cuts) bytes past the end of the main file, and runs
``PRAGMA quick_check``. A database that fails the check is moved aside and its
readable prefix (snapshots, events in order up to the first unreadable one,
outbox rows) is copied into a fresh one: a gap is never replayed over, because
applying later events without earlier ones would be a silent wrong state.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import attrs

__all__ = ["Recovery", "check_and_recover", "wal_report"]

log = logging.getLogger("herald.journal")

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24


@attrs.define
class Recovery:
    """What the start-up check found and did."""

    problems: list[str] = attrs.field(factory=list)
    moved_to: str | None = None
    salvaged: dict[str, int] = attrs.field(factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"clean": self.clean, "problems": self.problems, "moved_to": self.moved_to, "salvaged": self.salvaged}


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def wal_report(wal: Path) -> tuple[int, int, int]:
    """Walk a WAL file: (committed frames, frames after the last commit, bytes no valid frame covers)."""
    data = wal.read_bytes()
    if len(data) < _WAL_HEADER:
        return 0, 0, len(data)
    magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:_WAL_HEADER])
    if magic not in _WAL_MAGIC:
        return 0, 0, len(data)
    big = magic & 1 == 1
    s0, s1 = _checksum(data[:24], big, 0, 0)
    if (s0, s1) != (c1, c2):
        return 0, 0, len(data)
    frame_size = _FRAME_HEADER + page_size
    offset = _WAL_HEADER
    committed = frames = 0
    while offset + frame_size <= len(data):
        header = data[offset : offset + _FRAME_HEADER]
        _page, commit_size, fsalt1, fsalt2, fc1, fc2 = struct.unpack(">6I", header)
        if (fsalt1, fsalt2) != (salt1, salt2):
            break
        s0, s1 = _checksum(header[:8], big, s0, s1)
        s0, s1 = _checksum(data[offset + _FRAME_HEADER : offset + frame_size], big, s0, s1)
        if (s0, s1) != (fc1, fc2):
            break
        frames += 1
        offset += frame_size
        if commit_size:
            committed = frames
    valid_end = _WAL_HEADER + frames * frame_size
    return committed, frames - committed, len(data) - valid_end


def _main_file_excess(db: Path) -> tuple[int, int]:
    """(declared size in bytes, actual size) of the main database file."""
    with open(db, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return -1, db.stat().st_size
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change, pages, valid_for = struct.unpack(">I", header[24:28])[0], struct.unpack(">I", header[28:32])[0], struct.unpack(">I", header[92:96])[0]
    if change != valid_for or pages == 0:
        return -1, db.stat().st_size
    return pages * page_size, db.stat().st_size


def _quick_check(db: Path) -> str | None:
    try:
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    result = "; ".join(r[0] for r in rows)
    return None if result == "ok" else result


def check_and_recover(db: Path, schema: str) -> Recovery:
    """Check ``db`` before it is opened; salvage what can be read if it is damaged."""
    report = Recovery()
    if not db.exists():
        return report
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        committed, uncommitted, garbage = wal_report(wal)
        if garbage:
            report.problems.append(
                f"{wal.name}: {garbage} bytes at the end are not valid WAL frames (a torn or garbage tail); "
                f"ignored, the {committed} committed frames before them are recovered"
            )
        if uncommitted:
            log.info("%s: %d frames of a transaction that never committed are ignored", wal.name, uncommitted)
    declared, actual = _main_file_excess(db)
    if declared > 0 and actual > declared and not (wal.exists() and wal.stat().st_size):
        report.problems.append(
            f"{db.name}: {actual - declared} bytes past the database's declared end (garbage tail); cut off"
        )
        backup = _backup_path(db)
        shutil.copyfile(db, backup)
        with open(db, "r+b") as fh:
            fh.truncate(declared)
        report.moved_to = str(backup)
    error = _quick_check(db)
    if error is not None:
        report.problems.append(f"{db.name} failed its integrity check ({error}); salvaging its valid prefix")
        _salvage(db, schema, report)
    for problem in report.problems:
        log.error("journal recovery: %s", problem)
    return report


def _backup_path(db: Path) -> Path:
    return db.with_name(f"{db.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")


def _salvage(db: Path, schema: str, report: Recovery) -> None:
    backup = _backup_path(db)
    for suffix in ("", "-wal", "-shm"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            src.rename(backup.with_name(backup.name + suffix))
    report.moved_to = str(backup)
    fresh = sqlite3.connect(db, isolation_level=None)
    fresh.executescript(schema)
    # Read from a copy; pad a truncated one to its declared length with zeros, or
    # SQLite refuses the whole file (the zero pages read as damaged: the reads stop there).
    work = backup.with_name(backup.name + ".reading")
    shutil.copyfile(backup, work)
    wal_copy = backup.with_name(backup.name + "-wal")
    if wal_copy.exists():
        shutil.copyfile(wal_copy, work.with_name(work.name + "-wal"))
    declared, actual = _main_file_excess(work)
    if declared > actual:
        with open(work, "ab") as fh:
            fh.write(b"\0" * (declared - actual))
    try:
        old = sqlite3.connect(work, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"nothing could be read from the damaged file: {exc}")
        fresh.close()
        return
    counts = {"snapshots": 0, "events": 0, "outbox": 0}
    try:
        snapshot_seq = 0
        try:
            for row in old.execute("SELECT seq, created, body FROM snapshots ORDER BY seq DESC LIMIT 1"):
                fresh.execute("INSERT INTO snapshots VALUES (?,?,?)", row)
                snapshot_seq = row[0]
                counts["snapshots"] += 1
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"snapshots unreadable ({exc}); the journal alone is replayed")
        # Events: record batches in order, stopping at the first unreadable one or a gap.
        last = None
        try:
            for row in old.execute("SELECT last_seq, first_seq, body FROM event_batches ORDER BY last_seq"):
                if last is not None and row[1] != last + 1:
                    report.problems.append(f"events: gap after seq {last} (next readable is {row[1]}); stopped there")
                    break
                fresh.execute("INSERT INTO event_batches VALUES (?,?,?)", row)
                last = row[0]
                counts["events"] += row[0] - row[1] + 1
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"events unreadable after seq {last} ({exc}); stopped there")
        try:
            for row in old.execute("SELECT seq, body FROM load_bodies WHERE seq <= ? ORDER BY seq", (last or 0,)):
                fresh.execute("INSERT INTO load_bodies VALUES (?,?)", row)
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"bulk-load lines partly unreadable ({exc})")
        if last is not None and snapshot_seq and last < snapshot_seq:
            report.problems.append(f"events end at {last}, before the snapshot's {snapshot_seq}")
        try:
            for row in old.execute("SELECT * FROM outbox ORDER BY id"):
                fresh.execute("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?)", row)
                counts["outbox"] += 1
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"outbox partly unreadable ({exc}); {counts['outbox']} rows kept")
    finally:
        old.close()
        fresh.close()
        for leftover in (work, work.with_name(work.name + "-wal"), work.with_name(work.name + "-shm")):
            leftover.unlink(missing_ok=True)
    report.salvaged = counts

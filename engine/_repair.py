"""Start-up checks of the journal database, and salvage of its valid prefix.

Recovery never destroys what it could keep. SQLite already ignores a torn tail
of its write-ahead log; Herald makes that visible: it walks the WAL's frame
checksums and reports bytes that no valid frame covers (normal residue of a
crash: handled at start, after a copy of the WAL is kept), reports and cuts
bytes past the end of the main file (after a copy of every file is kept), and
runs ``PRAGMA quick_check`` on a read-only connection (a read-write one would
checkpoint the WAL into the damaged file and delete it).

Damage that would lose committed data if Herald simply opened the database is
left to the operator: an unreadable main-file header (SQLite would take the
file for a new database and discard its WAL), a damaged WAL header while the
WAL holds bytes (SQLite would ignore and then reset it), a missing or empty
main file beside a WAL, and a failed integrity check. ``check_and_recover``
raises :class:`NeedsOperator` for those, with the command that salvages:
``herald journal salvage`` moves the damaged files aside
(``herald.db.corrupt-<time>``, ``...-wal``, ``...-shm``) and copies their
readable prefix (snapshots, events in order up to the first unreadable one,
outbox rows) into a fresh database. A gap is never replayed over: applying
later events without earlier ones would be a silent wrong state.

:func:`check_history` runs on the open database: a journal that ends before
its recorded high-water mark (``meta.high_water``), whose events end before
its snapshot, or that is empty beside damaged copies of an earlier one is
reported as a problem, not as clean.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import attrs

__all__ = ["NeedsOperator", "Recovery", "check_and_recover", "check_history", "wal_report"]

log = logging.getLogger("herald.journal")

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24
_DB_MAGIC = b"SQLite format 3\x00"
_SUFFIXES = ("", "-wal", "-shm")


class NeedsOperator(Exception):
    """Damage Herald does not repair on its own; the message says what and which command salvages."""


@attrs.define
class Recovery:
    """What the start-up check found and did."""

    problems: list[str] = attrs.field(factory=list)
    moved_to: str | None = None
    salvaged: dict[str, int] = attrs.field(factory=dict)
    #: Copies of damaged files kept before anything was cut or salvaged.
    kept: list[str] = attrs.field(factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"clean": self.clean, "problems": self.problems, "moved_to": self.moved_to,
                "salvaged": self.salvaged, "kept": self.kept}


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def _walk_wal(data: bytes) -> tuple[int, list[tuple[int, int, int]], int] | None:
    """(page size, valid frames as (page number, commit size, offset of the page), end of the
    last valid frame), or None if the header is not a valid WAL header."""
    if len(data) < _WAL_HEADER:
        return None
    magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:_WAL_HEADER])
    if magic not in _WAL_MAGIC or not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return None
    big = magic & 1 == 1
    s0, s1 = _checksum(data[:24], big, 0, 0)
    if (s0, s1) != (c1, c2):
        return None
    frame_size = _FRAME_HEADER + page_size
    offset = _WAL_HEADER
    frames: list[tuple[int, int, int]] = []
    while offset + frame_size <= len(data):
        header = data[offset : offset + _FRAME_HEADER]
        page, commit_size, fsalt1, fsalt2, fc1, fc2 = struct.unpack(">6I", header)
        if (fsalt1, fsalt2) != (salt1, salt2):
            break
        s0, s1 = _checksum(header[:8], big, s0, s1)
        s0, s1 = _checksum(data[offset + _FRAME_HEADER : offset + frame_size], big, s0, s1)
        if (s0, s1) != (fc1, fc2):
            break
        frames.append((page, commit_size, offset + _FRAME_HEADER))
        offset += frame_size
    return page_size, frames, offset


def wal_report(wal: Path) -> tuple[int, int, int]:
    """Walk a WAL file: (committed frames, frames after the last commit, bytes no valid frame covers)."""
    data = wal.read_bytes()
    walked = _walk_wal(data)
    if walked is None:
        return 0, 0, len(data)
    _page_size, frames, end = walked
    committed = max((i + 1 for i, (_p, commit, _o) in enumerate(frames) if commit), default=0)
    return committed, len(frames) - committed, len(data) - end


def _wal_header_ok(wal: Path) -> bool:
    with open(wal, "rb") as fh:
        head = fh.read(_WAL_HEADER)
    return _walk_wal(head) is not None


def _main_file_excess(db: Path) -> tuple[int, int]:
    """(declared size in bytes, actual size) of the main database file."""
    with open(db, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(_DB_MAGIC):
        return -1, db.stat().st_size
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change, pages, valid_for = struct.unpack(">I", header[24:28])[0], struct.unpack(">I", header[28:32])[0], struct.unpack(">I", header[92:96])[0]
    if change != valid_for or pages == 0:
        return -1, db.stat().st_size
    return pages * page_size, db.stat().st_size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _header_damage(db: Path) -> list[str]:
    """Damage that makes SQLite lose committed data if it simply opens the database."""
    wal = db.with_name(db.name + "-wal")
    size, wal_size = _size(db), _size(wal)
    damage = []
    if size == 0:
        if wal_size:
            damage.append(f"{db.name} is {'empty' if db.exists() else 'missing'} while {wal.name} holds {wal_size} bytes "
                          "(SQLite would take it for a new database and delete the write-ahead log)")
    else:
        with open(db, "rb") as fh:
            header = fh.read(100)
        if len(header) < 100 or not header.startswith(_DB_MAGIC):
            damage.append(f"the header of {db.name} is unreadable (zeroed or overwritten; SQLite would take the file "
                          "for a new database and discard its write-ahead log)")
    if wal_size >= _WAL_HEADER and not _wal_header_ok(wal):
        damage.append(f"the header of {wal.name} is damaged (bad magic or checksum) while it holds {wal_size} bytes "
                      "(SQLite would ignore its committed frames and then overwrite them)")
    return damage


def _operator_message(db: Path, damage: list[str]) -> str:
    data_dir = shlex.quote(str(db.parent))
    return (f"the journal in {db.parent} is damaged: {'; '.join(damage)}. Herald does not start on it, because "
            f"starting would lose committed events; nothing has been changed. To keep what is readable, run "
            f"`herald journal salvage --data-dir {data_dir}` (it first moves the damaged files aside as "
            f"{db.name}.corrupt-<time>, -wal, -shm, then copies their readable prefix into a fresh journal and "
            f"reports what was kept), or start with `herald serve --salvage`")


def _quick_check(db: Path) -> str | None:
    # Read-only: a read-write connection would checkpoint the WAL into the (damaged)
    # main file when it closes, and delete the WAL.
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    result = "; ".join(r[0] for r in rows)
    return None if result == "ok" else result


def check_and_recover(db: Path, schema: str, *, salvage: bool = False) -> Recovery:
    """Check ``db`` before it is opened. Handle what is safe to handle (keeping copies first);
    raise :class:`NeedsOperator` for damage that would lose data, unless ``salvage``."""
    report = Recovery()
    wal = db.with_name(db.name + "-wal")
    wal_size = _size(wal)
    if not db.exists() and not wal_size:
        return report  # a new journal
    damage = _header_damage(db)
    if damage:
        if not salvage:
            raise NeedsOperator(_operator_message(db, damage))
        report.problems.extend(damage)
        _salvage(db, schema, report)
        return _logged(report)
    if wal_size:
        committed, uncommitted, garbage = wal_report(wal)
        if garbage:
            _base, kept = _keep_copies(db, ("-wal", "-shm"))
            report.kept.extend(kept)
            report.problems.append(
                f"{wal.name}: {garbage} bytes at the end are not valid WAL frames (a torn or garbage tail); "
                f"ignored, the {committed} committed frames before them are recovered (the WAL as it was is kept "
                f"as {Path(kept[0]).name})"
            )
        if uncommitted:
            log.info("%s: %d frames of a transaction that never committed are ignored", wal.name, uncommitted)
    declared, actual = _main_file_excess(db)
    if declared > 0 and actual > declared and not wal_size:
        base, kept = _keep_copies(db)
        report.kept.extend(kept)
        with open(db, "r+b") as fh:
            fh.truncate(declared)
        report.moved_to = str(base)
        report.problems.append(
            f"{db.name}: {actual - declared} bytes past the database's declared end (garbage tail); cut off "
            f"(the files as they were are kept as {base.name})"
        )
    error = _quick_check(db)
    if error is not None:
        problem = f"{db.name} failed its integrity check ({error})"
        if not salvage:
            _logged(report)
            raise NeedsOperator(_operator_message(db, [problem + "; salvaging it keeps only its readable prefix"]))
        report.problems.append(problem + "; salvaging its valid prefix")
        _salvage(db, schema, report)
    return _logged(report)


def _logged(report: Recovery) -> Recovery:
    for problem in report.problems:
        log.error("journal recovery: %s", problem)
    return report


def _backup_base(db: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        base = db.with_name(f"{db.name}.corrupt-{stamp}" + (f".{n}" if n else ""))
        if not any(base.with_name(base.name + s).exists() for s in (*_SUFFIXES, ".reading")):
            return base
    raise NeedsOperator(f"too many damaged copies named {db.name}.corrupt-{stamp}* in {db.parent}")


def _keep_copies(db: Path, suffixes: tuple[str, ...] = _SUFFIXES, *, move: bool = False) -> tuple[Path, list[str]]:
    """Copy (or move) the database's files that exist to ``<db>.corrupt-<time>[-wal|-shm]``, durably."""
    base = _backup_base(db)
    kept = []
    for suffix in suffixes:
        src = db.with_name(db.name + suffix)
        if not src.exists():
            continue
        dst = base.with_name(base.name + suffix)
        if move:
            src.rename(dst)
        else:
            shutil.copy2(src, dst)
            with open(dst, "rb") as fh:
                os.fsync(fh.fileno())
        kept.append(str(dst))
    _fsync_dir(db.parent)
    return base, kept


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _apply_wal(wal: Path, work: Path) -> int | None:
    """Write the WAL's committed frames into ``work`` (a checkpoint by hand); the WAL's page size."""
    data = wal.read_bytes()
    walked = _walk_wal(data)
    if walked is None:
        return None
    page_size, frames, _end = walked
    last_commit = max((i for i, (_p, commit, _o) in enumerate(frames) if commit), default=-1)
    if last_commit < 0:
        return page_size
    with open(work, "r+b") as fh:
        for page, _commit, offset in frames[: last_commit + 1]:
            fh.seek((page - 1) * page_size)
            fh.write(data[offset : offset + page_size])
        fh.truncate(frames[last_commit][1] * page_size)
    return page_size


def _header(page_size: int, pages: int) -> bytes:
    """A plausible database header, for a file whose own header is unreadable."""
    h = bytearray(100)
    h[0:16] = _DB_MAGIC
    struct.pack_into(">H", h, 16, 1 if page_size == 65536 else page_size)
    h[18] = h[19] = 1  # rollback journal: the work copy has no WAL
    h[21], h[22], h[23] = 64, 32, 32
    struct.pack_into(">IIII", h, 24, 1, pages, 0, 0)  # change counter, pages, no freelist
    struct.pack_into(">II", h, 40, 1, 4)  # schema cookie, schema format 4
    struct.pack_into(">I", h, 56, 1)  # UTF-8
    struct.pack_into(">II", h, 92, 1, 3_040_000)  # valid for change 1; written by SQLite 3.40
    return bytes(h)


def _readable(path: Path) -> bool:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "event_batches" not in names:
                return False
            conn.execute("SELECT count(*) FROM event_batches").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return True


def _repair_header(work: Path, page_size_hint: int | None) -> str | None:
    """Give ``work`` a header if its own is unreadable: try the page sizes until the schema reads."""
    with open(work, "rb") as fh:
        header = fh.read(100)
    if len(header) == 100 and header.startswith(_DB_MAGIC):
        return None
    size = work.stat().st_size
    original = header
    for page_size in dict.fromkeys([page_size_hint, 4096, 1024, 2048, 8192, 16384, 32768, 65536, 512]):
        if not page_size or size < page_size:
            continue
        with open(work, "r+b") as fh:
            fh.write(_header(page_size, -(-size // page_size)))
        if _readable(work):
            return f"{work.name.split('.corrupt-')[0]}: rebuilt the unreadable header (page size {page_size})"
    with open(work, "r+b") as fh:
        fh.write(original)
    return None


def _salvage(db: Path, schema: str, report: Recovery) -> None:
    """Move the damaged files aside and copy their readable prefix into a fresh ``db``.

    If nothing at all can be read, the damaged files are put back as they were and
    :class:`NeedsOperator` is raised: an empty journal would silently forget everything."""
    base, kept = _keep_copies(db, move=True)
    work = base.with_name(base.name + ".reading")
    fresh_path = db.with_name(db.name + ".salvage")
    for leftover in _family(fresh_path):
        leftover.unlink(missing_ok=True)
    counts = {"snapshots": 0, "events": 0, "outbox": 0}

    def put_back() -> None:
        for leftover in _family(fresh_path):
            leftover.unlink(missing_ok=True)
        for path in kept:
            Path(path).rename(db.with_name(db.name + path[len(str(base)):]))
        _fsync_dir(db.parent)

    try:
        _read_prefix(base, work, fresh_path, schema, report, counts)
    except BaseException:
        put_back()  # the damaged files stay where Herald will find (and refuse) them
        raise
    finally:
        for leftover in _family(work):
            leftover.unlink(missing_ok=True)
    report.salvaged = counts
    if not (counts["snapshots"] or counts["events"] or counts["outbox"]):
        put_back()  # nothing was kept, so nothing may be replaced
        _logged(report)
        raise NeedsOperator(
            f"nothing could be salvaged from the journal in {db.parent} ({'; '.join(report.problems) or 'no readable rows'}); "
            f"its files are left as they were. Restore them from a backup, or, to start with an empty journal, "
            f"move {db.name}, {db.name}-wal and {db.name}-shm out of the data directory"
        )
    fresh_path.rename(db)
    for leftover in _family(fresh_path)[1:]:
        leftover.unlink(missing_ok=True)
    _fsync_dir(db.parent)
    report.moved_to = str(base)
    report.kept.extend(kept)


def _family(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in _SUFFIXES]


def _read_prefix(base: Path, work: Path, fresh_path: Path, schema: str, report: Recovery, counts: dict) -> None:
    # Read from a work copy: the kept copies stay as they were. The WAL's committed frames
    # are applied to it by hand; a truncated file is padded to its declared length with
    # zeros (or SQLite refuses the whole file; the zero pages read as damaged: reads stop there).
    if base.exists():
        shutil.copyfile(base, work)
    else:
        work.write_bytes(b"")
    wal_copy = base.with_name(base.name + "-wal")
    page_size = None
    if _size(wal_copy):
        page_size = _apply_wal(wal_copy, work)
        if page_size is None:
            report.problems.append(f"the WAL's header is damaged: its frames could not be read (kept as {wal_copy.name})")
    repaired = _repair_header(work, page_size)
    if repaired:
        report.problems.append(repaired)
    declared, actual = _main_file_excess(work)
    if declared > actual:
        with open(work, "ab") as fh:
            fh.write(b"\0" * (declared - actual))
    fresh = sqlite3.connect(fresh_path, isolation_level=None)
    fresh.executescript(schema)
    try:
        old = sqlite3.connect(work, isolation_level=None)
        old.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"nothing could be read from the damaged file: {exc}")
        fresh.close()
        return
    try:
        _copy_rows(old, fresh, report, counts)
        # Remembered, so that the next start reports the salvage too (once).
        note = f"{base.name} on {time.strftime('%Y-%m-%d %H:%M:%S')}, kept through seq {counts['last_seq']}"
        fresh.execute("INSERT OR REPLACE INTO meta VALUES ('salvaged', ?)", (note,))
    finally:
        old.close()
        fresh.close()


def _copy_rows(old: sqlite3.Connection, fresh: sqlite3.Connection, report: Recovery, counts: dict) -> None:
    # How far the journal had got, as far as anything still says: the high-water mark,
    # the last batch's key (the index's last leaf may be readable when the rows before are not).
    expected = 0
    for sql in ("SELECT value FROM meta WHERE name = 'high_water'", "SELECT max(last_seq) FROM event_batches",
                "SELECT max(seq) FROM snapshots"):
        try:
            row = old.execute(sql).fetchone()
            expected = max(expected, int(row[0] or 0) if row else 0)
        except (sqlite3.DatabaseError, ValueError):
            pass
    try:
        for row in old.execute("SELECT name, value FROM meta"):
            fresh.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", row)
    except sqlite3.DatabaseError:
        pass
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
    kept_to = max(last or 0, snapshot_seq)
    if expected > kept_to:
        report.problems.append(
            f"the journal had reached seq {expected}; what was salvaged ends at seq {kept_to}: "
            f"events {kept_to + 1}..{expected} are lost"
        )
    if expected:  # remembered, so that the next start reports the loss too
        fresh.execute("INSERT OR REPLACE INTO meta VALUES ('high_water', ?)", (str(expected),))
    counts["last_seq"] = kept_to


def check_history(conn: sqlite3.Connection, db: Path, report: Recovery, *, salvage: bool = False) -> None:
    """On the open database: report a journal that lost events it once held, and raise
    its high-water mark (``meta.high_water``, the highest seq any open has seen). The note
    a salvage leaves is reported by the first start after it (not by a salvage run)."""
    events_last, batches = conn.execute("SELECT max(last_seq), count(*) FROM event_batches").fetchone()
    snap = conn.execute("SELECT max(seq) FROM snapshots").fetchone()[0]
    last = max(events_last or 0, snap or 0)
    row = conn.execute("SELECT value FROM meta WHERE name = 'high_water'").fetchone()
    try:
        high = int(row[0]) if row else 0
    except ValueError:
        high = 0
    problems = []
    if high > last:
        problems.append(
            f"the journal ends at seq {last}, but it once held events up to seq {high} (its high-water mark): "
            f"events {last + 1}..{high} are missing"
        )
    if events_last and snap and events_last < snap:
        problems.append(f"the events end at seq {events_last}, before the latest snapshot's seq {snap}")
    note = conn.execute("SELECT value FROM meta WHERE name = 'salvaged'").fetchone()
    if note and not salvage:  # the first start after a salvage
        problems.append(f"this journal was salvaged from the damaged {note[0]}: events after that may be lost")
        conn.execute("DELETE FROM meta WHERE name = 'salvaged'")
    if not batches and snap is None:
        copies = sorted(p.name for p in db.parent.glob(db.name + ".corrupt-*") if not p.name.endswith(".reading"))
        if copies:
            problems.append(
                f"the journal is empty, but damaged copies of an earlier one are beside it ({', '.join(copies)}): "
                "its events may have been lost"
            )
    if last > high:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('high_water', ?)", (str(last),))
    for problem in problems:
        log.error("journal recovery: %s", problem)
    report.problems.extend(problems)

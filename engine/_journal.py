"""The journal: events, the outbox and snapshots in one SQLite database (WAL mode).

The trio thread queues writes; a writer task takes each group of them once
the tasks that were ready have queued theirs, and writes it as a single
transaction (group commit: whatever arrives while a commit runs goes into the
next one). A small group is written right there, in the trio thread (cheaper
than two thread hand-offs; batch mode only); a large one goes to the journal's
writer thread, and the trio thread goes on meanwhile. A group that grows large
(:data:`EAGER_COST`) goes at the commit that makes it so, without waiting for
the other ready tasks: they apply their events while it is written. The event
records queued by one caller are encoded together at its ``commit()``, as one
JSON array. ``await journal.commit()`` returns once everything queued before
the call is durable, which is what a 202 waits for.

Durability modes (``--durability``):

``fsync``  every group commit is fsynced (``synchronous=FULL``): nothing
           acknowledged is lost, even on power failure.
``batch``  commits reach the OS at once and the WAL is fsynced every
           ``sync_interval`` seconds: a process crash loses nothing
           acknowledged; a power failure may lose the last interval.
``memory`` no journal at all: a restart forgets everything (tests, benchmarks).
"""

from __future__ import annotations

import enum
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import attrs
import orjson
import trio

from ._event import LOAD_TYPE, Event, make_event
from ._formats import JOURNAL_FORMAT, JOURNAL_FORMATS, SNAPSHOT_FORMAT, upgrade_event_rows, upgrade_snapshot
from ._repair import NeedsOperator, Recovery, check_and_recover, check_history
from ._redact import redact_url

__all__ = ["Durability", "Journal", "OutboxRow", "SnapshotRow", "JournalError", "DB_NAME"]

log = logging.getLogger("herald.journal")

_UTC = timezone.utc
#: A group costing at most this (an event 1, an outbox row or mark 8) is written by the writer task
#: in the trio thread, in batch mode (where a commit is a write to the OS, no fsync): handing it to the
#: writer thread and back (two wake-ups, and the trio thread idle meanwhile when every caller waits)
#: costs more than writing it (~50 us for 32 events).
INLINE_COST = 256
#: A group costing at least this goes to the writer thread at the commit that makes it so, without
#: waiting for the other ready tasks: the trio thread applies their events while it is written. Not
#: smaller: each group written costs the writer thread a transaction and takes the GIL back once per
#: statement, each time waiting for the trio thread to let go of it (up to the switch interval, 5 ms),
#: so many small groups cost more than they overlap (measured: 4,096 against 500 per group).
EAGER_COST = 4096
#: In batch mode the WAL is checkpointed into the database once it holds this many bytes (8192 pages of
#: 4 KiB, as ``wal_autocheckpoint=8192`` did), by the periodic sync in a worker thread on a connection
#: of its own, not by SQLite's automatic checkpoint in whichever connection commits: that one ran in the
#: trio thread when an inline group crossed the mark, stalling the event loop for ~40 ms (the copy and
#: the database's fsync), and the next commit truncated the WAL (~15 ms more; now the writer thread
#: truncates it, see :meth:`Journal._checkpoint`).
CHECKPOINT_BYTES = 8192 * 4096
#: How long a connection waits for another's lock before SQLite says busy.
BUSY_TIMEOUT_MS = 5000
DB_NAME = "herald.db"
#: 3: ``arrival`` is the engine's wall reading when the event was applied (a clock per actor).
#: Older formats are migrated on open (see :mod:`engine._formats`).
SCHEMA_VERSION = JOURNAL_FORMAT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
-- Events, one row per group commit (a record batch): JSON array of
-- [seq, id, key, type, ts, received, arrival, data], where ts and received are
-- POSIX seconds and arrival the engine's wall reading when it was applied (a
-- replay applies it at that reading again: every timer fires where it did live).
CREATE TABLE IF NOT EXISTS event_batches (
    last_seq INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    body BLOB NOT NULL
);
-- The lines of bulk loads, verbatim: the event record of a load (type
-- herald.load) carries everything else; its body is here, by seq, so that
-- megabytes of lines are neither escaped into JSON nor decoded as text.
CREATE TABLE IF NOT EXISTS load_bodies (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,     -- the effect's idempotency key
    kind TEXT NOT NULL,           -- effect class
    body BLOB NOT NULL,
    status TEXT NOT NULL,         -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    next_at REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, id);
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY,      -- last event seq the snapshot includes
    created REAL NOT NULL,
    body BLOB NOT NULL
);
"""


class JournalError(RuntimeError):
    """The journal cannot be written; Herald stops accepting events (fail-stop)."""


class Durability(str, enum.Enum):
    FSYNC = "fsync"
    BATCH = "batch"
    MEMORY = "memory"


@attrs.frozen(slots=True)
class OutboxRow:
    id: int
    key: str
    kind: str
    body: bytes
    status: str
    attempts: int
    created: float
    next_at: float
    updated: float
    error: str | None

    def to_json(self) -> dict[str, Any]:
        effect = orjson.loads(self.body)
        if isinstance(effect, dict) and isinstance(effect.get("url"), str):
            effect["url"] = redact_url(effect["url"])  # the outbox listing shows where, never the credentials
        return {
            "id": self.id, "key": self.key, "kind": self.kind, "status": self.status,
            "attempts": self.attempts, "created": self.created, "next_at": self.next_at,
            "updated": self.updated, "error": self.error, "effect": effect,
        }


@attrs.frozen(slots=True)
class SnapshotRow:
    seq: int
    created: float
    body: bytes


class _Batch:
    __slots__ = ("events", "chunks", "count", "first", "last", "bodies", "effects", "updates", "other", "done", "error", "results",
                 "finished", "failure")

    def __init__(self) -> None:
        #: Event records queued since the last :meth:`Journal._seal`, not encoded yet.
        self.events: list[tuple] = []
        #: Encoded records: each a JSON array of records (one per caller's commit, usually).
        self.chunks: list[bytes] = []
        self.count = 0  # records in ``chunks``
        self.first = self.last = 0  # their first and last seq
        self.bodies: list[tuple[int, bytes]] = []
        self.effects: list[tuple[str, str, bytes, float, Any]] = []
        self.updates: list[tuple] = []
        self.other: list[Callable[[sqlite3.Connection], None]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.results: list[tuple[int, Any]] = []
        self.finished = False  # its transaction ended (set by whoever wrote it)
        self.failure: BaseException | None = None  # why it failed, until the trio thread takes it as ``error``

    def __bool__(self) -> bool:
        return bool(self.events or self.chunks or self.effects or self.updates or self.other)

    def cost(self) -> int:
        """What writing it costs, roughly: an event 1, an outbox row or a mark 8."""
        return self.count + len(self.events) + 8 * (len(self.effects) + len(self.updates))

    def body(self) -> bytes:
        """The group's record batch (a JSON array of records), from its encoded chunks."""
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"[" + b",".join([chunk[1:-1] for chunk in chunks]) + b"]"


def connect(path: Path, *, readonly: bool = False, durability: Durability = Durability.BATCH) -> sqlite3.Connection:
    """Open the database with Herald's pragmas (WAL, small auto-checkpoints)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durability is Durability.FSYNC else 'NORMAL'}")
        conn.execute("PRAGMA journal_size_limit=0")  # truncate the WAL after checkpoints (see recovery)
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
        conn.execute("PRAGMA wal_autocheckpoint=8192")  # checkpoint (and sync the file) every 32 MiB, not 4
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class Journal:
    """One data directory's journal. Open it, ``run()`` its writer, queue, commit."""

    def __init__(self, data_dir: Path | str, durability: Durability = Durability.BATCH, *, sync_interval: float = 0.1,
                 on_new_effects: Callable[[list[tuple[int, Any]]], None] | None = None) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / DB_NAME
        self.durability = Durability(durability)
        #: Whether there is a journal at all (not ``memory``); read on every event, so an attribute.
        self.enabled = self.durability is not Durability.MEMORY
        self.sync_interval = sync_interval
        self.recovery: Recovery | None = None
        #: The format of the database as opened (older ones are read through :mod:`engine._formats`).
        self.format = SCHEMA_VERSION
        #: What :meth:`open` migrated, in one line (None if nothing was).
        self.migrated: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._read: sqlite3.Connection | None = None
        self._read_lock = trio.Lock()
        self._batch = _Batch()
        self._inflight: _Batch | None = None  # being written; later batches commit after it
        self._wakeup = trio.Event()  # something is queued while nothing is in flight
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._received: datetime | None = None  # the last event's receipt, and it as POSIX seconds
        self._received_ts = 0.0
        self._wal_fd: int | None = None
        self._lock_fd: int | None = None
        #: The write failure that stopped the journal (cleared by :meth:`reopen`).
        self.failed: BaseException | None = None
        self._failed_event = trio.Event()
        #: Called in the trio thread with ``[(outbox_id, token), ...]`` for effects
        #: committed for the first time (a repeated key is not reported): the outbox.
        self._on_new_effects = on_new_effects
        self.commits = 0
        #: Small groups may be written in the trio thread: only where a commit is a write to the OS
        #: (batch mode); an fsync there would stall the event loop (fsync mode commits in the writer thread).
        self._inline = self.durability is Durability.BATCH
        #: The next outbox id to give (writer thread; None: look it up, as after other writes).
        self._next_outbox_id: int | None = None
        #: Batch mode: the WAL size at which the periodic sync checkpoints it (see :data:`CHECKPOINT_BYTES`).
        self.checkpoint_bytes = CHECKPOINT_BYTES
        #: Set (by the sync's worker thread) once a checkpoint copied the WAL, until the writer thread
        #: truncated it after its next group: meanwhile every group goes to the writer thread, so that
        #: the truncation does not happen in the trio thread.
        self._checkpointing = False
        self._ckpt: sqlite3.Connection | None = None  # the checkpointer's connection (sync thread)
        self._ckpt_lock = threading.Lock()  # (a reopen after a failure may close it meanwhile)

    # -- opening ---------------------------------------------------------------

    def open(self, *, salvage: bool = False) -> Recovery | None:
        """Check and open the database (blocking: call it in a thread).

        Damage that would lose committed data raises JournalError saying which command
        salvages, unless ``salvage`` (``herald journal salvage``, ``herald serve --salvage``)."""
        if not self.enabled:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._open(salvage)
        except BaseException:
            self.close()  # and release the data dir
            raise
        return self.recovery

    def _open(self, salvage: bool) -> None:
        try:
            self.recovery = check_and_recover(self.path, _SCHEMA, salvage=salvage)
        except NeedsOperator as exc:
            raise JournalError(str(exc)) from None
        self._conn = connect(self.path, durability=self.durability)
        self._conn.executescript(_SCHEMA)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = _format_of(self._conn, self.path)
        if version < SCHEMA_VERSION:
            self.migrated = migrate(self._conn, self.path, version)
        check_history(self._conn, self.path, self.recovery, salvage=salvage)
        self._no_autocheckpoint(self._conn)  # (a migration above keeps SQLite's: no sync runs yet)
        self._read = connect(self.path, readonly=True)
        self.format = SCHEMA_VERSION

    def _no_autocheckpoint(self, conn: sqlite3.Connection) -> None:
        """In batch mode the writer's connection makes no automatic checkpoint: the periodic sync
        does (see :data:`CHECKPOINT_BYTES`)."""
        if self.durability is Durability.BATCH:
            conn.execute("PRAGMA wal_autocheckpoint=0")

    def _lock(self) -> None:
        """One writer per data dir: a second Herald on it would interleave sequences."""
        fd = os.open(self.dir / "herald.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(f"{self.dir} is in use by another Herald process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def open_readonly(self) -> None:
        """Open for reading only (e.g. while a server owns the database, or ``herald replay``
        reading another data dir): an older format is read as it is, upgraded as it is read."""
        self._read = connect(self.path, readonly=True)
        try:
            self.format = _format_of(self._read, self.path)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._close_checkpointer()
        for conn in (self._read, self._conn):
            if conn is not None:
                conn.close()
        self._conn = self._read = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- reading (blocking; used at start-up, by the CLI, and via ``query``) ------

    def latest_snapshot(self) -> SnapshotRow | None:
        row = self._db().execute("SELECT seq, created, body FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        return SnapshotRow(*row) if row else None

    def last_seq(self) -> int:
        row = self._db().execute("SELECT max(last_seq) FROM event_batches").fetchone()
        snap = self._db().execute("SELECT max(seq) FROM snapshots").fetchone()
        return max(row[0] or 0, snap[0] or 0)

    def count_events(self, after: int = 0) -> int:
        row = self._db().execute(
            "SELECT coalesce(sum(last_seq - max(first_seq, ? + 1) + 1), 0) FROM event_batches WHERE last_seq > ?",
            (after, after),
        ).fetchone()
        return row[0]

    def read_events(self, after: int = 0, limit: int = 20_000) -> list[tuple[int, Event, float | None, float, float]]:
        """Journaled events with ``seq > after``, in order, decoded, as ``(seq, event,
        arrival, timestamp, received)`` (the last two as POSIX seconds). Whole record
        batches are read until at least ``limit`` events are collected."""
        fromts = datetime.fromtimestamp
        loads = orjson.loads
        out: list[tuple[int, Event, float | None, float, float]] = []
        cursor = self._db().execute(
            "SELECT body FROM event_batches WHERE last_seq > ? ORDER BY last_seq", (after,)
        )
        last_received, received_at = None, None
        for (body,) in cursor:
            for seq, id_, key, type_, ts, received, arrival, data in loads(body):
                if seq > after:
                    if type_ == LOAD_TYPE and "body" not in data:
                        data["body"] = self._load_body(seq)
                    if received != last_received:  # neighbours were mostly received in the same millisecond
                        last_received, received_at = received, fromts(received, _UTC)
                    # ts is the event's ``at``: fromts(ts).timestamp() gives it back exactly
                    out.append((seq, make_event(id_, type_, key, fromts(ts, _UTC), data, received_at, ts),
                                arrival, ts, received))
            if len(out) >= limit:
                break
        cursor.close()
        return out

    def _load_body(self, seq: int) -> bytes:
        row = self._db().execute("SELECT body FROM load_bodies WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise JournalError(f"the lines of load event {seq} are missing from the journal")
        return row[0]

    def outbox_rows(self, status: str | None = None, *, after_id: int = 0, limit: int = 1000) -> list[OutboxRow]:
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id > ?"
        args: list[Any] = [after_id]
        if status:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [OutboxRow(*row) for row in self._db().execute(sql, args).fetchall()]

    # -- narrow reads for the operator console ---------------------------------------------

    def events_of(self, key: str, limit: int = 20) -> list[tuple[int, Event]]:
        """The newest journaled events of the actor ``key`` (at most ``limit``, newest first), as
        ``(seq, event)``; bulk loads are not listed. The journal holds the events since the last snapshot.

        There is no index by key: the record batches holding the key as JSON text are found
        by a byte search (``instr``, newest first), and only those are decoded."""
        needle = b"," + orjson.dumps(key) + b","
        fromts = datetime.fromtimestamp
        found: list[tuple[int, Event]] = []
        cursor = self._db().execute(
            "SELECT body FROM event_batches WHERE instr(body, ?) > 0 ORDER BY last_seq DESC", (needle,))
        for (body,) in cursor:
            for seq, id_, key_, type_, ts, received, _arrival, data in reversed(orjson.loads(body)):
                if key_ == key and type_ != LOAD_TYPE:
                    found.append((seq, Event(id_, type_, key_, fromts(ts, _UTC), data, fromts(received, _UTC))))
                    if len(found) >= limit:
                        break
            if len(found) >= limit:
                break
        cursor.close()
        return found

    def effects_naming(self, key: str, limit: int = 20) -> list[OutboxRow]:
        """The newest outbox rows (at most ``limit``) whose effect has a string value equal to ``key``
        anywhere (a notification's ``user_id``, say): the effects an actor caused, as far as the
        outbox can tell (it does not record their cause). A byte search first, then a check."""
        found: list[OutboxRow] = []
        cursor = self._db().execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE instr(body, ?) > 0 ORDER BY id DESC",
                                    (orjson.dumps(key),))
        for row in cursor:
            if _names(orjson.loads(row[3]), key):
                found.append(OutboxRow(*row))
                if len(found) >= limit:
                    break
        cursor.close()
        return found

    def outbox_page(self, status: str | None = None, receiver: str = "", *, before_id: int | None = None,
                    limit: int = 50) -> list[OutboxRow]:
        """Outbox rows, newest first, below ``before_id``: of one ``status`` (``retrying``: pending after a
        failed attempt) and whose receiver (a notification's URL, or the effect's kind) contains ``receiver``."""
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id < ?"
        args: list[Any] = [2**63 - 1 if before_id is None else before_id]
        if status == "retrying":
            sql += " AND status = 'pending' AND attempts > 0"
        elif status:
            sql += " AND status = ?"
            args.append(status)
        if receiver:
            sql += " AND (instr(kind, ?) > 0 OR instr(coalesce(json_extract(CAST(body AS TEXT), '$.url'), ''), ?) > 0)"
            args += [receiver, receiver]
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [OutboxRow(*row) for row in self._db().execute(sql, args).fetchall()]

    def outbox_counts(self) -> dict[str, int]:
        """Outbox rows by status, and ``retrying``: the pending ones that failed at least once."""
        db = self._db()
        counts = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        retrying = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending' AND attempts > 0").fetchone()[0]
        return {**{s: counts.get(s, 0) for s in ("pending", "delivered", "dead")}, "retrying": retrying}

    def stats(self) -> dict[str, Any]:
        db = self._db()
        events, first, last = db.execute(
            "SELECT count(*), min(seq), max(seq) FROM events" if self.format == 1 else  # not migrated yet
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0), min(first_seq), max(last_seq) FROM event_batches"
        ).fetchone()
        outbox = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        snaps = db.execute("SELECT count(*), max(seq), max(created) FROM snapshots").fetchone()
        size = sum(p.stat().st_size for p in self.dir.glob(DB_NAME + "*") if p.is_file())
        return {
            "path": str(self.path),
            "format": self.format,
            "durability": self.durability.value,
            "bytes": size,
            "events": events,
            "first_seq": first,
            "last_seq": last,
            "outbox": {s: outbox.get(s, 0) for s in ("pending", "delivered", "dead")},
            "snapshots": snaps[0],
            "snapshot_seq": snaps[1],
            "snapshot_created": snaps[2],
        }

    async def query(self, fn: Callable[["Journal"], Any]) -> Any:
        """Run a read (a function of this journal) in a thread, off the trio loop."""
        async with self._read_lock:
            return await trio.to_thread.run_sync(fn, self)

    def _db(self) -> sqlite3.Connection:
        conn = self._read or self._conn
        if conn is None:
            raise JournalError("the journal is not open")
        return conn

    # -- queueing writes (trio thread) ------------------------------------------

    def add_event(self, seq: int, event: Event, arrival: float | None, data: Any = None) -> None:
        """Queue an event (``data``: what to journal as its data, if not ``event.data``). Its record
        is encoded with the others queued before the next :meth:`commit` (or hand-over to the
        writer), in one ``orjson.dumps``: one buffer per group of records, not one per event."""
        if data is None:
            data = event.data
        if event.type == LOAD_TYPE and data.get("body").__class__ is bytes:
            self._batch.bodies.append((seq, data["body"]))
            data = {k: v for k, v in data.items() if k != "body"}
        received = event.received_at
        if received is not self._received:  # the events of one request share their receipt
            self._received, self._received_ts = received, received.timestamp()
        self._batch.events.append((seq, event.id, event.key, event.type, event.at, self._received_ts, arrival, data))
        if self._inflight is None:
            self._wakeup.set()

    def add_effect(self, key: str, kind: str, body: bytes, now: float, token: Any) -> None:
        """Queue an outbox row; ``token`` comes back through ``on_new_effects``."""
        self._batch.effects.append((key, kind, body, now, token))
        if self._inflight is None:
            self._wakeup.set()

    def mark(self, outbox_id: int, status: str, attempts: int, next_at: float, error: str | None) -> None:
        self._batch.updates.append((status, attempts, next_at, time.time(), error, outbox_id))
        self._wake()

    def add_write(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        """Queue an arbitrary write, run inside the next group transaction."""
        self._batch.other.append(fn)
        self._wake()

    def _wake(self) -> None:
        # While a commit is in flight, its end hands the next group over: no need to wake the writer task.
        if self._inflight is None:
            self._wakeup.set()

    async def commit(self) -> None:
        """Wait until everything queued so far is committed; raise JournalError on failure."""
        if not self.enabled:
            return
        batch = self._batch
        if batch.events:
            self._seal(batch)  # now, while the data is as it was applied: no other task ran since
        if self.failed is not None:
            raise JournalError(f"the journal failed: {self.failed}")
        if batch:
            inflight = self._inflight
            if inflight is not None:
                if inflight.finished:
                    self._written(inflight)  # (and this group goes now) without waiting for the wake-up
            elif batch.cost() >= EAGER_COST:
                # A large group goes to the writer thread at once: the trio thread applies the next
                # callers' events while it is written, instead of queueing them all first.
                self._submit()
        else:
            batch = self._inflight
            if batch is None:
                return
        await batch.done.wait()
        if batch.error is not None:
            raise JournalError(f"the journal failed: {batch.error}")

    # -- the writer ---------------------------------------------------------------

    def _seal(self, batch: _Batch) -> None:
        """Encode the records queued in ``batch`` since the last call (trio thread): one JSON array,
        one buffer. Data that cannot be encoded (checked before applying, so only if a handler
        changed an event's data into something JSON cannot hold) stops the journal: the events
        were applied but cannot be kept, so Herald rebuilds from what was committed."""
        events = batch.events
        try:
            chunk = orjson.dumps(events)
        except orjson.JSONEncodeError as exc:
            self.fail(JournalError(f"an applied event cannot be journaled: {exc}"))
            chunk = None
        if chunk is not None:
            if not batch.chunks:
                batch.first = events[0][0]
            batch.chunks.append(chunk)
            batch.count += len(events)
            batch.last = events[-1][0]
        batch.events = []

    def _submit(self, *, inline: bool = False) -> None:
        """Start writing the current group (trio thread; nothing in flight): in the writer
        thread, or, if ``inline`` and the group is small, here and now."""
        batch, self._batch = self._batch, _Batch()
        if batch.events:
            self._seal(batch)
        if self.failed is not None:
            # Never write past a failed batch: its events are not in the journal, so
            # later ones would leave a gap that a replay must not cross.
            batch.error = self.failed
            batch.done.set()
            return
        self._inflight = batch
        if (inline and self._inline and not (batch.other or batch.bodies or self._checkpointing)
                and batch.cost() <= INLINE_COST):
            try:
                self._write(batch)
            except Exception as exc:  # disk full, I/O error: stop accepting, say why
                batch.failure = exc
            batch.finished = True
            self._written(batch)
        else:
            self._queue.put(batch)

    def _written(self, batch: _Batch) -> None:
        """``batch`` (in flight) is finished (trio thread): hand the next group to the writer at
        once if it is large (else the writer task takes it once the ready tasks have queued theirs),
        then wake everyone waiting for this one, all in one go, and report its new effects."""
        if batch is not self._inflight:
            return  # reported already
        self._inflight = None
        error = batch.failure
        if error is not None:
            batch.error = error
            self.fail(error)
        else:
            self.commits += 1
        if self._batch:
            if self._batch.cost() >= EAGER_COST:
                self._submit()
            else:
                self._wakeup.set()
        batch.done.set()
        if error is None and batch.results and self._on_new_effects is not None:
            try:
                self._on_new_effects(batch.results)
            except Exception:  # a bug there must not stop the journal: the rows are committed
                log.exception("handing committed effects over failed")

    def _writer(self, token: trio.lowlevel.TrioToken) -> None:
        """The writer thread: one transaction per group, in order. The trio thread sees a group
        finished at its next commit, or when woken (if nothing commits meanwhile)."""
        while (batch := self._queue.get()) is not None:
            try:
                self._write(batch)
            except Exception as exc:  # disk full, I/O error: the trio side stops accepting, says why
                batch.failure = exc
            batch.finished = True
            try:
                token.run_sync_soon(self._written, batch)
            except trio.RunFinishedError:
                return
            if self._checkpointing and self._conn is not None:
                self._truncate_wal(self._conn)  # (its callers are answered meanwhile)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task (it takes each group once the tasks that were ready have queued
        theirs), the writer thread, and, in batch mode, the periodic WAL sync."""
        if not self.enabled:
            task_status.started()
            await trio.sleep_forever()
        self._queue = queue.SimpleQueue()
        thread = threading.Thread(target=self._writer, args=(trio.lowlevel.current_trio_token(),),
                                  name="herald-journal-writer", daemon=True)
        thread.start()
        try:
            async with trio.open_nursery() as nursery:
                if self.durability is Durability.BATCH:
                    nursery.start_soon(self._sync_loop)
                task_status.started()
                while True:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    if self._inflight is None and self._batch:
                        self._submit(inline=True)
        finally:
            with trio.CancelScope(shield=True):
                # Whatever was queued at shutdown is written (or refused, after a failure).
                while self._inflight is not None or self._batch:
                    if self._inflight is None:
                        self._submit()
                    if self._inflight is not None:
                        await self._inflight.done.wait()
                self._queue.put(None)
                await trio.to_thread.run_sync(thread.join)
                await trio.to_thread.run_sync(self._sync)

    async def wait_failed(self) -> BaseException:
        """Wait until a write fails; return the failure."""
        await self._failed_event.wait()
        assert self.failed is not None
        return self.failed

    def reopen(self) -> None:
        """After a write failure: open the database again and prove that it takes a write
        (blocking: run it in a thread). Raises if it still cannot; :meth:`resume` then takes
        writes again (in the trio thread)."""
        for conn in (self._read, self._conn):
            if conn is not None:
                conn.close()
        self._conn = self._read = None
        self._next_outbox_id = None
        self._close_checkpointer()
        conn = connect(self.path, durability=self.durability)
        self._no_autocheckpoint(conn)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('reopened', ?)", (str(time.time()),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        self._conn = conn
        self._read = connect(self.path, readonly=True)

    def resume(self) -> None:
        """After :meth:`reopen` (in the trio thread): take writes again. Whatever was queued since
        the failure was refused (its waiters got a JournalError) and is dropped: nothing after a
        failed batch is ever written, so the journal has no gap."""
        if self._wal_fd is not None:  # the old WAL may be gone: the periodic fsync must open the new one
            os.close(self._wal_fd)
            self._wal_fd = None
        self._batch = _Batch()
        self.failed = None
        self._failed_event = trio.Event()

    def fail(self, exc: BaseException) -> None:
        """Stop taking writes because of ``exc`` (the writer does this on a failed commit)."""
        if self.failed is None:
            log.critical("journal failed; Herald stops accepting events until it can write again: %s", exc)
            self.failed = exc
            self._failed_event.set()

    def _write(self, batch: _Batch) -> None:
        """One group, one transaction. Written in as few statements as can be (each one hands the
        GIL over and takes it back, which in the writer thread can mean waiting for the trio thread
        to let go of it): the records are one row; the outbox rows go in a statement per
        :data:`OUTBOX_ROWS_PER_STATEMENT`; a group of records alone is a single INSERT (autocommit)."""
        conn = self._conn
        assert conn is not None
        if not (batch.bodies or batch.effects or batch.updates or batch.other):
            if batch.chunks:  # (a statement is a transaction: durable as a COMMIT is)
                conn.execute("INSERT INTO event_batches VALUES (?,?,?)", (batch.last, batch.first, batch.body()))
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.chunks:
                conn.execute("INSERT INTO event_batches VALUES (?,?,?)", (batch.last, batch.first, batch.body()))
                if batch.bodies:
                    conn.executemany("INSERT INTO load_bodies VALUES (?,?)", batch.bodies)
            if batch.effects:
                self._insert_effects(conn, batch)
            if batch.updates:
                conn.executemany(
                    "UPDATE outbox SET status=?, attempts=?, next_at=?, updated=?, error=? WHERE id=?", batch.updates
                )
            if batch.other:
                self._next_outbox_id = None  # (they may add outbox rows of their own)
                for fn in batch.other:
                    fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._next_outbox_id = None
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise

    def _insert_effects(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        """The group's outbox rows, with the ids given here (above every one used): a row whose key
        is in the outbox already is ignored, so if as many rows went in as were given, all are new,
        with those ids; only otherwise are the new ones looked up."""
        effects = batch.effects
        first = self._next_outbox_id
        if first is None:
            first = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0] + 1
        changes = conn.total_changes
        params: list[Any] = []
        for i, (key, kind, body, now, _) in enumerate(effects, first):
            params += (i, key, kind, body, now, now, now)
        width = 7 * OUTBOX_ROWS_PER_STATEMENT
        for start in range(0, len(params), width):
            part = params[start : start + width]
            conn.execute(_outbox_insert(len(part) // 7), part)
        self._next_outbox_id = first + len(effects)
        if conn.total_changes - changes == len(effects):
            batch.results = [(first + i, effect[4]) for i, effect in enumerate(effects)]
        else:  # (a key repeated within the batch is new once: its first row)
            new = {row[0] for row in conn.execute("SELECT id FROM outbox WHERE id >= ?", (first,))}
            batch.results = [(first + i, effect[4]) for i, effect in enumerate(effects) if first + i in new]

    async def _sync_loop(self) -> None:
        while True:
            await trio.sleep(self.sync_interval)
            await trio.to_thread.run_sync(self._sync)

    def _sync(self) -> None:
        """fsync the WAL (batch mode's periodic durability point); checkpoint it once it is large."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            if self._wal_fd is None:
                self._wal_fd = os.open(wal, os.O_RDONLY)
            os.fsync(self._wal_fd)
            size = os.fstat(self._wal_fd).st_size
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("fsync of %s failed: %s", wal, exc)
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            return
        if self.durability is not Durability.BATCH:
            return
        if size >= self.checkpoint_bytes and not self._checkpointing:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database (a worker thread, its own connection), then have the
        writer thread truncate it.

        A passive checkpoint here: the bulk of the work (the copy and the fsyncs), while the writer
        goes on appending (it waits for no lock). The truncation needs the write lock: the writer
        thread takes it itself, between two groups (:meth:`_truncate_wal`), instead of waiting for
        a checkpointer holding it in its busy handler's sleeps of 1, 2, 5, 10... ms (measured 54
        ms). Meanwhile groups are written in the writer thread (see ``_checkpointing``)."""
        with self._ckpt_lock:
            try:
                if self._ckpt is None:
                    self._ckpt = connect(self.path, durability=self.durability)
                self._ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next sync tries again; writes are unaffected
                log.warning("checkpoint of %s failed (retried at the next sync): %s", self.path.name, exc)
                return
            self._checkpointing = True

    def _truncate_wal(self, conn: sqlite3.Connection) -> None:
        """Writer thread, between groups, after a checkpoint: copy what was appended since and
        truncate the WAL. Never waits for a reader (no busy timeout): with one reading, the WAL
        stays as it is, and the next sync checkpoints again."""
        try:
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            log.warning("truncating the WAL of %s failed (retried after the next checkpoint): %s", self.path.name, exc)
        finally:
            self._checkpointing = False

    def _close_checkpointer(self) -> None:
        with self._ckpt_lock:
            if self._ckpt is not None:
                self._ckpt.close()
                self._ckpt = None
            self._checkpointing = False

    # -- outbox rows (whole-table changes) ----------------------------------------------

    def revive_dead(self, ids: list[int], now: float) -> None:
        """Queue: give these dead letters a fresh schedule (pending, no attempts)."""
        def revive(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET status='pending', attempts=0, created=?, next_at=?, updated=?, error=NULL"
                " WHERE id=? AND status='dead'",
                [(now, now, now, i) for i in ids],
            )

        self.add_write(revive)

    def copy_outbox(self, rows: list[OutboxRow]) -> None:
        """Queue: copy another journal's outbox rows (``herald replay`` carries undelivered effects over)."""
        def copy(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO outbox (key, kind, body, status, attempts, created, next_at, updated, error)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [(r.key, r.kind, r.body, r.status, r.attempts, r.created, r.next_at, r.updated, r.error) for r in rows],
            )

        self.add_write(copy)

    # -- maintenance ----------------------------------------------------------------

    def compact(self, conn: sqlite3.Connection, *, through_seq: int, delivered_before: float,
                keep_snapshots: int = 2) -> None:
        """Inside a transaction: drop the events a snapshot covers (the snapshot keeps
        the ids still to be recognised), old snapshots and old delivered effects."""
        conn.execute("DELETE FROM event_batches WHERE last_seq <= ?", (through_seq,))
        conn.execute("DELETE FROM load_bodies WHERE seq <= ?", (through_seq,))
        conn.execute(
            "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
            (keep_snapshots,),
        )
        conn.execute("DELETE FROM outbox WHERE status = 'delivered' AND updated < ?", (delivered_before,))


_OUTBOX_COLUMNS = "id, key, kind, body, status, attempts, created, next_at, updated, error"
#: Outbox rows per INSERT (7 parameters each: well under SQLite's least limit of 999 per statement).
OUTBOX_ROWS_PER_STATEMENT = 64


@functools.lru_cache(maxsize=OUTBOX_ROWS_PER_STATEMENT)
def _outbox_insert(rows: int) -> str:
    return ("INSERT OR IGNORE INTO outbox (id, key, kind, body, status, attempts, created, next_at, updated) VALUES "
            + ",".join(["(?,?,?,?,'pending',0,?,?,?)"] * rows))


def _names(value: Any, key: str) -> bool:
    """Whether a decoded JSON value holds the string ``key`` anywhere (as a value, not a member name)."""
    if isinstance(value, str):
        return value == key
    if isinstance(value, dict):
        return any(_names(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_names(v, key) for v in value)
    return False


def snapshot_writer(seq: int, body: bytes, created: float) -> Callable[[sqlite3.Connection], None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?)", (seq, created, body))
        # Raise the high-water mark with each snapshot too (not only at open): a journal that later
        # holds less than this is reported as having lost events (see recovery.check_history).
        conn.execute("INSERT INTO meta VALUES ('high_water', ?) ON CONFLICT (name) DO UPDATE SET value = "
                     "CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)", (str(seq),))

    return write


# -- formats ---------------------------------------------------------------------------------

def _format_of(conn: sqlite3.Connection, path: Path) -> int:
    """The journal format recorded in the database; JournalError for one this Herald cannot read."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        row = None
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        version = 0
    if version not in JOURNAL_FORMATS:
        known = ", ".join(map(str, JOURNAL_FORMATS))
        newer = version > SCHEMA_VERSION
        raise JournalError(
            f"{path} has journal format {row[0] if row else 'none'}; this Herald reads formats {known}"
            + (": a newer Herald wrote it; run that version (or a newer one) on it" if newer else "")
        )
    return version


def _keep_original(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    """A consistent copy of the whole database (WAL included) beside it, fsynced, before migrating."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        copy = path.with_name(f"{path.name}.format-{version}-{stamp}" + (f".{n}" if n else ""))
        if not copy.exists():
            break
    else:
        raise JournalError(f"too many copies named {path.name}.format-{version}-{stamp}* in {path.parent}")
    target = sqlite3.connect(copy)
    try:
        conn.backup(target)
    finally:
        target.close()
    with open(copy, "rb") as fh:
        os.fsync(fh.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return copy


def migrate(conn: sqlite3.Connection, path: Path, version: int, *, keep: bool = True) -> str:
    """Rewrite an older journal (format ``version``) in the current format, in one transaction,
    after keeping a copy of the original beside it (unless not ``keep``: ``path`` is a copy
    already); log and return one line saying so."""
    copy = _keep_original(conn, path, version) if keep else None
    started = time.perf_counter()
    events = snaps = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            # One row per event; ``data`` was JSON text. Grouped into record batches of up to 1000.
            rows = conn.execute(
                "SELECT seq, id, key, type, ts, received, arrival, data FROM events ORDER BY seq").fetchall()
            for i in range(0, len(rows), 1000):
                group = [[seq, id_, key, type_, ts, received, arrival, orjson.loads(data)]
                         for seq, id_, key, type_, ts, received, arrival, data in rows[i:i + 1000]]
                conn.execute("INSERT INTO event_batches VALUES (?,?,?)",
                             (group[-1][0], group[0][0], orjson.dumps(group)))
            conn.execute("DROP TABLE events")
        if version <= 2:
            floor = float("-inf")
            for (last_seq,) in conn.execute("SELECT last_seq FROM event_batches ORDER BY last_seq").fetchall():
                body = conn.execute("SELECT body FROM event_batches WHERE last_seq = ?", (last_seq,)).fetchone()[0]
                rows, floor = upgrade_event_rows(orjson.loads(body), version, floor)
                events += len(rows)
                conn.execute("UPDATE event_batches SET body = ? WHERE last_seq = ?", (orjson.dumps(rows), last_seq))
        for seq, body in conn.execute("SELECT seq, body FROM snapshots").fetchall():
            doc = orjson.loads(body)
            new = upgrade_snapshot(doc)
            if new is not doc:
                snaps += 1
                conn.execute("UPDATE snapshots SET body = ? WHERE seq = ?", (orjson.dumps(new), seq))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    line = (f"migrated {path} from journal format {version} to {SCHEMA_VERSION} ({events} events, "
            f"{snaps} snapshot(s) to snapshot format {SNAPSHOT_FORMAT}) in "
            f"{time.perf_counter() - started:.2f} s" + (f"; the original is kept in {copy}" if copy else ""))
    if keep:
        log.warning("%s", line)
    return line


def migrated_copy(source: Path, into: Path) -> str:
    """Copy the journal database ``source`` (any known format, read-only) into the directory
    ``into`` and migrate the copy to the current format (``herald replay`` reads an older data
    dir this way, leaving it as it is); return what was migrated, in one line."""
    reading = connect(source, readonly=True)
    try:
        version = _format_of(reading, source)
        copy = into / DB_NAME
        target = sqlite3.connect(copy, isolation_level=None)
        try:
            reading.backup(target)
            target.executescript(_SCHEMA)
            return migrate(target, copy, version, keep=False)
        finally:
            target.close()
    finally:
        reading.close()

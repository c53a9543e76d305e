"""The Eye's store: valid events and error rows in an indexed SQLite database.

A read model fed by the handler's effects (an effect sink): ``put`` buffers,
a background task writes every 100 ms in a worker thread, ``flush`` writes
now. Writes are idempotent (events by id, errors by event id and field), so
the effects of replayed events change nothing. Queries flush first, so a
client reads its own writes. The database lives beside the journal
(``analytics.db``); with ``--durability memory`` it is in memory.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from pathlib import Path
from typing import Any, Sequence

import orjson
import trio

from .model import RejectedEvent, StoredEvent

__all__ = ["Store", "Cursor", "BadCursor"]

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    category TEXT NOT NULL,
    name TEXT NOT NULL,
    ts REAL NOT NULL,
    data BLOB NOT NULL,
    client TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id, ts, id);
CREATE INDEX IF NOT EXISTS events_category ON events (category, ts, id);
CREATE INDEX IF NOT EXISTS events_type ON events (category, name, ts, id);
CREATE INDEX IF NOT EXISTS events_name ON events (name, ts, id);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    client TEXT NOT NULL,
    field TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    input BLOB,
    created_at REAL NOT NULL,
    session_id TEXT,
    category TEXT,
    name TEXT,
    timestamp TEXT,
    UNIQUE (event_id, field)
);
CREATE INDEX IF NOT EXISTS errors_event ON errors (event_id);
CREATE INDEX IF NOT EXISTS errors_session ON errors (session_id, id);
CREATE INDEX IF NOT EXISTS errors_category ON errors (category, name, id);
CREATE INDEX IF NOT EXISTS errors_code ON errors (code, id);
CREATE INDEX IF NOT EXISTS errors_created ON errors (created_at, id);
"""

_EVENT_COLUMNS = "id, session_id, category, name, ts, data, client, received"
_ERROR_COLUMNS = "id, event_id, client, field, code, message, input, created_at, session_id, category, name, timestamp"


class BadCursor(ValueError):
    """A pagination cursor that this store did not hand out."""


class Cursor:
    """Opaque pagination positions: ``(ts, id)`` for events, the row id for errors."""

    @staticmethod
    def encode(*parts: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")

    @staticmethod
    def decode(raw: str, arity: int) -> list[Any]:
        try:
            parts = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            raise BadCursor("not a cursor this server handed out") from None
        if not isinstance(parts, list) or len(parts) != arity:
            raise BadCursor("not a cursor this server handed out")
        return parts


def _text(value: Any) -> Any:
    return value if isinstance(value, str) or value is None else None


class Store:
    """The indexed events and errors of The Eye."""

    #: A read model: in a cluster every node keeps it whole (fed by every partition; writes are idempotent).
    local_view = True

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.executescript(_SCHEMA)
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        self._events: list[tuple] = []
        self._errors: list[tuple] = []
        self._flushing = trio.Lock()
        self.written = 0

    # -- the sink -------------------------------------------------------------------

    def put(self, effect: StoredEvent | RejectedEvent) -> None:
        if type(effect) is StoredEvent:
            self._events.append((effect.id, effect.session_id, effect.category, effect.name, effect.timestamp,
                                 orjson.dumps(effect.data), effect.client, effect.received))
            return
        payload = effect.payload if isinstance(effect.payload, dict) else {}
        stamp = payload.get("timestamp")
        for error in effect.errors:
            self._errors.append((effect.id, effect.client, error.field or "", error.code, error.message,
                                 orjson.dumps(error.input, default=repr), effect.received,
                                 _text(payload.get("session_id")), _text(payload.get("category")),
                                 _text(payload.get("name")), stamp if isinstance(stamp, str) else None))

    @property
    def pending(self) -> int:
        return len(self._events) + len(self._errors)

    async def flush(self) -> None:
        async with self._flushing:
            if not self._events and not self._errors:
                return
            events, errors = self._events, self._errors
            self._events, self._errors = [], []
            await trio.to_thread.run_sync(self._write, events, errors)
            self.written += len(events) + len(errors)

    async def run(self, interval: float = 0.1) -> None:
        """Write what was put, every ``interval`` seconds (a background source)."""
        while True:
            await trio.sleep(interval)
            await self.flush()

    def _write(self, events: list[tuple], errors: list[tuple]) -> None:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany(f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", events)
                conn.executemany(
                    "INSERT OR IGNORE INTO errors (event_id, client, field, code, message, input, created_at, "
                    "session_id, category, name, timestamp) VALUES (?,?,?,?,?,?,?,?,?,?,?)", errors)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- queries (blocking: run them in a thread) ---------------------------------------

    def _select(self, sql: str, args: Sequence[Any]) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def events(self, *, session_id: str | None = None, category: str | None = None, name: str | None = None,
               after: float | None = None, before: float | None = None, cursor: str | None = None,
               limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        """Events matching every filter given, ordered by when they occurred; a page and the next cursor."""
        where, args = self._filters((("session_id", session_id), ("category", category), ("name", name)),
                                    "ts", after, before)
        if cursor is not None:
            ts, event_id = Cursor.decode(cursor, 2)
            where.append("(ts, id) > (?, ?)")
            args.extend((ts, event_id))
        rows, more = self._page(f"SELECT {_EVENT_COLUMNS} FROM events", where, args, "ts, id", limit)
        return [_event_json(row) for row in rows], (Cursor.encode(rows[-1][4], rows[-1][0]) if more else None)

    def _page(self, select: str, where: list[str], args: list[Any], order: str, limit: int) -> tuple[list[tuple], bool]:
        """One page of ``select`` under the ``where`` conditions, and whether more rows follow."""
        sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order} LIMIT ?"
        rows = self._select(sql, [*args, limit + 1])
        return rows[:limit], len(rows) > limit

    @staticmethod
    def _filters(equal: Sequence[tuple[str, Any]], column: str, after: float | None,
                 before: float | None) -> tuple[list[str], list[Any]]:
        """``column = ?`` for each value given, and ``after <= column < before``."""
        where, args = [], []
        for name, value in equal:
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        if after is not None:
            where.append(f"{column} >= ?")
            args.append(after)
        if before is not None:
            where.append(f"{column} < ?")
            args.append(before)
        return where, args

    def event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._select(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return _event_json(rows[0]) if rows else None

    def errors(self, *, event_id: str | None = None, session_id: str | None = None, category: str | None = None,
               name: str | None = None, code: str | None = None, client: str | None = None,
               after: float | None = None, before: float | None = None, cursor: str | None = None,
               limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        """Error rows matching every filter given, oldest first; a page and the next cursor."""
        where, args = self._filters((("event_id", event_id), ("session_id", session_id), ("category", category),
                                     ("name", name), ("code", code), ("client", client)), "created_at", after, before)
        if cursor is not None:
            (last,) = Cursor.decode(cursor, 1)
            where.append("id > ?")
            args.append(last)
        rows, more = self._page(f"SELECT {_ERROR_COLUMNS} FROM errors", where, args, "id", limit)
        return [_error_json(row) for row in rows], (Cursor.encode(rows[-1][0]) if more else None)

    def error(self, error_id: int) -> dict[str, Any] | None:
        rows = self._select(f"SELECT {_ERROR_COLUMNS} FROM errors WHERE id = ?", (error_id,))
        return _error_json(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            events = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
            errors = self._conn.execute("SELECT count(*) FROM errors").fetchone()[0]
        return {"events": events, "errors": errors}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _event_json(row: tuple) -> dict[str, Any]:
    event_id, session_id, category, name, ts, data, client, received = row
    return {"id": event_id, "session_id": session_id, "category": category, "name": name,
            "data": orjson.loads(data), "timestamp": _iso(ts), "client": client, "received_at": _iso(received)}


def _error_json(row: tuple) -> dict[str, Any]:
    (error_id, event_id, client, field, code, message, raw_input, created_at, session_id, category, name,
     timestamp) = row
    return {"id": error_id, "event_id": event_id, "client": client, "field": field or None, "code": code,
            "message": message, "input": orjson.loads(raw_input) if raw_input is not None else None,
            "created_at": _iso(created_at), "session_id": session_id, "category": category, "name": name,
            "timestamp": timestamp}

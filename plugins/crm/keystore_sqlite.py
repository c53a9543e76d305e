"""The key store of a single process: ``keys.db``, an SQLite file beside the journal.

Never in the journal or a snapshot (which keep history), and with SQLite's
``secure_delete`` so that a destroyed key is overwritten on disk. The file's
tables are a contract (a Herald of an earlier version wrote them): ``keys``
(subject, key, created) and ``erased`` (subject, erased), subjects being the
SHA-256 of user ids. Keys are cached in the process, which is the only one to
change them: an erasure drops the entry at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import trio

from .keystore import Erased, new_key, subject_of

__all__ = ["SqliteKeyStore"]

_SCHEMA = """
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS keys (subject TEXT PRIMARY KEY, key BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS erased (subject TEXT PRIMARY KEY, erased REAL NOT NULL);
"""


class SqliteKeyStore:
    """:class:`~plugins.crm.keystore.KeyStore` in an SQLite file (``None``: in memory)."""

    def __init__(self, path: str | Path | None) -> None:
        self.description: dict[str, Any] = {"store": "sqlite", "file": "keys.db" if path else None}
        self._conn = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False,
                                     isolation_level=None)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._erasures = 0  # a key read while an erasure ran is not cached (it may be the erased one)

    async def open(self) -> None:
        """Nothing to do: the file was opened (and its tables made) with the store."""

    async def key(self, user_id: str) -> bytes:
        subject = subject_of(user_id)
        found = self._cache.get(subject)
        if found is not None:
            return found
        erasures = self._erasures
        key = await trio.to_thread.run_sync(self._key, subject)
        if key is None:
            raise Erased(user_id)
        if erasures == self._erasures:
            self._cache[subject] = key
        return key

    async def existing(self, user_id: str) -> bytes | None:
        subject = subject_of(user_id)
        found = self._cache.get(subject)
        if found is not None:
            return found
        return await trio.to_thread.run_sync(self._existing, subject)

    async def erase(self, user_id: str) -> bool:
        subject = subject_of(user_id)
        self._erasures += 1
        self._cache.pop(subject, None)
        return await trio.to_thread.run_sync(self._erase, subject)

    async def aclose(self) -> None:
        self._cache.clear()
        with self._lock:
            self._conn.close()

    # -- in a worker thread ----------------------------------------------------------------

    def _key(self, subject: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT key FROM keys WHERE subject = ?", (subject,)).fetchone()
            if row is not None:
                return row[0]
            if self._conn.execute("SELECT 1 FROM erased WHERE subject = ?", (subject,)).fetchone():
                return None
            key = new_key()
            self._conn.execute("INSERT INTO keys VALUES (?,?,?)", (subject, key, time.time()))
            return key

    def _existing(self, subject: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT key FROM keys WHERE subject = ?", (subject,)).fetchone()
        return row[0] if row else None

    def _erase(self, subject: str) -> bool:
        with self._lock:
            deleted = self._conn.execute("DELETE FROM keys WHERE subject = ?", (subject,)).rowcount
            self._conn.execute("INSERT OR REPLACE INTO erased VALUES (?,?)", (subject, time.time()))
        return bool(deleted)

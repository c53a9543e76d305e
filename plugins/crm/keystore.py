"""Per-user keys for personal fields on public topics, and crypto-shredding.

Kafka cannot rewrite history, so personal fields never reach a public topic
in the clear: they are encrypted with AES-256-GCM under a key of their own
user (the user id is the associated data, so a ciphertext cannot be moved to
another user). Erasing a user destroys the key: every copy of their messages,
in every partition, replica and consumer, becomes unreadable at once.

Keys live in ``keys.db`` beside the journal (never in the journal or a
snapshot, which keep history), with SQLite's ``secure_delete`` so a destroyed
key is overwritten on disk. An erased user is remembered only as a SHA-256 of
their id, so that no new key is ever made for them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeyStore", "Erased", "seal", "open_sealed"]

_SCHEMA = """
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS keys (subject TEXT PRIMARY KEY, key BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS erased (subject TEXT PRIMARY KEY, erased REAL NOT NULL);
"""


class Erased(Exception):
    """The user was erased: their key is gone and no new one is made."""


def _subject(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: str | Path | None) -> None:
        self._conn = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False,
                                     isolation_level=None)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    def key(self, user_id: str) -> bytes:
        """The user's key, made on first use; :class:`Erased` after an erasure."""
        subject = _subject(user_id)
        found = self._cache.get(subject)
        if found is not None:
            return found
        with self._lock:
            row = self._conn.execute("SELECT key FROM keys WHERE subject = ?", (subject,)).fetchone()
            if row is None:
                if self._conn.execute("SELECT 1 FROM erased WHERE subject = ?", (subject,)).fetchone():
                    raise Erased(user_id)
                key = AESGCM.generate_key(bit_length=256)
                self._conn.execute("INSERT INTO keys VALUES (?,?,?)", (subject, key, time.time()))
            else:
                key = row[0]
        self._cache[subject] = key
        return key

    def existing(self, user_id: str) -> bytes | None:
        """The user's key if there is one (for authorised consumers); never makes one."""
        subject = _subject(user_id)
        with self._lock:
            row = self._conn.execute("SELECT key FROM keys WHERE subject = ?", (subject,)).fetchone()
        return row[0] if row else None

    def erase(self, user_id: str) -> bool:
        """Destroy the user's key (crypto-shredding); True if there was one."""
        subject = _subject(user_id)
        self._cache.pop(subject, None)
        with self._lock:
            deleted = self._conn.execute("DELETE FROM keys WHERE subject = ?", (subject,)).rowcount
            self._conn.execute("INSERT OR REPLACE INTO erased VALUES (?,?)", (subject, time.time()))
        return bool(deleted)

    def is_erased(self, user_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM erased WHERE subject = ?", (_subject(user_id),)).fetchone() is not None


def seal(key: bytes, user_id: str, fields: dict[str, Any]) -> dict[str, str]:
    """Encrypt ``fields`` (as JSON) for ``user_id``: ``{"alg", "nonce", "ciphertext"}`` (base64)."""
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, orjson.dumps(fields), user_id.encode())
    return {"alg": "AES-256-GCM", "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode()}


def open_sealed(key: bytes, user_id: str, sealed: dict[str, str]) -> dict[str, Any]:
    """Decrypt what :func:`seal` made (raises ``cryptography.exceptions.InvalidTag`` with a wrong key)."""
    plaintext = AESGCM(key).decrypt(base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]),
                                    user_id.encode())
    return orjson.loads(plaintext)

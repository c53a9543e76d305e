"""The key store of several processes: a PostgreSQL database (``HERALD_CRM_KEYSTORE=postgresql://…``).

Every process keeps a small pool of connections (psycopg 3, blocking calls in
trio's worker threads) and caches the keys it read for ``ttl`` seconds. An
erasure deletes the key's row and remembers the subject as erased, under a
per-subject advisory lock that making a key takes too (so a key is never made
again for a user being erased), then sends a notification: every process
listening (a thread of its own, on a connection of its own) drops its cached
copy at once. A process that missed it (its listening connection was down)
forgets every cached key when it listens again, and at the latest the TTL
bounds how long it can use an erased key.

The URL's password never leaves the process: what ``/healthz``, a log line or
an error shows of the URL is redacted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterator

import trio

from engine import PluginError, redact_text, redact_url

from .keystore import KEY_TTL, Erased, KeyStoreUnavailable, new_key, subject_of

__all__ = ["PostgresKeyStore", "CHANNEL"]

#: The notification channel an erasure is announced on (payload: the erased subject).
CHANNEL = "herald_crm_keys"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS herald_crm_keys (
    subject TEXT PRIMARY KEY, key BYTEA NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS herald_crm_erased (
    subject TEXT PRIMARY KEY, erased TIMESTAMPTZ NOT NULL DEFAULT now());
"""
#: Serialises the schema's creation between processes starting together.
_SCHEMA_LOCK = 0x4845524B  # "HERK"
#: Cache entries stored between two sweeps of the expired ones.
_SWEEP_EVERY = 4096
_LOCK_SUBJECT = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

log = logging.getLogger("herald.crm")


class PostgresKeyStore:
    """:class:`~plugins.crm.keystore.KeyStore` in PostgreSQL, shared by every process given the same URL."""

    def __init__(self, url: str, *, ttl: float = KEY_TTL, max_pool: int = 4, listen: bool = True,
                 timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise PluginError("HERALD_CRM_KEYSTORE names a PostgreSQL database, which needs psycopg: "
                              "pip install 'herald[postgres]'") from None
        self._psycopg = psycopg
        self._url = url
        try:
            self._password = conninfo_to_dict(url).get("password") or None
        except psycopg.ProgrammingError:
            raise PluginError(f"HERALD_CRM_KEYSTORE is not a PostgreSQL URL: {redact_url(url)}") from None
        self.ttl, self.timeout, self._clock, self._listen = ttl, timeout, clock, listen
        self._connect_timeout = max(1, round(timeout))  # libpq's is whole seconds
        self.description: dict[str, Any] = {"store": "postgresql", "url": redact_url(url), "key_ttl": ttl}
        self._pool = ConnectionPool(url, min_size=1, max_size=max_pool, open=False, timeout=timeout,
                                    name="herald-crm-keys", kwargs={"autocommit": True})
        #: subject -> (key, or None for an erased user, and until when it may be used)
        self._cache: dict[str, tuple[bytes | None, float]] = {}
        self._lock = threading.Lock()
        self._invalidations = 0  # a key read while its subject was invalidated is not cached
        self._stored = 0
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self.listening = threading.Event()  # set while notifications reach this process

    # -- the KeyStore --------------------------------------------------------------------

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._open)

    async def key(self, user_id: str) -> bytes:
        subject = subject_of(user_id)
        hit = self._cached(subject)
        if hit is None:
            found = await self._read(self._key, subject)
        else:
            found = hit[0]
        if found is None:
            raise Erased(user_id)
        return found

    async def existing(self, user_id: str) -> bytes | None:
        subject = subject_of(user_id)
        hit = self._cached(subject)
        return hit[0] if hit is not None else await self._read(self._existing, subject)

    async def erase(self, user_id: str) -> bool:
        subject = subject_of(user_id)
        self._forget(subject)
        try:
            return await trio.to_thread.run_sync(self._erase, subject)
        finally:
            self._forget(subject)

    async def aclose(self) -> None:
        self._stop.set()
        if self._listener is not None:
            await trio.to_thread.run_sync(self._listener.join)
        await trio.to_thread.run_sync(self._pool.close)
        with self._lock:
            self._cache.clear()

    # -- the cache --------------------------------------------------------------------------

    def cached(self, user_id: str) -> bool:
        """Whether this process holds an entry for the user (a key or the fact of their erasure)."""
        return self._cached(subject_of(user_id)) is not None

    def _cached(self, subject: str) -> tuple[bytes | None] | None:
        entry = self._cache.get(subject)
        if entry is None:
            return None
        value, until = entry
        if value is not None and self._clock() >= until:
            return None
        return (value,)

    async def _read(self, read: Callable[[str], tuple[bool, bytes | None]], subject: str) -> bytes | None:
        invalidations = self._invalidations
        known, value = await trio.to_thread.run_sync(read, subject)
        if known and (value is None or self.ttl > 0):
            with self._lock:
                if invalidations == self._invalidations:
                    self._cache[subject] = (value, self._clock() + self.ttl)
                self._stored += 1
                if self._stored % _SWEEP_EVERY == 0:  # keys of users gone quiet: let them go
                    now = self._clock()
                    self._cache = {s: e for s, e in self._cache.items() if e[0] is None or e[1] > now}
        return value

    def _forget(self, subject: str | None) -> None:
        """Drop one subject's entry (``None``: every entry)."""
        with self._lock:
            self._invalidations += 1
            if subject is None:
                self._cache.clear()
            else:
                self._cache.pop(subject, None)

    # -- in a worker thread -------------------------------------------------------------------

    def _open(self) -> None:
        try:  # one connection of its own first: a wrong password or host fails at once, saying so
            with self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout) as conn, \
                    conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
            self._pool.open(wait=True, timeout=self.timeout)
        except Exception as exc:
            self._pool.close()
            raise self._unavailable(exc) from None
        if self._listen:
            self._listener = threading.Thread(target=self._listen_loop, name="herald-crm-keys-listen", daemon=True)
            self._listener.start()

    def _key(self, subject: str) -> tuple[bool, bytes | None]:
        with self._connection() as conn:
            row = conn.execute("SELECT key FROM herald_crm_keys WHERE subject = %s", (subject,)).fetchone()
            if row is not None:
                return True, bytes(row[0])
            with conn.transaction():  # make one, unless another process did or the user is erased
                conn.execute(_LOCK_SUBJECT, (subject,))
                row = conn.execute("SELECT key FROM herald_crm_keys WHERE subject = %s", (subject,)).fetchone()
                if row is not None:
                    return True, bytes(row[0])
                if conn.execute("SELECT 1 FROM herald_crm_erased WHERE subject = %s", (subject,)).fetchone():
                    return True, None
                key = new_key()
                conn.execute("INSERT INTO herald_crm_keys (subject, key) VALUES (%s, %s)", (subject, key))
                return True, key

    def _existing(self, subject: str) -> tuple[bool, bytes | None]:
        with self._connection() as conn:
            row = conn.execute("SELECT key FROM herald_crm_keys WHERE subject = %s", (subject,)).fetchone()
        return row is not None, bytes(row[0]) if row else None

    def _erase(self, subject: str) -> bool:
        with self._connection() as conn, conn.transaction():
            conn.execute(_LOCK_SUBJECT, (subject,))
            deleted = conn.execute("DELETE FROM herald_crm_keys WHERE subject = %s", (subject,)).rowcount
            conn.execute("INSERT INTO herald_crm_erased (subject) VALUES (%s) ON CONFLICT DO NOTHING", (subject,))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, subject))  # sent when this commits
        return bool(deleted)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; database errors come out as :class:`KeyStoreUnavailable`."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _listen_loop(self) -> None:
        """Drop the cached key of every subject another process erases, as the notification arrives."""
        delay, failures = 0.5, 0
        while not self._stop.is_set():
            try:
                with self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._forget(None)  # what was erased while nobody listened is not in the cache
                    self.listening.set()
                    if failures:
                        log.info("key store: listening for erasures again")
                    delay, failures = 0.5, 0
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.25):
                            self._forget(notice.payload)
            except Exception as exc:
                self.listening.clear()
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("key store: not listening for erasures (%s); cached keys expire after %g s",
                                self._unavailable(exc), self.ttl)
            self.listening.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    def _unavailable(self, exc: BaseException) -> KeyStoreUnavailable:
        """``exc`` as a :class:`KeyStoreUnavailable` whose message holds no password."""
        text = " ".join(f"{type(exc).__name__}: {exc}".split())  # libpq's hints span lines: one line
        if self._password:
            text = text.replace(self._password, "***")
        return KeyStoreUnavailable(f"PostgreSQL key store {self.description['url']}: {redact_text(text)}")

"""Per-user keys for personal fields on public topics, and crypto-shredding.

Kafka cannot rewrite history, so personal fields never reach a public topic
in the clear: they are encrypted with AES-256-GCM under a key of their own
user (the user id is the associated data, so a ciphertext cannot be moved to
another user). Erasing a user destroys the key: every copy of their messages,
in every partition, replica and consumer, becomes unreadable at once.

:class:`KeyStore` is what the plugin needs of a store of such keys; two
implement it: :class:`~plugins.crm.keystore_sqlite.SqliteKeyStore` (``keys.db``
beside the journal, for one process) and
:class:`~plugins.crm.keystore_postgres.PostgresKeyStore` (a PostgreSQL
database shared by several processes). :func:`open_key_store` picks one from
``HERALD_CRM_KEYSTORE``. An erased user is remembered only as a SHA-256 of
their id, so that no new key is ever made for them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any, Protocol, runtime_checkable

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine import Config, PluginError

__all__ = ["KeyStore", "Erased", "KeyStoreUnavailable", "open_key_store", "seal", "open_sealed", "subject_of",
           "new_key", "KEY_TTL", "is_shared"]

#: Seconds a process trusts a key it read from a shared store (``HERALD_CRM_KEY_TTL``): another
#: process's erasure reaches it at the latest then (at once where the store can notify).
KEY_TTL = 30.0


class Erased(Exception):
    """The user was erased: their key is gone and no new one is made."""


class KeyStoreUnavailable(Exception):
    """The key store cannot be reached now (the message carries no secret): try again later."""


def subject_of(user_id: str) -> str:
    """What a store keeps for a user: the SHA-256 of their id (hex), never the id itself."""
    return hashlib.sha256(user_id.encode()).hexdigest()


def new_key() -> bytes:
    """A fresh AES-256 data key."""
    return AESGCM.generate_key(bit_length=256)


@runtime_checkable
class KeyStore(Protocol):
    """Where the users' data keys live. Every call may wait on a database (run in a thread, never
    blocking trio); one that cannot reach it raises :class:`KeyStoreUnavailable`."""

    #: What ``/healthz`` shows of the store (its kind and, for a database, its URL without the password).
    description: dict[str, Any]

    async def open(self) -> None:
        """Connect and create the tables if needed (once, before the first call)."""

    async def key(self, user_id: str) -> bytes:
        """The user's key, made on first use; :class:`Erased` once the user is erased."""

    async def existing(self, user_id: str) -> bytes | None:
        """The user's key if there is one; never makes one (``None``: unknown or erased)."""

    async def erase(self, user_id: str) -> bool:
        """Destroy the user's key for good (crypto-shredding); True if there was one. Idempotent."""

    async def aclose(self) -> None:
        """Let go of the database (connections, files, threads)."""


def is_shared(where: str | None) -> bool:
    """Whether ``HERALD_CRM_KEYSTORE`` (``where``) names a store several processes share."""
    return where is not None and where.startswith(("postgresql://", "postgres://"))


def open_key_store(config: Config) -> KeyStore:
    """The store ``HERALD_CRM_KEYSTORE`` names: unset, ``keys.db`` beside the journal (in memory with
    ``--durability memory``); a ``postgresql://`` URL, that database (the ``postgres`` extra)."""
    where = config.plugin_setting("crm", "keystore", None)
    ttl = config.plugin_setting("crm", "key_ttl", KEY_TTL, _seconds)
    if where is None:
        from .keystore_sqlite import SqliteKeyStore

        return SqliteKeyStore(config.data_file("keys.db"))
    if is_shared(where):
        from .keystore_postgres import PostgresKeyStore

        pool = config.plugin_setting("crm", "keystore_pool", 4, _pool_size)
        return PostgresKeyStore(where, ttl=ttl, max_pool=pool)
    raise PluginError("HERALD_CRM_KEYSTORE must be a postgresql:// URL (or unset: keys.db beside the journal)")


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("a number of seconds, 0 or more")
    return value


def _pool_size(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("at least 1 connection")
    return value


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

"""Trusted clients: the applications allowed to send events, each with a token.

Clients are events too (``analytics.client_created`` / ``analytics.client_revoked``
on one actor), so they are journaled and snapshotted with everything else.
Only a SHA-256 of each token is kept; a token is shown once, when created.
A request is authenticated by hashing the presented token and looking the
hash up; the stored hash is then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import attrs

from engine import Context, Event, InvalidEvent, new_event_id

from .model import Client, Session

__all__ = ["Registry", "CLIENTS_KEY", "CREATED", "REVOKED", "hash_token", "on_created", "on_revoked",
           "validate_client_event", "client_json"]

CLIENTS_KEY = "analytics:clients"
CREATED, REVOKED = "analytics.client_created", "analytics.client_revoked"
_TOKEN_PREFIX = "eye_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def client_json(client: Client) -> dict[str, Any]:
    return {"name": client.name, "created_at": _iso(client.created_at),
            "revoked_at": _iso(client.revoked_at) if client.revoked_at else None, "active": client.active}


def on_created(state: Session, event: Event) -> tuple[Session, tuple]:
    data = event.data
    client = Client(data["name"], data["token_hash"], event.at)
    return attrs.evolve(state, clients={**(state.clients or {}), client.name: client}), ()


def on_revoked(state: Session, event: Event) -> tuple[Session, tuple]:
    client = (state.clients or {}).get(event.data["name"])
    if client is None or not client.active:
        return state, ()
    revoked = attrs.evolve(client, revoked_at=event.at)
    return attrs.evolve(state, clients={**(state.clients or {}), client.name: revoked}), ()


def validate_client_event(event: Event) -> Event:
    if event.key != CLIENTS_KEY:
        raise InvalidEvent("key", "invalid", f"client events belong to {CLIENTS_KEY!r}")
    name = event.data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidEvent("name", "invalid", "a client name is 1 to 100 characters")
    if event.type == CREATED:
        token_hash = event.data.get("token_hash")
        if not isinstance(token_hash, str) or len(token_hash) != 64:
            raise InvalidEvent("token_hash", "invalid", "must be a SHA-256 hex digest")
    return event


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class Registry:
    """Creating, listing, revoking and recognising clients of one Herald."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._index: tuple[dict[str, Client] | None, dict[str, Client]] = (None, {})

    def _clients(self) -> dict[str, Client]:
        state = self.context.state(CLIENTS_KEY, "analytics")
        return (state.clients if isinstance(state, Session) else None) or {}

    def all(self) -> list[Client]:
        return sorted(self._clients().values(), key=lambda c: c.name)

    def authenticate(self, header: str | None) -> Client | str:
        """The active client whose token the ``Authorization: Token ...`` header carries, or why not."""
        if not header:
            return "missing"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "token" or not token.strip():
            return "malformed"
        digest = hash_token(token.strip())
        clients = self._clients()
        if self._index[0] is not clients:
            self._index = (clients, {c.token_hash: c for c in clients.values()})
        client = self._index[1].get(digest)
        if client is None or not hmac.compare_digest(client.token_hash, digest):
            return "unknown"
        if not client.active:
            return "revoked"
        return client

    async def create(self, name: str) -> str:
        """A new client; returns its token (the only time it is seen)."""
        existing = self._clients().get(name)
        if existing is not None and existing.active:
            raise ValueError(f"a client named {name!r} exists already (revoke it first)")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._write(CREATED, {"name": name, "token_hash": hash_token(token)})
        return token

    async def revoke(self, name: str) -> Client:
        client = self._clients().get(name)
        if client is None or not client.active:
            raise LookupError(f"no active client named {name!r}")
        await self._write(REVOKED, {"name": name})
        return self._clients()[name]

    async def _write(self, type_: str, data: dict[str, Any]) -> None:
        now = datetime.fromtimestamp(time.time(), timezone.utc)
        event = validate_client_event(Event(new_event_id(), type_, CLIENTS_KEY, now, data, now))
        await self.context.accept([event])

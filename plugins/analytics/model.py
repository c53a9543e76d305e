"""The Eye's rules: what receiving an event does to its session, as a pure function.

Ingestion only journals the raw payload (``analytics.received``) and answers
202; this handler then checks it and returns what to store: a
:class:`StoredEvent` for a valid event, a :class:`RejectedEvent` with one row
per invalid field otherwise. Both are effects consumed by the plugin's store
(an effect sink), never by the outbox.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine import Event

from .validation import Checked, SchemaRegistry, check

__all__ = ["Client", "Session", "StoredEvent", "RejectedEvent", "Receive", "RECEIVED", "NO_SESSION"]

#: The journaled event type of an accepted payload (validated after the 202).
RECEIVED = "analytics.received"
#: The actor of payloads whose session_id is unusable (their errors still need a home).
NO_SESSION = "analytics:no-session"


@attrs.frozen(slots=True)
class Client:
    """A trusted application: its name, the SHA-256 of its token, when it was created and revoked."""

    name: str
    token_hash: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@attrs.frozen(slots=True)
class Session:
    """The plugin's state on an actor: for a session, the counts and span of its
    events; on the clients' actor, the trusted clients by name (one state class
    per plugin keeps snapshots simple)."""

    events: int = 0
    rejected: int = 0
    first_at: float | None = None
    last_at: float | None = None
    clients: dict[str, Client] | None = None


@attrs.frozen(slots=True)
class StoredEvent:
    id: str
    client: str
    session_id: str
    category: str
    name: str
    data: dict[str, Any]
    timestamp: float
    received: float


@attrs.frozen(slots=True)
class RejectedEvent:
    id: str
    client: str
    payload: Any
    errors: tuple  # of validation.FieldError
    received: float


@attrs.frozen
class Receive:
    """The handler of ``analytics.received``, bound to the schemas and the allowed clock skew."""

    registry: SchemaRegistry
    max_skew: float = 60.0

    def __call__(self, state: Session, event: Event) -> tuple[Session, tuple]:
        received = event.received_at.timestamp()
        client = event.data.get("client", "")
        payload = event.data.get("payload")
        result = check(payload, received=received, max_skew=self.max_skew, registry=self.registry)
        if isinstance(result, Checked):
            ts = result.timestamp
            state = Session(
                state.events + 1,
                state.rejected,
                ts if state.first_at is None else min(state.first_at, ts),
                ts if state.last_at is None else max(state.last_at, ts),
                state.clients,
            )
            return state, (StoredEvent(event.id, client, result.session_id, result.category, result.name,
                                       result.data, ts, received),)
        state = attrs.evolve(state, rejected=state.rejected + 1)
        return state, (RejectedEvent(event.id, client, payload, tuple(result), received),)

"""Why this node refuses events right now: the one answer ingestion's 503 and ``/healthz`` both give;
and what is wrong while it still accepts them (degraded: ``/healthz`` 200 with ``status: degraded``)."""

from __future__ import annotations

import attrs

__all__ = ["Degraded", "Refusal"]


@attrs.frozen
class Refusal:
    """A reason not to accept events: ``code`` for machines (the 503's ``error.code`` and ``/healthz``'s
    ``status``), ``reason`` for people (what happened and what Herald does about it)."""

    #: starting, replaying, recovering, journal_failed, joining, broker_unreachable, healing, restoring,
    #: cluster_failed, stopping or failed.
    code: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


@attrs.frozen
class Degraded:
    """Something wrong that does not stop ingestion (events are still accepted and durable): ``/healthz``
    stays 200 and says ``degraded``, naming it. ``code`` for machines, ``reason`` for people; ``plugin``
    and ``field`` when a plugin's state is at fault (never an actor's key: ``/healthz`` is public)."""

    #: unencodable_state: a plugin's state cannot be encoded, so no snapshot or checkpoint is written.
    code: str
    reason: str
    plugin: str | None = None
    field: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"code": self.code, "reason": self.reason, "plugin": self.plugin, "field": self.field}

"""Why this node refuses events right now: the one answer ingestion's 503 and ``/healthz`` both give."""

from __future__ import annotations

import attrs

__all__ = ["Refusal"]


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

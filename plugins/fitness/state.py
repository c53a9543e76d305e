"""The fitness plugin's state: what Herald keeps per user, frozen attrs values (snapshots store them through cattrs)."""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["FitnessState", "Run"]


@attrs.frozen(slots=True)
class Run:
    """A training program the user started and has not finished or cancelled."""

    program_id: str
    title: str | None
    started_at: datetime


@attrs.frozen(slots=True)
class FitnessState:
    """One user's fitness state."""

    running: tuple[Run, ...] = ()
    last_launch_at: datetime | None = None
    device_id: str | None = None
    programs_finished: int = 0
    minutes_trained: float = 0.0
    notifications_sent: int = 0

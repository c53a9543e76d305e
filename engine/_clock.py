"""Event time: a clock per actor, and the stream's watermark.

Herald has no single clock. Each **actor's clock** starts at the timestamp of
the actor's first event, jumps forward to each newer timestamp *of that
actor*, runs at wall-clock speed in between, and never goes back; it is kept
as one number on the actor, ``offset`` (its event time minus the wall), so
that ``actor time = wall + offset``. An actor's timers fire when its own
clock passes them: one user's events never move another user's timers, and a
phone whose clock is slow or fast is nudged ten minutes *of its own time*
after its launch.

The **stream clock** is the newest timestamp seen from anyone, running at
wall speed. The **watermark** is the stream clock minus an allowed lateness:
a timer the watermark has passed fires even if its actor's clock has not
reached it, so that replaying old events at full speed still resolves every
timer, including the trailing ones of actors that send nothing more. An
event older than the watermark when it arrives is *late* (it is applied, and
counted).

Instants are POSIX seconds (floats). The wall is the engine's own wall
reading (see :meth:`engine.host.Engine.wall`), continuous across restarts.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

__all__ = ["StreamClock", "DEFAULT_LATENESS", "iso_utc", "utc_datetime"]

#: Seconds by which the watermark trails the newest timestamp seen (``HERALD_ALLOWED_LATENESS``):
#: an app that was offline for up to an hour and then syncs is not nudged early.
DEFAULT_LATENESS = 3600.0


class StreamClock:
    """The newest event time seen, running at wall speed; and the watermark behind it."""

    __slots__ = ("lateness", "base", "wall_base")

    def __init__(self, lateness: float = DEFAULT_LATENESS) -> None:
        self.lateness = lateness
        #: The newest timestamp seen (None before the first event) and the wall reading then.
        self.base: float | None = None
        self.wall_base = 0.0

    def now(self, wall: float) -> float | None:
        """The stream's time at ``wall`` (None before the first event)."""
        return None if self.base is None else self.base + (wall - self.wall_base)

    def observe(self, instant: float, wall: float) -> bool:
        """Move forward to ``instant`` if it is newer than the stream's time; True if it moved."""
        if self.base is None or instant > self.base + (wall - self.wall_base):
            self.base, self.wall_base = instant, wall
            return True
        return False

    def offset(self) -> float:
        """``watermark = wall + offset()`` (-inf before the first event: nothing is passed)."""
        if self.base is None:
            return -math.inf
        return self.base - self.lateness - self.wall_base

    def watermark(self, wall: float) -> float | None:
        return None if self.base is None else self.base - self.lateness + (wall - self.wall_base)

    def state(self) -> tuple[float | None, float]:
        return self.base, self.wall_base

    def restore(self, base: float | None, wall_base: float) -> None:
        self.base, self.wall_base = base, wall_base


#: The first and last instants a ``datetime`` holds: event time may reach them (a year-1 event, a
#: timer set far ahead), and what is derived from it (the watermark an hour before, a due instant
#: after) is clamped to them rather than raising.
DATETIME_MIN = datetime.min.replace(tzinfo=UTC)
DATETIME_MAX = datetime.max.replace(tzinfo=UTC)
#: The same as POSIX seconds (a timer set beyond them, or at NaN, is set at the nearest end).
FIRST_INSTANT, LAST_INSTANT = DATETIME_MIN.timestamp(), DATETIME_MAX.timestamp()


def utc_datetime(instant: float) -> datetime:
    """``datetime.fromtimestamp(instant, UTC)``, clamped to ``datetime.min`` / ``datetime.max``
    (the watermark of a year-1 event is an hour before year 1: it reads as year 1)."""
    try:
        return datetime.fromtimestamp(instant, UTC)
    except (ValueError, OverflowError, OSError):
        if instant != instant:  # NaN: no instant at all
            raise ValueError("not an instant: nan") from None
        return DATETIME_MIN if instant < 0 else DATETIME_MAX


_EPOCH = date(1970, 1, 1)
#: Day numbers (since the epoch) ``date`` can name.
_FIRST_DAY, _LAST_DAY = (date.min - _EPOCH).days, (date.max - _EPOCH).days
_modf = math.modf
#: ``"YYYY-MM-DDT"`` by day number since the epoch (a day's prefix is made once).
_DAYS: dict[int, str] = {}
#: ``"HH:MM:"`` by minute of the day.
_HMS = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
#: ``"SS+00:00"`` by second of the minute.
_S_UTC = tuple(f"{s:02d}+00:00" for s in range(60))


def iso_utc(instant: float, less_micros: int = 0) -> str:
    """``(datetime.fromtimestamp(instant, UTC) - timedelta(microseconds=less_micros)).isoformat()``,
    without the datetime: an aware ``isoformat`` alone costs ~0.7 µs, and payloads carry one
    or two per effect.

    Rounds to the microsecond as ``fromtimestamp`` does (half to even), then subtracts in
    whole microseconds, exactly like the ``datetime`` arithmetic it replaces (a test checks).
    Beyond ``datetime``'s range it gives the nearest end (as :func:`utc_datetime` does).
    """
    try:
        whole = int(instant)
    except OverflowError:  # ±inf: the nearest end
        return utc_datetime(instant).isoformat()
    if whole == instant and not less_micros % 1_000_000:  # whole seconds: the usual case
        micros = 0
        seconds = whole - less_micros // 1_000_000
    else:
        frac, whole_f = _modf(instant)
        total = int(whole_f) * 1_000_000 + round(frac * 1e6) - less_micros  # round: half to even
        seconds, micros = divmod(total, 1_000_000)
    day, second = divmod(seconds, 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        if not _FIRST_DAY <= day <= _LAST_DAY:
            return (DATETIME_MIN if day < 0 else DATETIME_MAX).isoformat()
        if len(_DAYS) > 4096:
            _DAYS.clear()
        prefix = _DAYS[day] = (_EPOCH + timedelta(days=day)).isoformat() + "T"
    if micros:
        return f"{prefix}{_HMS[second // 60]}{second % 60:02d}.{micros:06d}+00:00"
    return prefix + _HMS[second // 60] + _S_UTC[second % 60]

"""The fitness rules as pure state transitions ``(state, event) -> (state, effects)``.

- **Congratulate**: a ``training_program_finished`` that follows its
  ``training_program_started`` by strictly more than 30 minutes notifies the
  user with the minutes trained. Cancelled programs don't count.
- **Nudge**: an ``app_launch`` not followed by a ``training_program_started``
  within 10 minutes notifies the user. Another launch restarts the 10
  minutes; a start cancels the nudge.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from typing import Any

import attrs

from engine import CancelTimer, Event, Notify, SetTimer, Timer, iso_utc

# The state classes live in their own module, which stays pure Python when this one is compiled (mypyc
# keeps only rough annotations on the classes it builds, and cattrs reads a state's annotations).
from .state import FitnessState, Run

__all__ = ["FitnessRules", "FitnessState", "Run", "NUDGE_TIMER"]

NUDGE_TIMER = "nudge"
#: Programs a user may have running at once before the oldest is forgotten.
MAX_RUNNING = 8

Effects = tuple[Any, ...]


_new_object = object.__new__
_SLOTS = ("running", "last_launch_at", "device_id", "programs_finished", "minutes_trained", "notifications_sent")
(_set_running, _set_launch, _set_device, _set_finished, _set_minutes, _set_sent) = (
    getattr(FitnessState, name).__set__ for name in _SLOTS)


def _state(running: tuple[Run, ...], last_launch_at: datetime | None, device_id: str | None,
           programs_finished: int, minutes_trained: float, notifications_sent: int) -> FitnessState:
    """``FitnessState(...)`` with every field given, for the handlers (one state per event):
    sets the slots directly, a third cheaper than the frozen ``__init__``'s six
    ``object.__setattr__`` calls; the value is the same frozen ``FitnessState``."""
    state = _new_object(FitnessState)
    _set_running(state, running)
    _set_launch(state, last_launch_at)
    _set_device(state, device_id)
    _set_finished(state, programs_finished)
    _set_minutes(state, minutes_trained)
    _set_sent(state, notifications_sent)
    return state


_set_program, _set_title, _set_started = (getattr(Run, name).__set__ for name in ("program_id", "title", "started_at"))


def _run(program_id: str, title: str | None, started_at: datetime) -> Run:
    """``Run(program_id, title, started_at)`` with its slots set directly (as ``_state`` does)."""
    run = _new_object(Run)
    _set_program(run, program_id)
    _set_title(run, title)
    _set_started(run, started_at)
    return run


def _minutes_text(minutes: float) -> str:
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


@functools.lru_cache(maxsize=8)
def _nudge_message(after: timedelta) -> str:
    minutes = _minutes_text(after.total_seconds() / 60)
    return f"You opened the app {minutes} ago. Start a training program now and get your daily training dose!"


def _device(state: FitnessState, event: Event) -> str | None:
    device = event.data.get("device_id")
    return device if device.__class__ is str else state.device_id


def _with(
    s: FitnessState,
    *,
    running: tuple[Run, ...] | None = None,
    last_launch_at: datetime | None = None,
    device_id: str | None = None,
    finished: float | None = None,
    notified: bool = False,
) -> FitnessState:
    """A changed copy of ``s`` (what ``attrs.evolve`` does, at a third of its cost; the
    handlers of the frequent types build theirs directly: one state per event)."""
    return _state(
        s.running if running is None else running,
        s.last_launch_at if last_launch_at is None else last_launch_at,
        s.device_id if device_id is None else device_id,
        s.programs_finished + (finished is not None),
        s.minutes_trained + (finished or 0.0),
        s.notifications_sent + notified,
    )


def _without(running: tuple[Run, ...], program_id: str) -> tuple[Run, ...]:
    """``running`` less the runs of ``program_id`` (usually it held that one run alone)."""
    if len(running) == 1:
        return () if running[0].program_id == program_id else running
    return tuple(r for r in running if r.program_id != program_id)


#: A start's one effect: the same frozen value every time.
_CANCEL_NUDGE: Effects = (CancelTimer(NUDGE_TIMER),)


@attrs.frozen
class FitnessRules:
    """The rules, bound to their settings (the thresholds). Notifications go to the configured
    notify sink (a ``Notify`` without a URL)."""

    congratulate_after: timedelta = timedelta(minutes=30)
    nudge_after: timedelta = timedelta(minutes=10)
    #: ``nudge_after`` in seconds: a nudge is set at ``event.at + _nudge_seconds`` (floats, no datetime).
    _nudge_seconds: float = attrs.field(init=False, eq=False, repr=False)

    _nudge_text: str = attrs.field(init=False, eq=False, repr=False)
    #: ``nudge_after`` in whole microseconds: the launch instant is the due one less this.
    _nudge_micros: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_nudge_seconds", self.nudge_after.total_seconds())
        object.__setattr__(self, "_nudge_text", _nudge_message(self.nudge_after))
        object.__setattr__(self, "_nudge_micros", self.nudge_after // timedelta(microseconds=1))

    def app_launch(self, state: FitnessState, event: Event) -> tuple[FitnessState, Effects]:
        device = event.data.get("device_id")
        state = _state(state.running, event.timestamp, device if device.__class__ is str else state.device_id,
                             state.programs_finished, state.minutes_trained, state.notifications_sent)
        return state, (SetTimer(NUDGE_TIMER, event.at + self._nudge_seconds),)

    def program_started(self, state: FitnessState, event: Event) -> tuple[FitnessState, Effects]:
        data = event.data
        program_id = data["training_program_id"]
        run = _run(program_id, data.get("training_program_title"), event.timestamp)
        running = state.running
        running = _without(running, program_id)[-(MAX_RUNNING - 1):] + (run,) if running else (run,)
        device = data.get("device_id")
        state = _state(running, state.last_launch_at, device if device.__class__ is str else state.device_id,
                             state.programs_finished, state.minutes_trained, state.notifications_sent)
        return state, _CANCEL_NUDGE

    def program_cancelled(self, state: FitnessState, event: Event) -> tuple[FitnessState, Effects]:
        program_id = event.data["training_program_id"]
        running = _without(state.running, program_id)
        return _with(state, running=running, device_id=_device(state, event)), ()

    def program_finished(self, state: FitnessState, event: Event) -> tuple[FitnessState, Effects]:
        program_id = event.data["training_program_id"]
        for run in state.running:
            if run.program_id == program_id:
                break
        else:  # a finish without its start: nothing to measure
            return state, ()
        trained = event.timestamp - run.started_at
        seconds = trained.total_seconds()
        minutes = seconds / 60
        congratulate = trained > self.congratulate_after
        device = event.data.get("device_id")
        running = state.running
        state = _state(
            () if len(running) == 1 else tuple(r for r in running if r is not run),
            state.last_launch_at,
            device if device.__class__ is str else state.device_id,
            state.programs_finished + 1,
            state.minutes_trained + max(minutes, 0.0),
            state.notifications_sent + congratulate,
        )
        if not congratulate:
            return state, ()
        whole = math.floor(minutes)
        title = event.data.get("training_program_title") or run.title
        program = f" ({title})" if title else ""
        finished_at = iso_utc(event.at)  # event.timestamp.isoformat(), cheaper
        payload = {
            "type": "congratulate",
            "user_id": event.key,
            "device_id": state.device_id,
            "message": (
                f"Well done! You trained for {_minutes_text(whole)} today{program}. "
                "That's your daily training dose."
            ),
            "minutes": round(minutes, 1),
            "seconds": seconds,
            "training_program_id": program_id,
            "training_program_title": title,
            "started_at": iso_utc(run.started_at.timestamp()),
            "finished_at": finished_at,
        }
        key = f"fitness:congratulate:{event.key}:{program_id}:{finished_at}"
        return state, (Notify(payload=payload, idempotency_key=key),)

    def on_timer(self, state: FitnessState, timer: Timer) -> tuple[FitnessState, Effects]:
        if timer.name != NUDGE_TIMER:
            return state, ()
        # (timer.due - self.nudge_after).isoformat() and timer.due.isoformat(), without datetimes
        launched_at = iso_utc(timer.at, self._nudge_micros)
        payload = {
            "type": "nudge",
            "user_id": timer.key,
            "device_id": state.device_id,
            "message": self._nudge_text,
            "launched_at": launched_at,
            "due_at": iso_utc(timer.at),
        }
        key = f"fitness:nudge:{timer.key}:{launched_at}"
        state = _state(state.running, state.last_launch_at, state.device_id, state.programs_finished,
                             state.minutes_trained, state.notifications_sent + 1)
        return state, (Notify(payload=payload, idempotency_key=key),)

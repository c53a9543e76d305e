"""The engine: virtual actors, one dispatcher, a clock per actor, a watermark, one timer queue.

``apply`` is synchronous and does no I/O: it fires the timers that fell due
(by their actors' clocks or by the watermark), moves the watermark and the
event's actor's clock, applies the event to its actor through the handler
resolved at registration, and passes the resulting effects on. Events are
therefore applied in arrival order, per key and overall, without a task or a
lock per actor. Time is explained in :mod:`engine._clock`.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

import attrs
import orjson
import trio

from ._actor import Actor
from ._clock import DEFAULT_LATENESS, FIRST_INSTANT, LAST_INSTANT, StreamClock, utc_datetime
from ._effects import CancelTimer, Effect, Notify, SetTimer, Timer, addressed
from ._event import (LOAD_TYPE, Event, InvalidEvent, _new_dict, _parse_checked, _parse_fast, _Slow, check_key,
                     converter)
from ._logs import FieldsLog
from ._metrics import LATENCY_SAMPLE, UNKNOWN_TYPE, Metrics
from ._plugins import Origin, PluginHost, Route
from ._states import unencodable_field
from ._timers import PendingTimer, TimerQueue, timers_of

__all__ = ["Engine", "REMOVED", "LOAD_TYPE", "LoadReport", "StateTable"]

log = logging.getLogger("herald.engine")
UTC = timezone.utc


def _discard(effect: Effect) -> None:
    pass


class _Removed:
    """The type of :data:`REMOVED`."""

    _instance: ClassVar["_Removed | None"] = None

    def __new__(cls) -> "_Removed":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REMOVED"

    def __reduce__(self) -> str:
        return "REMOVED"


#: Returned by a handler as the new state: the plugin forgets this actor
#: (its state is dropped and the actor leaves the plugin's key index).
REMOVED: Any = _Removed()


_ABSENT: Any = object()
_new_tuple = tuple.__new__

_PUBLIC = Origin.PUBLIC

#: Event types beginning with this belong to the engine itself (e.g. ``herald.load``): never public.
RESERVED_PREFIX = "herald."


def _reserved(type_: str, route: Route | None) -> InvalidEvent:
    owner = f"plugin {route.plugin!r}" if route is not None else "Herald itself"
    return InvalidEvent(
        "type", "reserved",
        f"{type_!r} is an internal event type of {owner}: it enters through that plugin's own sources and "
        "authenticated routes, never through POST /v1/event(s)",
    )


#: ``LoadReport``'s list factory, typed as returning Any (as ``engine._event._new_dict``, for mypyc).
_new_list: Callable[[], Any] = list


@attrs.define
class LoadReport:
    """What a bulk load did with its lines: applied, skipped by reason, errors by line."""

    lines: int = 0
    applied: int = 0
    skipped: dict[str, int] = attrs.field(factory=_new_dict)
    errors: list[dict[str, Any]] = attrs.field(factory=_new_list)
    #: Errors beyond this many are counted in ``skipped`` but not listed.
    max_errors: int = 100

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def error(self, line: int, field: str | None, code: str, message: str) -> None:
        self.skip(code)
        if len(self.errors) < self.max_errors:
            self.errors.append({"line": line, "field": field, "code": code, "message": message})

    def merge(self, other: "LoadReport") -> None:
        self.lines += other.lines
        self.applied += other.applied
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        room = self.max_errors - len(self.errors)
        self.errors.extend(other.errors[: max(room, 0)])

    def to_json(self) -> dict[str, Any]:
        return {"lines": self.lines, "applied": self.applied, "skipped": dict(self.skipped), "errors": list(self.errors)}


class StateTable:
    """One plugin's states across actors, as a bulk loader sees them.

    ``get`` returns the state of a key (None if it has none); ``put`` stores a
    new one (creating the actor), ``REMOVED`` drops it.
    """

    __slots__ = ("_engine", "_plugin")

    def __init__(self, engine: "Engine", plugin: str) -> None:
        self._engine, self._plugin = engine, plugin

    def get(self, key: str) -> Any:
        actor = self._engine.actors.get(key)
        return None if actor is None else actor.get(self._plugin)

    def put(self, key: str, state: Any) -> None:
        engine = self._engine
        actor = engine.actors.get(key)
        if actor is None:
            if state is REMOVED:
                return
            actor = engine.actors[key] = Actor(key)
        engine._store(actor, self._plugin, state)


class Engine:
    """Routes events to actors and runs their timers.

    ``emit`` receives every effect other than timer effects (the outbox in a
    server, a list in a simulation). ``wall`` is the monotonic seconds source
    that drives every actor's clock between events (``trio.current_time`` so
    that tests can move it with ``autojump_clock``); ``wall_origin`` is what
    the engine's wall reads at start (a server passes the real time, so that
    the wall goes on across restarts). ``utcnow`` is the real time used to
    reject timestamps more than ``max_skew`` seconds in the future;
    ``lateness`` is how far the watermark trails the newest timestamp seen
    (see :mod:`engine._clock`).
    """

    def __init__(
        self,
        plugins: PluginHost,
        *,
        emit: Callable[[Effect], None] = _discard,
        record: Callable[[Event, float], None] | None = None,
        replayed: Callable[[Effect], None] = _discard,
        wall: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], float] = time.time,
        max_skew: float = 300.0,
        lateness: float = DEFAULT_LATENESS,
        metrics: Metrics | None = None,
        notify_url: str | None = None,
        log_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.plugins = plugins
        #: Where this engine logs: ``log_fields`` (a cluster partition's ``node`` and ``partition``) are
        #: added to every record it writes.
        self.log: logging.Logger | FieldsLog = FieldsLog(log, **log_fields) if log_fields else log
        #: Where a :class:`Notify` without a URL goes (the configured notify sink), addressed here, before
        #: any emit or replay: every host (a Herald, a cluster partition, a simulation) sees the same effect.
        self.notify_url = notify_url
        self._emit_live, self._record_live, self._replayed = emit, record, replayed
        #: Where effects go and who records applied events: ``emit`` and ``record`` live;
        #: during :meth:`replaying`, ``replayed`` and (unless asked) nobody.
        self._emit, self._record = emit, record
        self._wall = wall
        self._shift = 0.0
        #: During a replay: the journaled wall reading of the event being replayed (see ``replaying``).
        self._replay_wall: float | None = None
        self.stream = StreamClock(lateness)
        self.utcnow = utcnow
        self.max_skew = max_skew
        self.metrics = metrics or Metrics()
        self.actors: dict[str, Actor] = {}
        self.timers = TimerQueue()
        self._routes: dict[str, Route] = plugins.routes
        self._timer_handlers = plugins.timer_handlers
        self._factories = plugins.state_factories
        self._loaders = plugins.loaders
        self._default = plugins.default
        #: Plugin name -> keys of the actors holding a state of that plugin.
        self.members: dict[str, set[str]] = {name: set() for name in plugins.names}
        #: Per plugin, bumped whenever a key joins or leaves ``members`` (for cached orderings).
        self.member_versions: dict[str, int] = dict.fromkeys(plugins.names, 0)
        self._unknown_seen: set[str] = set()
        self._timer_scope: trio.CancelScope | None = None
        #: Lower bounds of the wall reading at which the next timer falls due, and of the earliest due instant.
        self._due_at = math.inf
        self._min_due = math.inf
        self._late = 0
        #: Event-time instant of the event (its datetime) or timer (its POSIX seconds) being
        #: handled, None between them: read through ``handling_at``.
        self._handling: datetime | float | None = None
        self._accepted = self.metrics.hot.accepted
        self._timers_fired = self.metrics.hot.timers_fired
        self._received: tuple[float, datetime] = (0.0, datetime.fromtimestamp(0, UTC))
        self._sample = LATENCY_SAMPLE
        self._observers: dict[str, Callable[[float], None]] = {}
        m = self.metrics
        m.timers_pending.set_function(lambda: len(self.timers))
        m.actors.set_function(lambda: len(self.actors))
        m.watermark.set_function(lambda: self.stream.watermark(self.wall()) or 0.0)
        m.hot.late = lambda: self._late

    def reset(self) -> None:
        """Forget every actor, timer and clock (before rebuilding them from the journal)."""
        self.actors.clear()
        self.timers = TimerQueue()
        self.stream = StreamClock(self.stream.lateness)
        self._due_at = self._min_due = math.inf
        for plugin, keys in self.members.items():
            keys.clear()
            self.member_versions[plugin] += 1
        self._wake_timers()

    def replayed_up_to(self, wall: float) -> None:
        """During a replay: the wall read at least ``wall`` (a snapshot's reading), so that on
        leaving it never goes back, even if the real clock reads less."""
        if self._replay_wall is not None and wall > self._replay_wall:
            self._replay_wall = wall

    def timers_restored(self) -> None:
        """Timers were set directly on the queue (a snapshot): recompute when the next falls due."""
        self._due_at = self.timers.next_deadline(self.stream.offset())
        due = self.timers.min_due()
        self._min_due = math.inf if due is None else due
        self._wake_timers()

    @property
    def handling_at(self) -> datetime | None:
        """The event-time instant of the event or timer being handled (None between them)."""
        handling = self._handling
        if handling is None or isinstance(handling, datetime):
            return handling
        return utc_datetime(handling)

    # -- the wall ----------------------------------------------------------------

    def wall(self) -> float:
        """The engine's wall reading: the real one, or during a replay the journaled one."""
        replayed = self._replay_wall
        return self._wall() + self._shift if replayed is None else replayed

    def set_wall(self, reading: float) -> None:
        """Make the wall read ``reading`` now and go on at the wall's speed (a server sets the real
        time at start; after a replay it never reads less than the last journaled reading)."""
        self._shift = reading - self._wall()

    @contextmanager
    def replaying(self, *, record: bool = False) -> Iterator[None]:
        """Inside, ``apply(event, wall)`` replays journaled events at their journaled wall
        readings, so that every timer fires exactly where it fired live; the timer task
        waits. Effects go to ``replayed`` (their deliveries are journaled already), and
        events are not recorded again unless ``record`` (a replay into another journal).
        On leaving, the wall goes on from the last replayed reading (or the real time, if
        later), and the timers that fell due meanwhile fire, once, their effects emitted."""
        self._replay_wall = -math.inf
        self._emit = self._replayed
        self._record = self._record_live if record else None
        try:
            yield
        finally:
            self._emit, self._record = self._emit_live, self._record_live
            last, self._replay_wall = self._replay_wall, None
            if last > self.wall():
                self.set_wall(last)
            self.fire_ripe()
            self._wake_timers()

    # -- ingestion -----------------------------------------------------------

    def parse(self, raw: Any, *, received_at: datetime | None = None, origin: Origin = Origin.PUBLIC) -> Event:
        """Parse and validate one decoded JSON object; raise :class:`InvalidEvent`.

        ``origin`` is where it came from: the public ingestion routes (the
        default) may not carry internal types (see :class:`Origin`); sources
        and a plugin's own routes pass ``Origin.INTERNAL``. This is the one
        place where that rule is enforced, and the one where an actor key is
        checked (:func:`engine._event.check_key`: no control character, not
        blank), whichever parse made the event.
        """
        now = self.utcnow()
        if received_at is None:
            # One datetime per millisecond is plenty for a receipt stamp.
            if now - self._received[0] >= 0.001:
                self._received = (now, datetime.fromtimestamp(now, UTC))
            received_at = self._received[1]
        try:
            type_ = raw.get("type") if raw.__class__ is dict else None
            route = self._routes.get(type_) if type_.__class__ is str else None
            if origin is _PUBLIC and (
                route.internal if route is not None
                else type_.__class__ is str and type_.startswith(RESERVED_PREFIX)
            ):
                raise _reserved(type_, route)  # type: ignore[arg-type]  # a str: the condition says so
            if route is not None and route.parse is not None:
                event = route.parse(raw, received_at)
            elif type_.__class__ is str:  # so ``raw`` is a dict
                try:  # what ``parse_event`` does, one call shorter
                    event = _parse_fast(raw, received_at)
                except _Slow:
                    event = _parse_checked(raw, received_at=received_at)
            else:
                event = _parse_checked(raw, received_at=received_at)
            # A parsed event's type is the raw "type" string: ``route`` is already its route.
            if route is not None and route.validate is not None:
                event = route.validate(event)
            key = event.key
            if not key.isprintable() or key.isspace():  # the usual key: two C calls, no function call
                check_key(key)
            if event.at > now + self.max_skew:
                raise InvalidEvent(
                    "timestamp",
                    "in_future",
                    f"is more than {self.max_skew:g} s ahead of the server clock",
                )
        except InvalidEvent as exc:
            type_ = raw.get("type") if isinstance(raw, dict) else None
            known = self._routes.get(type_) if isinstance(type_, str) else None
            self.metrics.rejected.labels(UNKNOWN_TYPE if known is None else known.name, exc.code).inc()
            raise
        return event

    def apply(self, event: Event, arrival: float | None = None) -> float:
        """Apply an already-validated event, in memory; return the wall reading it arrived at.

        First the timers that fell due by then fire, by their actors' clocks or
        by the watermark (and the watermark moves on with this event, firing
        what it passes); then, if the event moves its actor's clock forward,
        that actor's timers due strictly before its timestamp fire (a timer due
        exactly then loses the tie to the event); then the event is applied.
        The returned reading is journaled; a replay passes it back as
        ``arrival`` (inside :meth:`replaying`), so that timers and events
        interleave exactly as they did live.
        """
        if arrival is None:
            replayed = self._replay_wall
            wall = self._wall() + self._shift if replayed is None else replayed
        else:
            wall = arrival
            if self._replay_wall is not None:
                self._replay_wall = arrival
        if wall >= self._due_at:
            self._ripen(wall)
        route = self._routes.get(event.type)
        if route is None and event.type == LOAD_TYPE:
            self._load(event, wall)
            return wall
        instant = event.at
        stream = self.stream
        base = stream.base
        if base is None:
            stream.base, stream.wall_base = instant, wall
        else:
            now = base + (wall - stream.wall_base)
            if instant > now:
                stream.base, stream.wall_base = instant, wall
                # The watermark moved on: what it passes now fires before this event.
                due_at = self._min_due - (instant - stream.lateness - wall)
                if due_at < self._due_at:
                    self._due_at = due_at
                    if wall >= due_at:
                        self._ripen(wall)
            elif instant < now - stream.lateness:
                self._late += 1
        key = event.key
        actor = self.actors.get(key)
        jumped = False
        if actor is None:
            actor = self.actors[key] = Actor(key)
            actor.offset = instant - wall
        else:
            offset = actor.offset
            if offset is None:
                actor.offset = instant - wall
            elif instant > wall + offset:
                held = actor.timers
                if held is not None:
                    # Its clock jumps to the event: its timers due before the event fire first.
                    timers = self.timers
                    if held.__class__ is PendingTimer:  # the usual case: one timer, held as is
                        if held.due < instant:
                            del timers._live[held.seq]  # what ``timers.take(held)`` does for a timer held alone
                            actor.timers = None
                            self._fire(held)
                    else:
                        for timer in timers.due_before(actor, instant):
                            if timers.is_pending(timer):  # firing one may have cancelled the next
                                timers.take(timer)
                                self._fire(timer)
                    jumped = True
                actor.offset = instant - wall
        if route is None:
            self._unknown(actor, event)
        else:
            self._handling = event.timestamp
            plugin = route.plugin
            sample = self._sample - 1
            self._sample = sample
            held = actor.plugin
            if not sample or (held != plugin and held is not None):
                self._apply(actor, route, event)
            else:
                # What ``_apply`` does in the usual cases, inline (a call less per event, three for a
                # new actor): the actor holds this plugin's state alone, or no state yet, and this
                # event is not timed.
                if held is None:  # a new actor: this plugin's initial state (``actor.get`` would miss)
                    state = route.state_factory()
                    self.members[plugin].add(key)
                    self.member_versions[plugin] += 1
                else:
                    state = actor.state
                self._accepted[route.name] += 1  # aliases count under the type's own name
                try:
                    state, effects = route.handler(state, event)
                except Exception:
                    self._handler_failed(route, event)
                else:
                    if state is REMOVED:
                        self._store(actor, plugin, state)
                    else:
                        if held is None:
                            actor.plugin = plugin  # what ``actor.put`` does on an actor without a state
                        actor.state = state
                        if effects:
                            self._effects(actor, plugin, effects)
            self._handling = None
        if jumped and actor.timers is not None:
            # The timers the event left in place come earlier on the wall (those it set are right already).
            due_at = self.timers.rekey(actor, instant - wall)  # the actor's offset, set above
            if due_at < self._due_at:
                self._due_at = due_at
        if self._record is not None:
            self._record(event, wall)
        scope = self._timer_scope
        if scope is not None:
            # Only ever bring the wake-up forward: a late one is a bug, an early
            # one costs a spurious wake-up, and moving a deadline costs trio work.
            deadline = self._due_at - self._shift
            if deadline < scope.deadline:
                scope.deadline = deadline
        return wall

    def _apply(self, actor: Actor, route: Route, event: Event) -> None:
        """Apply ``event`` to ``actor`` through ``route`` (``apply`` inlines the usual case); ``_sample``
        has been counted down already."""
        plugin = route.plugin
        if actor.plugin == plugin:  # the usual case: the actor holds this plugin's state alone
            state = actor.state
        else:
            state = actor.get(plugin, _ABSENT)
            if state is _ABSENT:
                state = route.state_factory()
                self.members[plugin].add(actor.key)
                self.member_versions[plugin] += 1
        self._accepted[route.name] += 1  # aliases count under the type's own name
        timed = self._sample <= 0
        if timed:
            self._sample = LATENCY_SAMPLE
            started = time.perf_counter()
        try:
            state, effects = route.handler(state, event)
        except Exception:
            self._handler_failed(route, event)
            return
        if timed:
            observe = self._observers.get(route.name)
            if observe is None:  # ``labels`` takes a lock and builds a tuple: once per type, not per sample
                observe = self._observers[route.name] = self.metrics.handler_seconds.labels(route.name).observe
            observe(time.perf_counter() - started)
        if state is REMOVED:
            self._store(actor, plugin, state)
            return
        if actor.plugin == plugin:
            actor.state = state
        else:
            actor.put(plugin, state)
        if effects:
            self._effects(actor, plugin, effects)

    def _handler_failed(self, route: Route, event: Event) -> None:
        """A handler raised on ``event``: count and log it (the actor's state is left unchanged)."""
        plugin = route.plugin
        self.metrics.handler_errors.labels(route.name).inc()
        self.log.exception("handler of %r (plugin %s) failed on event %s; state unchanged (a plugin refuses "
                           "bad input in its EventType's validate step, with InvalidEvent: a 400 before the 202)",
                           event.type, plugin, event.id, extra={"plugin": plugin, "event_id": event.id})

    def _unknown(self, actor: Actor, event: Event) -> None:
        """An event of a type no plugin claims: the default handler's (the bundled one counts it), on the
        actor's default state (``actor.unknown``)."""
        default = self._default
        self._accepted[UNKNOWN_TYPE] += 1
        if event.type not in self._unknown_seen:
            self._unknown_seen.add(event.type)
            self.log.warning("no plugin handles event type %r; such events go to the default handler (%s)",
                             event.type, "counting them on their actors" if default.bundled else f"plugin {default.plugin}",
                             extra={"event_id": event.id})
        state = actor.unknown
        if state is None:
            state = default.initial()
        self._handling = event.timestamp
        try:
            state, effects = default.handler(state, event)
        except Exception:
            self._handling = None
            self.metrics.handler_errors.labels(UNKNOWN_TYPE).inc()
            self.log.exception("the default handler (plugin %s) failed on event %s of type %r; state unchanged",
                               default.plugin, event.id, event.type, extra={"plugin": default.plugin, "event_id": event.id})
            return
        self._handling = None
        actor.unknown = None if state is REMOVED else state
        if effects:
            self._effects(actor, default.plugin, effects)

    def _effects(self, actor: Actor, plugin: str, effects: Iterable[Effect],
                 _FIRST_INSTANT: float = FIRST_INSTANT, _LAST_INSTANT: float = LAST_INSTANT) -> None:
        effect: Any  # dispatched on its exact class below, whose attributes it then has
        for effect in effects:
            kind = effect.__class__
            if kind is SetTimer:
                due = effect.at
                if due.__class__ is not float:  # a datetime (or an int of POSIX seconds)
                    due = due.timestamp() if isinstance(due, datetime) else float(due)
                if not _FIRST_INSTANT <= due <= _LAST_INSTANT:  # beyond what a datetime holds (or NaN): an end
                    due = FIRST_INSTANT if due < 0 else LAST_INSTANT
                offset = actor.offset
                if offset is None:  # an actor made by a bulk load: its clock starts at the stream's
                    wall = self.wall()
                    offset = actor.offset = (self.stream.now(wall) or due) - wall
                self.timers.set(actor, plugin, effect.name, due, effect.data, offset)
                deadline = due - offset  # the timer's wall deadline, as ``set`` computes it
                if due < self._min_due:
                    self._min_due = due
                    deadline = min(deadline, due - self.stream.offset())
                if deadline < self._due_at:
                    self._due_at = deadline
            elif kind is CancelTimer:
                self.timers.cancel(actor, plugin, effect.name)
            elif kind is Notify and effect.url is None and self.notify_url is not None:
                self._emit(addressed(effect, self.notify_url))
            else:
                self._emit(effect)

    # -- timers --------------------------------------------------------------

    def fire_ripe(self, wall: float | None = None) -> int:
        """Fire every timer due by now (or by the wall reading ``wall``): by its actor's clock or by
        the watermark, in the order they fell due. Returns how many fired."""
        return self._ripen(self.wall() if wall is None else wall)

    def _ripen(self, wall: float) -> int:
        timers, stream = self.timers, self.stream
        fired = 0
        while (timer := timers.pop_ripe(wall, stream.offset())) is not None:
            self._fire(timer)
            fired += 1
        self._due_at = timers.next_deadline(stream.offset())
        due = timers.min_due()
        self._min_due = math.inf if due is None else due
        return fired

    def _fire(self, timer: PendingTimer) -> None:
        plugin = timer.plugin
        handler = self._timer_handlers.get(plugin)
        if handler is None:
            self.log.warning("plugin %s set timer %r but has no timer handler", plugin, timer.name,
                             extra={"plugin": plugin, "timer": timer.name})
            return
        actor = timer.actor
        state = actor.state if actor.plugin == plugin else actor.get(plugin, _ABSENT)
        if state is _ABSENT:
            state = self._factories[plugin]()
            self.members[plugin].add(actor.key)
            self.member_versions[plugin] += 1
        fired = _new_tuple(Timer, (actor.key, timer.name, timer.due, timer.data))
        self._timers_fired[plugin] += 1
        self._handling = timer.due
        try:
            state, effects = handler(state, fired)
        except Exception:
            self.log.exception("timer handler of plugin %s failed on %r for %r", plugin, timer.name, actor.key,
                               extra={"plugin": plugin, "timer": timer.name})
            return
        else:
            if state is not REMOVED and actor.plugin == plugin:
                actor.state = state  # what ``_store`` does in the usual case
            else:
                self._store(actor, plugin, state)
            if effects and state is not REMOVED:
                self._effects(actor, plugin, effects)
        finally:
            self._handling = None

    def _store(self, actor: Actor, plugin: str, state: Any) -> None:
        """Set (or, with ``REMOVED``, drop) one plugin's state on an actor, keeping ``members`` right."""
        if state is REMOVED:
            if actor.drop(plugin):
                self.members[plugin].discard(actor.key)
                self.member_versions[plugin] += 1
            self.timers.cancel_plugin(actor, plugin)
            return
        if not actor.has(plugin):
            self.members[plugin].add(actor.key)
            self.member_versions[plugin] += 1
        actor.put(plugin, state)

    # -- bulk loads ----------------------------------------------------------

    def load(self, event: Event, arrival: float | None = None) -> LoadReport:
        """Apply a bulk load: an event of type :data:`LOAD_TYPE` whose data names
        a loader and carries its lines. Journaled as one event, replayed the same.
        A load moves no clock: its lines carry their own times."""
        wall = self.wall() if arrival is None else arrival
        if self._replay_wall is not None and arrival is not None:
            self._replay_wall = arrival
        if wall >= self._due_at:
            self._ripen(wall)
        report = self._load(event, wall)
        if self._record is not None:
            self._record(event, wall)
        return report

    def _load(self, event: Event, wall: float) -> LoadReport:
        data = event.data
        name: Any = data.get("loader")
        loader = self._loaders.get(name)
        if loader is None:
            self.log.warning("load %s names loader %r, which no enabled plugin provides; skipped", event.id, name,
                             extra={"event_id": event.id})
            return LoadReport(skipped={"unknown_loader": 1})
        body = data.get("body", "")
        self._handling = event.timestamp
        try:
            report = loader.apply(StateTable(self, loader.plugin), body.encode() if isinstance(body, str) else body,
                                  int(data.get("first_line", 1)))
        except Exception:
            self.log.exception("loader %s failed on load %s; what it applied before failing stays", name, event.id,
                               extra={"event_id": event.id})
            report = LoadReport(skipped={"loader_failed": 1})
        finally:
            self._handling = None
        self._accepted[LOAD_TYPE] += report.applied
        return report

    def _wake_timers(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            scope.deadline = -math.inf  # wake now: the timer task recomputes its deadline

    async def run_timers(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire timers as they fall due; runs until cancelled. The engine's ``wall`` must be
        ``trio.current_time`` (plus the shift of :meth:`set_wall`) for this task."""
        task_status.started()
        try:
            while True:
                replaying = self._replay_wall is not None
                due_at = self._due_at
                deadline = math.inf if replaying else due_at - self._shift
                with trio.CancelScope(deadline=deadline) as scope:
                    self._timer_scope = scope
                    await trio.sleep_forever()
                self._timer_scope = None
                if self._replay_wall is None:
                    # Woken by its own deadline, the wall has reached ``due_at`` (max(): float rounding
                    # must never leave that timer unfired); woken early (a deadline brought forward,
                    # then passed by events), only what is due by the wall may fire.
                    on_time = scope.deadline == deadline and trio.current_time() >= deadline and due_at == self._due_at
                    self._ripen(max(self.wall(), due_at) if on_time else self.wall())
        finally:
            self._timer_scope = None

    # -- queries -------------------------------------------------------------

    def now(self) -> datetime | None:
        """The stream's time: the newest timestamp seen, running at wall speed (None before any event)."""
        instant = self.stream.now(self.wall())
        return None if instant is None else utc_datetime(instant)

    def watermark(self) -> datetime | None:
        """The stream's time minus the allowed lateness: timers before it fire, whoever holds them."""
        instant = self.stream.watermark(self.wall())
        return None if instant is None else utc_datetime(instant)

    def actor_now(self, actor: Actor) -> datetime | None:
        """What the actor's own clock reads now (None before its first event)."""
        if actor.offset is None:
            return None
        return utc_datetime(self.wall() + actor.offset)

    @property
    def late_events(self) -> int:
        """Events that arrived older than the watermark (applied all the same)."""
        return self._late

    def actor(self, key: str) -> Actor | None:
        return self.actors.get(key)

    def actor_view(self, key: str) -> dict[str, Any] | None:
        """The JSON-ready view of one actor, as ``GET /v1/actors/{key}`` shows it."""
        actor = self.actors.get(key)
        if actor is None:
            return None
        timers = sorted(timers_of(actor), key=lambda t: (t.due, t.seq))
        clock = self.actor_now(actor)
        states = {name: converter.unstructure(state) for name, state in actor.states.items()}
        view = {
            "key": actor.key,
            "clock": clock.isoformat() if clock else None,
            "states": states,
            "timers": [
                {
                    "plugin": t.plugin,
                    "name": t.name,
                    "due": utc_datetime(t.due).isoformat(),
                }
                for t in timers
            ],
            "unknown": {} if actor.unknown is None else converter.unstructure(actor.unknown),
        }
        try:
            orjson.dumps(states)
        except orjson.JSONEncodeError:
            # A state that cannot be encoded (a value its field's type let through): the others are
            # served, and it is named by plugin and field (``state_errors``) instead of failing the view.
            errors = {}
            for name, state in actor.states.items():
                found = unencodable_field(state)
                if found is not None:
                    del states[name]
                    errors[name] = {"code": "unencodable_state", "field": found[0],
                                    "message": f"this state cannot be encoded as JSON: {found[1]}"}
            view["state_errors"] = errors
        return view

    def keys(self, plugin: str) -> set[str]:
        """The keys of the actors holding a state of ``plugin`` (live; do not mutate)."""
        return self.members[plugin]

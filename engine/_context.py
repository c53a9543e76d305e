"""What a plugin sees of the Herald it runs in: a narrow, typed context.

Every hook that acts (sources, sinks, routes, startup, shutdown) receives a
:class:`Context` as its ``context`` argument. It offers the configuration,
durable ingestion (``accept``), a place for per-server objects (``part``),
a section of ``/healthz`` (``health``), a metrics registry, read-only views
of actors, and the hooks other plugins offer. Nothing else of the engine is
reachable through it, so a plugin cannot come to depend on internals.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, AbstractSet, Callable, Iterable, Iterator, Mapping, Sequence

import attrs

from ._clock import utc_datetime
from ._config import Config
from ._event import Event
from ._plugins import EventType, Origin, PluginError
from ._timers import timers_of

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

__all__ = ["ActorView", "Context", "GUARDED_ROUTE", "TimerView"]

#: The route being served, while a request behind a credential check (the admin token, a session, a
#: client token) is served; set by the web layer for the request's duration, None otherwise. What
#: :meth:`Context.accept` takes in meanwhile must be of internal types: a public type written behind a
#: token could be sent without it to ``POST /v1/event(s)`` (see docs/security.md).
GUARDED_ROUTE: ContextVar[str | None] = ContextVar("herald_guarded_route", default=None)


@attrs.frozen
class TimerView:
    """A pending timer: which plugin set it, its name, and when it is due in its actor's event time."""

    plugin: str
    name: str
    due: datetime


@attrs.frozen
class ActorView:
    """A read-only look at one actor: each plugin's state, its clock, its pending timers."""

    key: str
    states: Mapping[str, Any]
    clock: datetime | None
    timers: tuple[TimerView, ...]
    #: The actor's default state: what the default handler keeps of its events of types no plugin claims
    #: (Herald's bundled one: counts by type; ``{}`` before any).
    unknown: Any


class _UnionKeys(AbstractSet[str]):
    """The keys of several engines (a cluster node's partitions) as one set; they never overlap."""

    __slots__ = ("_sets",)

    def __init__(self, sets: list[AbstractSet[str]]) -> None:
        self._sets = sets

    def __contains__(self, key: object) -> bool:
        return any(key in s for s in self._sets)

    def __iter__(self) -> Iterator[str]:
        for s in self._sets:
            yield from s

    def __len__(self) -> int:
        return sum(len(s) for s in self._sets)


class Context:
    """The plugin-facing side of one running Herald (see the module's documentation)."""

    __slots__ = ("_herald",)

    def __init__(self, herald: Any) -> None:
        self._herald = herald

    # -- settings and places of one's own -------------------------------------------------

    @property
    def config(self) -> Config:
        return self._herald.config

    def part(self, name: str, make: Callable[[], Any]) -> Any:
        """A per-server object of a plugin (a store, a poller, an index), made on first use by ``make()``;
        name it after the plugin (``"customers.directory"``)."""
        return self._herald.part(name, make)

    def health(self, name: str, initial: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The section ``name`` of ``/healthz`` (``sources.<name>``): a dict the plugin keeps up to date."""
        return self._herald.health.setdefault(name, dict(initial or {}))

    @property
    def metrics(self) -> "CollectorRegistry":
        """The Prometheus registry of this server: register the plugin's own metrics here."""
        return self._herald.metrics.registry

    @property
    def hook(self) -> Any:
        """The hooks of every enabled plugin (pluggy's relay), to call hooks a plugin offers to others."""
        return self._herald.plugins.pm.hook

    @property
    def ready(self) -> bool:
        """Whether the server accepts events (recovery is done and the journal can be written)."""
        return self._herald.ready

    @property
    def clustered(self) -> bool:
        """Whether this server is a node of a cluster over Kafka (its actors are spread over nodes)."""
        return self._herald.cluster is not None

    @property
    def durable(self) -> bool:
        """Whether accepted events are journaled (False with ``--durability memory``)."""
        return self._herald.journal.enabled

    # -- bringing events in --------------------------------------------------------------------

    async def accept(self, events: Sequence[Event | dict[str, Any]]) -> list[bool]:
        """Apply events and wait until they are durable; return which were repeats of an id already
        accepted. Raw JSON objects are parsed as an internal source's (internal types allowed).
        Raises :class:`engine.InvalidEvent` or :class:`engine.JournalError`, then nothing is applied.
        In a cluster: acknowledged by the broker and applied on this node (its own partition or its
        replica of it), so that what the plugin reads next includes them.

        While a request behind a credential check is served (:data:`GUARDED_ROUTE`), an event of a
        public type is a plugin's bug (the token it guards could be bypassed): :class:`PluginError`,
        and nothing is applied."""
        guarded = GUARDED_ROUTE.get()
        if guarded is not None:
            self._refuse_public(events, guarded)
        return await self._herald.accept(events, applied=True)

    def _refuse_public(self, events: Sequence[Event | dict[str, Any]], guarded: str) -> None:
        origin_of = self._herald.plugins.origin_of
        for event in events:
            type_ = event.type if isinstance(event, Event) else event.get("type") if isinstance(event, dict) else None
            if not isinstance(type_, str) or origin_of(type_) is Origin.INTERNAL:
                continue  # (a type that is no string: the parse refuses it)
            raise PluginError(
                f"{guarded} is behind a credential check but wrote {type_!r}, a public event type that anyone "
                f"may send to POST /v1/event(s) without it: declare it EventType(..., origin=Origin.INTERNAL)")

    async def snapshot(self) -> dict[str, Any] | None:
        """Write a snapshot now and compact the journal behind it (None without a journal or before ready)."""
        herald = self._herald
        if not herald.journal.enabled or not herald.ready:
            return None
        return await herald.snapshot()

    # -- reading actors ---------------------------------------------------------------------------

    def actor(self, key: str) -> ActorView | None:
        """One actor as this server holds it (in a cluster: None if another node serves it)."""
        engine = self._herald.engine_for(key)
        actor = None if engine is None else engine.actors.get(key)
        if actor is None:
            return None
        timers = tuple(TimerView(t.plugin, t.name, utc_datetime(t.due))
                       for t in sorted(timers_of(actor), key=lambda t: (t.due, t.seq)))
        return ActorView(actor.key, dict(actor.states), engine.actor_now(actor), timers,
                         {} if actor.unknown is None else actor.unknown)

    def state(self, key: str, plugin: str) -> Any:
        """``plugin``'s state on the actor ``key`` (None if it has none): an immutable value."""
        engine = self._herald.engine_for(key)
        actor = None if engine is None else engine.actors.get(key)
        return None if actor is None else actor.get(plugin)

    def states(self, keys: Iterable[str], plugin: str) -> Iterable[tuple[str, Any]]:
        """``(key, state)`` of ``plugin`` for each of ``keys`` that has one, in their order."""
        herald = self._herald
        if herald.cluster is None:
            actors = herald.engine.actors
            for key in keys:
                actor = actors.get(key)
                if actor is not None and actor.has(plugin):
                    yield key, actor.get(plugin)
            return
        for key in keys:
            engine = herald.engine_for(key)
            actor = None if engine is None else engine.actors.get(key)
            if actor is not None and actor.has(plugin):
                yield key, actor.get(plugin)

    def keys(self, plugin: str) -> AbstractSet[str]:
        """The keys of the actors holding a state of ``plugin`` (a live view: do not change it)."""
        herald = self._herald
        if herald.cluster is None:
            return herald.engine.members[plugin]
        return _UnionKeys([engine.members[plugin] for engine in herald.engines()])

    def version(self, plugin: str) -> int:
        """Bumped whenever a key joins or leaves :meth:`keys` (for orderings a plugin caches)."""
        herald = self._herald
        if herald.cluster is None:
            return herald.engine.member_versions[plugin]
        # Each engine's version only grows; a rebalance (engines come and go) moves it far on.
        return herald.cluster.rebalances << 40 | sum(e.member_versions[plugin] for e in herald.engines())

    def event_type(self, name: str) -> EventType:
        """The declaration of an event type (by its name or an alias)."""
        return self._herald.plugins.routes[name].type

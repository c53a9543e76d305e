"""The hooks a Herald plugin may implement.

A plugin is a plain module with ``@hookimpl`` functions; it is found through
the ``herald`` entry-point group (bundled plugins included). Hooks that declare
what a plugin *is* (state, event types, timer handler, effect executors) are
called once per plugin when it registers and their results are resolved into
plain dicts, so that dispatching an event costs a dict lookup, never a hook
call. Hooks that *do* things (sinks, sources, startup, shutdown) are called once
per server, with the server's :class:`engine.Context` (what a plugin may use
of it). The web layer declares the hooks for routes in ``web.hookspecs``; other
hosts may declare more: modules of hookspecs are found through the
``herald.hookspecs`` entry-point group.

Every hook is optional. Arguments may be omitted from an implementation's
signature, as usual with pluggy.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Mapping

import pluggy

# The annotations name engine.Config, engine.Context, engine.DefaultHandler, engine.EventType, engine.Loader
# and engine.Timer: they stay strings (this module is imported by the plugin host, so it imports nothing of the engine).

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "herald"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def herald_add_hookspecs() -> Any:
    """A module of further hookspecs this plugin offers to other plugins.

    Called when plugins register, before their implementations are checked,
    so that e.g. the analytics plugin can let others contribute payload
    schemas through ``herald_analytics_schemas``.
    """


@hookspec
def herald_serve_options(parser: Any) -> None:
    """Add ``herald serve`` flags for this plugin's settings.

    Give each option ``dest`` the environment variable it stands for
    (``HERALD_<PLUGIN>_<NAME>``) and no default: a flag given on the command
    line overrides the variable, exactly like the engine's own flags.
    """


@hookspec
def herald_cli(commands: Any) -> None:
    """Add subcommands to ``herald`` (e.g. ``herald tokens``).

    ``commands`` is the argparse sub-parsers object; give each new parser
    ``set_defaults(run=function)``, where ``function(args) -> int`` is the exit
    status. Only installed plugins are asked, whether or not they are enabled.
    """


@hookspec
def herald_state_type() -> type | None:
    """The class of this plugin's per-actor state.

    An attrs class whose no-argument call is the initial state. Herald creates
    one lazily, on the first event of this plugin's types for an actor, and
    renders it with cattrs in ``GET /v1/actors/{key}``. Prefer frozen classes:
    handlers return a new state instead of mutating the old one.
    """


@hookspec
def herald_state_version() -> int:
    """The version of this plugin's state class: 1 when not declared.

    Snapshots and cluster checkpoints record it beside the plugin's states. Bump it
    when a change to the state class cannot be read from the previous one (a renamed
    field, a changed type) and declare :func:`herald_migrate_state`. Adding a field
    with a default or removing one needs neither: Herald reads such states as they are.
    """


@hookspec
def herald_migrate_state(state: Any, version: int) -> Any:
    """The state ``state`` of version ``version`` (older than :func:`herald_state_version`), as the current one.

    ``state`` is the unstructured state as stored (a dict of JSON values, the way
    ``engine.converter.unstructure`` wrote it); return it as the current version's
    unstructured state (a dict, structured next with cattrs). Called once per stored
    state when a snapshot or checkpoint of an older version is restored; it must be
    pure. Handle every older version (e.g. step 1 -> 2 -> 3 in a loop). A state it
    cannot turn into the current class refuses the start, naming plugin and field.
    """


@hookspec
def herald_event_types(config: Config) -> Iterable[EventType]:
    """The event types this plugin handles, and how to parse and handle each.

    Each :class:`engine.EventType` names a type (plus aliases), a handler
    ``(state, event) -> (state, effects)`` and optionally a ``validate(event)
    -> event`` step that checks or normalises ``event.data`` and raises
    :class:`engine.InvalidEvent` for bad input (a 400 naming the field). A
    type may be claimed by one plugin only.
    """


@hookspec
def herald_default_handler(config: Config) -> DefaultHandler | None:
    """Claim the events of every type no plugin claims (return None not to).

    A :class:`engine.DefaultHandler`: ``handler(state, event) -> (state,
    effects)`` on the actor's default state (kept apart from the plugins'
    states; ``unknown`` in ``GET /v1/actors/{key}``). At most one enabled
    plugin may claim it (two are refused at registration). When none does,
    Herald registers its bundled default, which counts such events by type on
    their actors; enabling a plugin that claims it replaces that one.
    Effects go out as a handler's do; a timer it sets belongs to its plugin
    (fired through that plugin's ``herald_timer_handler``).
    """


@hookspec
def herald_loaders(config: Config) -> Iterable[Loader]:
    """Bulk loaders for files of this plugin's format (``herald load NAME FILE``).

    A :class:`engine.Loader` folds a chunk of lines into many actors' states at
    once, far cheaper than one event per line; each chunk is journaled as one
    event and replayed through the same loader.
    """


@hookspec
def herald_timer_handler(config: Config) -> Callable[[Any, Timer], tuple[Any, Iterable[Effect]]] | None:
    """The function called when one of this plugin's timers falls due.

    Signature ``(state, timer) -> (state, effects)``, like an event handler;
    ``timer`` is an :class:`engine.Timer` with the actor key, name, due instant
    (``at``, POSIX seconds; ``due``, the same as a datetime) and the data given
    to :class:`engine.SetTimer`.
    """


@hookspec
def herald_effect_executors(config: Config) -> Mapping[type, Callable[[Any], Awaitable[None]]]:
    """Executors for effect classes this plugin introduces.

    Maps an effect class to ``async def execute(effect)``; the outbox calls it
    off the ingestion path, with retries. Raise :class:`engine.DeliveryError`
    (``retryable=True`` for transient failures) to report a failure.
    """


@hookspec
def herald_effect_sinks(context: Context) -> Mapping[type, Any]:
    """In-process consumers of effect classes this plugin introduces: read models.

    Maps an effect class to a sink with ``put(effect)`` (synchronous, must not
    block: buffer, then write in the background) and optionally ``async
    flush()`` (make everything put so far durable; Herald awaits it before a
    snapshot and at shutdown). Unlike executors, sinks bypass the outbox and
    also receive the effects of replayed events, so their writes must be
    idempotent (e.g. keyed by event id). Typical use: a plugin's own indexed
    store of what its handlers decided. A sink with much to do per effect
    (HTTP calls, a producer) may do it on a thread of its own
    (:class:`engine.SinkThread`), its ``flush`` acknowledged once delivered.

    In a cluster a sink with ``local_view = True`` is a read model every
    node keeps whole: it gets the effects of every partition (through the
    node's replicas). Any other sink acts on the world (a CRM, a topic) and
    gets the effects of the partitions the node owns, once.
    """


@hookspec
def herald_sources(context: Context) -> Iterable[Callable[[], Awaitable[None]]]:
    """Background sources (pollers, file tailers, consumers) to run.

    In a cluster a source runs once, on the owner of partition 0 (it moves with
    it), unless it has ``per_node = True`` (e.g. the writer of a local view):
    then it runs on every node.

    Each is an ``async`` callable run in the server's nursery for its whole
    life; it feeds events with ``await context.accept([...])`` (durable on
    return). It is cancelled at shutdown; if it crashes it is started again,
    backing off up to a minute.
    """


@hookspec
def herald_startup(context: Context) -> Awaitable[None] | None:
    """Called once when the server starts, before it accepts requests.

    May return an awaitable, which is awaited.
    """


@hookspec
def herald_shutdown(context: Context) -> Awaitable[None] | None:
    """Called once when the server stops, after requests have ended.

    May return an awaitable, which is awaited.
    """

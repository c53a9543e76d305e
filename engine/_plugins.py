"""Finding, registering and resolving plugins.

Plugins come from the ``herald`` entry-point group (the bundled ones are
declared there by Herald's own distribution) or, for development, from a
module name or path given in the configuration (``streaks``, ``mypkg.hooks``,
``module:attribute``). Their declaration hooks are
called once, here, and flattened into lookup tables for the engine.
"""

from __future__ import annotations

import enum
import importlib
import logging
import typing
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence

import attrs
import pluggy

from . import _default, hookspecs
from ._config import Config
from ._default import DefaultHandler
from ._event import Event
from ._plugin_error import PluginError
from ._states import field_type_problem, shown

__all__ = ["API_VERSION", "DefaultHandler", "DefaultRoute", "EventType", "Loader", "Origin", "PluginError",
           "PluginHost", "Route", "available_plugins"]

log = logging.getLogger("herald.plugins")

#: The version of the plugin API (``engine``'s names and the hooks of :mod:`engine.hookspecs`). A plugin
#: that needs it says so with a module attribute ``HERALD_API = "1"``; a Herald offering another refuses
#: it at registration. Bumped only when a stable name changes incompatibly (docs/plugins.md).
API_VERSION = "1"

GROUP = "herald"
#: Modules of further hookspecs a host declares (the web layer's route hooks), found like plugins.
HOOKSPECS_GROUP = "herald.hookspecs"


class Origin(str, enum.Enum):
    """Where events of a type may come from, declared per type and enforced at the ingestion edge.

    ``PUBLIC`` types may be sent by anyone who can reach ``POST /v1/event(s)``.
    ``INTERNAL`` types enter only in-process: through a plugin's sources
    (pollers, Kafka consumers), bulk loaders and its own authenticated routes
    (``Herald.accept``); the public routes refuse them with 400 ``reserved``.
    """

    PUBLIC = "public"
    INTERNAL = "internal"


@attrs.frozen
class EventType:
    """An event type a plugin handles.

    ``handler(state, event) -> (state, effects)`` must do no I/O. ``validate``
    (optional) receives the parsed :class:`Event` and returns it, possibly
    with normalised data, or raises :class:`InvalidEvent`. ``schema`` is a
    JSON Schema for ``data``, used in the API docs. ``origin`` says whether
    the public ingestion routes may carry it (see :class:`Origin`).
    """

    name: str
    handler: Callable[[Any, Event], tuple[Any, Iterable[Any]]]
    validate: Callable[[Event], Event] | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    schema: dict[str, Any] | None = None
    #: ``parse(raw, received_at) -> Event`` for a type whose wire format is not
    #: Herald's envelope (it replaces the envelope parse; ``validate`` still runs).
    parse: Callable[[dict[str, Any], Any], Event] | None = None
    origin: Origin = attrs.field(default=Origin.PUBLIC, converter=Origin)


@attrs.frozen
class Loader:
    """A bulk loader: many lines of one format applied as one journaled event.

    ``apply(table, body, first_line) -> LoadReport`` folds the lines of
    ``body`` (bytes, newline-separated; the first is line ``first_line`` of its
    file) into the plugin's states through ``table`` (an
    :class:`engine.StateTable`). It must be deterministic and do no I/O: a
    replay calls it again with the same body.
    """

    name: str
    apply: Callable[[Any, bytes, int], Any]
    description: str = ""
    plugin: str = ""


@attrs.frozen(slots=True)
class DefaultRoute:
    """The default handler as resolved for dispatch: which plugin gave it, and the handler."""

    plugin: str
    handler: Callable[[Any, Event], tuple[Any, Iterable[Any]]]
    initial: Callable[[], Any]
    state_type: Any
    #: True for Herald's bundled default (counting), False for a plugin's replacement.
    bundled: bool = False


@attrs.frozen(slots=True)
class Route:
    """Where events of one type go: resolved once, used per event (the event type's
    callables are copied here so that dispatch reads one attribute, not two)."""

    plugin: str
    type: EventType
    state_factory: Callable[[], Any]
    #: The type's own name (events of an alias are counted under it).
    name: str = attrs.field(init=False)
    handler: Callable[[Any, Event], tuple[Any, Iterable[Any]]] = attrs.field(init=False)
    parse: Callable[[dict[str, Any], Any], Event] | None = attrs.field(init=False)
    validate: Callable[[Event], Event] | None = attrs.field(init=False)
    internal: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "name", self.type.name)
        object.__setattr__(self, "handler", self.type.handler)
        object.__setattr__(self, "parse", self.type.parse)
        object.__setattr__(self, "validate", self.type.validate)
        object.__setattr__(self, "internal", self.type.origin is Origin.INTERNAL)


def _no_state() -> None:
    return None


# -- the plugin contract, checked at registration (docs/plugins.md) --------------------------------

_MAX_TYPE = 100
_RESERVED = "herald."


def _check_callable(plugin: str, what: str, value: Any) -> None:
    if not callable(value):
        raise PluginError(f"{plugin}: {what} must be callable, not {value!r}")


def _check_state_type(plugin: str, state_type: Any) -> None:
    """A state class must be an attrs class whose no-argument call is the initial state, and it must
    come back equal through cattrs (snapshots store it that way)."""
    if not (isinstance(state_type, type) and attrs.has(state_type)):
        raise PluginError(f"{plugin}: herald_state_type must return an attrs class (or None), not {state_type!r}")
    found = field_type_problem(state_type)  # every field type, recursively: not just the initial values
    if found is not None:
        path, declared, why = found
        raise PluginError(f"{plugin}: {state_type.__name__}.{path} (typed {shown(declared)}) cannot be stored: {why}; "
                          f"snapshots store states through cattrs and JSON, so none could be written. {_CATTRS_TYPES}")
    try:
        initial = state_type()
    except Exception as exc:
        raise PluginError(f"{plugin}: {state_type.__name__}() must make the initial state: {exc!r}") from None
    _check_round_trip(plugin, state_type.__name__, state_type, initial,
                      lambda exc: f"{_round_trip_failure(state_type, initial, exc)}; snapshots store states that "
                                  f"way, so none could restore it. {_CATTRS_TYPES}")
    _warn_if_mutable(plugin, state_type, initial)


def _check_round_trip(plugin: str, what: str, state_type: Any, initial: Any, failed: Callable[[Exception], str]) -> None:
    """``initial`` comes back equal from a snapshot's encoding (cattrs and JSON), or the plugin is refused:
    ``failed(exc)`` says why when it cannot be read back at all."""
    from ._event import dumps, loads

    try:
        again = loads(dumps(initial), state_type)
    except Exception as exc:
        raise PluginError(f"{plugin}: {failed(exc)}") from None
    if again != initial:
        raise PluginError(f"{plugin}: {what} comes back from a cattrs round trip as {again!r}, not {initial!r}: "
                          f"snapshots could not restore it")


#: What a state's fields may hold (cattrs converts these without help).
_CATTRS_TYPES = ("A state's fields may hold: None, bool, int, float, str, bytes, datetime, date, enums, "
                 "tuples, frozensets, lists, dicts of those, and nested attrs classes of them (a duration as "
                 "seconds, a float).")
_MUTABLE = (list, dict, set, bytearray)


def _round_trip_failure(state_type: type, initial: Any, exc: Exception) -> str:
    """Which field of ``initial`` fails the cattrs round trip, and why, in a plugin author's words
    (cattrs' own advice, to register a hook, is not something a plugin can do)."""
    from ._event import dumps, loads

    for field in attrs.fields(state_type):
        value = getattr(initial, field.name)
        try:
            loads(dumps(value), field.type if field.type is not None else Any)
        except Exception as field_exc:
            kind = field.type if field.type is not None else type(value)
            shown = kind.__name__ if isinstance(kind, type) else str(kind)
            return (f"{state_type.__name__}.{field.name} (typed {shown}, initially {value!r}) does not survive a "
                    f"cattrs round trip ({_reason(field_exc)})")
    return f"{state_type.__name__} does not survive a cattrs round trip ({_reason(exc)})"


def _reason(exc: Exception) -> str:
    """An exception's message without cattrs' hook advice; a group's first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # type: ignore[assignment]
    text = str(exc).replace(" Register a structure hook for it.", "").replace("Register a structure hook for it.", "")
    return f"{type(exc).__name__}: {text.strip()}" if text.strip() else type(exc).__name__


def _warn_if_mutable(plugin: str, state_type: type, initial: Any) -> None:
    """States are immutable values (docs/plugins.md, contract 2): warn about a class that is not frozen
    and about fields holding mutable containers, which a handler could change in place."""
    fields = attrs.fields(state_type)
    if fields:
        try:
            setattr(initial, fields[0].name, getattr(initial, fields[0].name))
        except attrs.exceptions.FrozenInstanceError:
            pass
        else:
            log.warning("plugin %s: state class %s is not frozen: states are immutable values (a snapshot keeps "
                        "them by reference), declare it with @attrs.frozen", plugin, state_type.__name__,
                        extra={"plugin": plugin})
    try:
        attrs.resolve_types(state_type)
    except Exception:  # an annotation that cannot be resolved: judge by the initial values alone
        pass
    for field in fields:
        # Judged by the declared type (Mapping, Sequence, AbstractSet say "read only"), else by the initial value.
        declared = typing.get_origin(field.type) or field.type if field.type is not None else None
        value = getattr(initial, field.name)
        mutable = next((kind for kind in _MUTABLE
                        if declared is kind or (declared is None and isinstance(value, kind))), None)
        if mutable is not None:
            log.warning("plugin %s: %s.%s is a %s, a mutable container: hold a tuple or a frozenset instead, or "
                        "declare it Mapping, Sequence or AbstractSet (read only) and never change it in place "
                        "(return a new state holding a new one)", plugin, state_type.__name__, field.name,
                        mutable.__name__, extra={"plugin": plugin})


def _migration(impl: Any) -> Callable[[Any, int], Any]:
    """A plugin's ``herald_migrate_state`` as ``migrate(state, version)`` (it may omit either argument)."""
    function, names = impl.function, impl.argnames

    def migrate(state: Any, version: int) -> Any:
        given = {"state": state, "version": version}
        return function(**{name: given[name] for name in names})

    return migrate


def _check_event_type(plugin: str, event_type: Any) -> None:
    if not isinstance(event_type, EventType):
        raise PluginError(f"{plugin}: herald_event_types must give engine.EventType values, not {event_type!r}")
    for name in (event_type.name, *event_type.aliases):
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_TYPE:
            raise PluginError(f"{plugin}: event type names are 1 to {_MAX_TYPE} characters, not {name!r}")
        if name.startswith(_RESERVED):
            raise PluginError(f"{plugin}: event type {name!r}: names beginning with {_RESERVED!r} are Herald's own")
    _check_callable(plugin, f"the handler of {event_type.name!r}", event_type.handler)
    for what in ("validate", "parse"):
        value = getattr(event_type, what)
        if value is not None:
            _check_callable(plugin, f"the {what} step of {event_type.name!r}", value)


def _check_default_state(plugin: str, handler: DefaultHandler) -> None:
    """A default state is shown as a JSON object (``unknown``) and, with a ``state_type``, comes back
    from a snapshot equal: checked on the initial state, as a plugin's state class is."""
    from ._event import converter

    try:
        initial = handler.initial()
        shown = converter.unstructure(initial)
    except Exception as exc:
        raise PluginError(f"{plugin}: the default handler's initial() must make the initial default state: "
                          f"{exc!r}") from None
    if not isinstance(shown, dict):
        raise PluginError(f"{plugin}: the default handler's state must be shown as a JSON object (an attrs class "
                          f"or a mapping), not {shown!r}")
    if handler.state_type is not None:
        _check_round_trip(plugin, "the default state", handler.state_type, initial,
                          lambda exc: f"the default state does not survive a cattrs round trip as "
                                      f"{handler.state_type!r} ({_reason(exc)}): snapshots store it that way")


def _check_api(name: str, plugin: Any) -> None:
    """A plugin declaring ``HERALD_API`` gets that plugin API or is refused, in one line."""
    wanted = getattr(plugin, "HERALD_API", None)
    if wanted is None or wanted == API_VERSION:
        return
    raise PluginError(f"plugin {name!r} needs Herald plugin API {wanted!r} (its HERALD_API); this Herald offers "
                      f"API {API_VERSION!r}: install a release of one made for the other")


def available_plugins() -> dict[str, str]:
    """Entry-point name -> ``module`` for every plugin installed."""
    found: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def _load(name: str) -> tuple[str, Any]:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name in eps:
        return name, eps[name].load()
    # Not an installed plugin's name: a module (``streaks``, ``mypkg.hooks``), or ``module:attribute``.
    module, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name) and module[len(exc.name):][:1] in ("", "."):
            known = ", ".join(sorted(eps)) or "none"
            raise PluginError(f"unknown plugin {name!r}: neither an installed plugin's name (installed: {known}) "
                              f"nor a module importable here (a module path such as mypkg.hooks, or "
                              f"module:attribute)") from None
        raise PluginError(f"cannot import plugin {name!r}: {exc}") from exc
    except ImportError as exc:
        raise PluginError(f"cannot import plugin {name!r}: {exc}") from exc
    if attr:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginError(f"cannot load plugin {name!r}: module {module!r} has no {attr!r}") from None
    return module.rsplit(".", 1)[-1] if not attr else attr, obj


class PluginHost:
    """The enabled plugins, registered with pluggy and resolved for dispatch."""

    def __init__(self, config: Config, plugins: Sequence[tuple[str, Any]]) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for ep in entry_points(group=HOOKSPECS_GROUP):
            self.pm.add_hookspecs(ep.load())
        for name, plugin in plugins:
            if self.pm.has_plugin(name):
                raise PluginError(f"plugin {name!r} is enabled twice")
            _check_api(name, plugin)
            self.pm.register(plugin, name=name)
        for _name, specs in self.each("herald_add_hookspecs"):
            if specs is not None:
                self.pm.add_hookspecs(specs)
        self.pm.check_pending()
        self.names: list[str] = [name for name, _ in plugins]
        self.state_types: dict[str, type | None] = {}
        #: Plugin name -> the no-argument callable making its initial state.
        self.state_factories: dict[str, Callable[[], Any]] = {}
        #: Plugin name -> its state's version (plugins with a state only) and, if declared, its
        #: ``migrate(unstructured, version) -> unstructured`` for states of older versions.
        self.state_versions: dict[str, int] = {}
        self.state_migrations: dict[str, Callable[[Any, int], Any]] = {}
        self.timer_handlers: dict[str, Callable] = {}
        self.executors: dict[type, Callable] = {}
        self.routes: dict[str, Route] = {}
        self.loaders: dict[str, Loader] = {}
        #: What handles events of types no plugin claims (see :meth:`_resolve_default`).
        self.default: DefaultRoute
        self._resolve()

    @classmethod
    def from_config(cls, config: Config) -> "PluginHost":
        """Load the plugins the configuration selects (all installed by default)."""
        names = config.plugins if config.plugins is not None else list(available_plugins())
        return cls(config, [_load(name) for name in names])

    @classmethod
    def from_objects(cls, config: Config, plugins: Iterable[Any]) -> "PluginHost":
        """Register plugin objects (usually modules) directly, e.g. in tests."""
        pairs = []
        for plugin in plugins:
            if isinstance(plugin, tuple):
                pairs.append(plugin)
            elif isinstance(plugin, ModuleType):
                name = plugin.__name__
                parts = name.split(".")
                # plugins.fitness.hooks -> fitness
                pairs.append((parts[1] if parts[0] == "plugins" and len(parts) > 1 else parts[-1], plugin))
            else:
                pairs.append((getattr(plugin, "name", type(plugin).__name__), plugin))
        return cls(config, pairs)

    def each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a hook on every plugin separately (in registration order), keeping who answered what."""
        results = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            args = {name: kwargs[name] for name in impl.argnames}
            results.append((impl.plugin_name, impl.function(**args)))
        return results

    def _resolve(self) -> None:
        cfg = self.config
        for name, state_type in self.each("herald_state_type"):
            if state_type is not None:
                _check_state_type(name, state_type)
            self.state_types[name] = state_type
        self.state_factories = {name: self.state_types.get(name) or _no_state for name in self.names}
        self._resolve_versions()
        for name, handler in self.each("herald_timer_handler", config=cfg):
            if handler is not None:
                _check_callable(name, "herald_timer_handler", handler)
                self.timer_handlers[name] = handler
        for name, executors in self.each("herald_effect_executors", config=cfg):
            for effect_type, execute in (executors or {}).items():
                if not isinstance(effect_type, type):
                    raise PluginError(f"{name}: herald_effect_executors maps effect classes, not {effect_type!r}")
                _check_callable(name, f"the executor of {effect_type.__name__}", execute)
                if effect_type in self.executors:
                    raise PluginError(f"{name}: an executor for {effect_type.__name__} exists already")
                self.executors[effect_type] = execute
        for name, types in self.each("herald_event_types", config=cfg):
            factory = self.state_factories[name]
            for event_type in types or ():
                _check_event_type(name, event_type)
                route = Route(name, event_type, factory)
                for type_name in (event_type.name, *event_type.aliases):
                    other = self.routes.get(type_name)
                    if other is not None:
                        raise PluginError(
                            f"event type {type_name!r} is claimed by both {other.plugin!r} and {name!r}"
                        )
                    self.routes[type_name] = route

        for name, loaders in self.each("herald_loaders", config=cfg):
            for loader in loaders or ():
                if not isinstance(loader, Loader) or not loader.name:
                    raise PluginError(f"{name}: herald_loaders must give engine.Loader values with a name, not {loader!r}")
                _check_callable(name, f"loader {loader.name!r}", loader.apply)
                if loader.name in self.loaders:
                    raise PluginError(f"loader {loader.name!r} is provided by both "
                                      f"{self.loaders[loader.name].plugin!r} and {name!r}")
                self.loaders[loader.name] = attrs.evolve(loader, plugin=name)
        self.default = self._resolve_default()

    def _resolve_default(self) -> DefaultRoute:
        """At most one enabled plugin claims the default handler; if none does, Herald's bundled one
        (counting events by type on their actors) is registered, so that a replacement needs no setting."""
        claims = [(name, handler) for name, handler in self.each("herald_default_handler", config=self.config)
                  if handler is not None]
        if len(claims) > 1:
            raise PluginError(f"the default handler (for event types no plugin claims) is claimed by "
                              f"{' and '.join(repr(name) for name, _ in claims)}: enable only one of them")
        if not claims:
            self.pm.register(_default, name=_default.NAME)
            [(name, handler)] = [(n, h) for n, h in self.each("herald_default_handler", config=self.config)
                                 if h is not None]
            bundled = True
        else:
            [(name, handler)] = claims
            bundled = False
        if not isinstance(handler, DefaultHandler):
            raise PluginError(f"{name}: herald_default_handler must give an engine.DefaultHandler, not {handler!r}")
        _check_callable(name, "the default handler", handler.handler)
        _check_callable(name, "the default handler's initial", handler.initial)
        _check_default_state(name, handler)
        return DefaultRoute(name, handler.handler, handler.initial, handler.state_type, bundled)

    def _resolve_versions(self) -> None:
        """Each state's version (``herald_state_version``, 1 by default) and migration (``herald_migrate_state``)."""
        self.state_versions = {name: 1 for name, state_type in self.state_types.items() if state_type is not None}
        for name, version in self.each("herald_state_version"):
            if self.state_types.get(name) is None:
                raise PluginError(f"{name}: herald_state_version without herald_state_type: only a state has a version")
            if type(version) is not int or version < 1:
                raise PluginError(f"{name}: herald_state_version must return an int of at least 1, not {version!r}")
            self.state_versions[name] = version
        for impl in self.pm.hook.herald_migrate_state.get_hookimpls():
            name = impl.plugin_name
            if self.state_types.get(name) is None:
                raise PluginError(f"{name}: herald_migrate_state without herald_state_type: there is no state to migrate")
            if self.state_versions[name] == 1:
                raise PluginError(f"{name}: herald_migrate_state with state version 1: declare herald_state_version "
                                  f"(2 or more), the version the migration brings older states to")
            self.state_migrations[name] = _migration(impl)

    def origin_of(self, type_name: str) -> Origin:
        """Where events of a type may come from: a declared type's origin; ``herald.*`` (the engine's
        own) internal; any other type public (the public routes accept and count it)."""
        route = self.routes.get(type_name)
        if route is not None:
            return route.type.origin
        return Origin.INTERNAL if type_name.startswith(_RESERVED) else Origin.PUBLIC

    def event_types(self, plugin: str) -> list[EventType]:
        seen: dict[str, EventType] = {}
        for route in self.routes.values():
            if route.plugin == plugin:
                seen.setdefault(route.type.name, route.type)
        return list(seen.values())

"""Virtual actors: one per key, created on first use, no task of their own."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["Actor", "MANY"]


class _Many:
    """The marker of an actor holding the states of several plugins (in a dict)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MANY"


#: ``Actor.plugin`` when the actor holds the states of several plugins: ``Actor.state`` is then a dict.
MANY: Any = _Many()


_NONE: Mapping[str, Any] = MappingProxyType({})


class Actor:
    """The state Herald holds for one key (usually a user).

    An actor holds one state per plugin. Most actors hold one plugin's state only: it sits
    on the actor as is (``plugin`` names the plugin, ``state`` is the state), a pointer hop
    and a dict (~180 bytes) less per actor than a dict of one entry; with several plugins,
    ``plugin`` is :data:`MANY` and ``state`` a dict by plugin name. Read them through
    :meth:`get` and ``states`` (read-only), change them through :meth:`put` and :meth:`drop`
    (the engine's hot paths read the slots directly). ``timers`` holds the pending timers
    (managed by :class:`engine._timers.TimerQueue`: one timer as is, several in a dict);
    ``unknown`` is the default handler's state (what it keeps of events of types no plugin
    claims; the bundled one counts them by type). Both stay ``None`` until used,
    which keeps an idle actor small. ``offset`` is the actor's clock: its event time is
    ``wall + offset`` (None before its first event; see :mod:`engine._clock`).
    """

    __slots__ = ("key", "plugin", "state", "timers", "unknown", "offset")

    def __init__(self, key: str) -> None:
        self.key = key
        self.plugin: Any = None
        self.state: Any = None
        self.timers: Any = None
        self.unknown: Any = None
        self.offset: float | None = None

    @property
    def states(self) -> Mapping[str, Any]:
        """Every plugin's state on this actor, by plugin name: a read-only mapping (an
        assignment to it raises, rather than being lost; change states with :meth:`put`)."""
        held = self.plugin
        if held is None:
            return _NONE
        if held is MANY:
            return MappingProxyType(self.state)
        return MappingProxyType({held: self.state})

    def get(self, plugin: str, default: Any = None) -> Any:
        """``plugin``'s state on this actor, or ``default``."""
        held = self.plugin
        if held == plugin:
            return self.state
        if held is MANY:
            return self.state.get(plugin, default)
        return default

    def has(self, plugin: str) -> bool:
        held = self.plugin
        return held == plugin or (held is MANY and plugin in self.state)

    def put(self, plugin: str, state: Any) -> None:
        """Set ``plugin``'s state."""
        held = self.plugin
        if held is None or held == plugin:
            self.plugin, self.state = plugin, state
        elif held is MANY:
            self.state[plugin] = state
        else:
            self.plugin, self.state = MANY, {held: self.state, plugin: state}

    def drop(self, plugin: str) -> bool:
        """Forget ``plugin``'s state; False if there was none."""
        held = self.plugin
        if held == plugin:
            self.plugin = self.state = None
            return True
        if held is MANY and plugin in self.state:
            states = self.state
            del states[plugin]
            if len(states) == 1:
                ((self.plugin, self.state),) = states.items()
            return True
        return False

    def __repr__(self) -> str:
        return f"Actor({self.key!r}, plugins={sorted(self.states)})"

"""The plugin contract (docs/plugins.md) is checked when a plugin registers, with a clear PluginError."""

from __future__ import annotations

from datetime import datetime

import attrs
import pytest

from engine import Config, EventType, Loader, PluginError, PluginHost, hookimpl


def host(*plugins):
    config = Config(durability="memory")
    return PluginHost.from_objects(config, [(f"p{i}", p) for i, p in enumerate(plugins)])


def plugin(**hooks):
    """A plugin object whose hooks return the given values."""
    class P:
        pass

    for name, value in hooks.items():
        setattr(P, name, staticmethod(hookimpl(specname=name)(lambda value=value: value)))
    return P()


@attrs.frozen
class Good:
    n: int = 0
    at: datetime | None = None


class NotAttrs:
    pass


@attrs.frozen
class NeedsArgs:
    n: int


@attrs.define(eq=False)
class NoEquality:
    n: int = 0


def handler(state, event):
    return state, ()


@pytest.mark.parametrize("state_type, message", [
    (NotAttrs, "must return an attrs class"),
    (NeedsArgs, "must make the initial state"),
    (NoEquality, "comes back from a cattrs round trip"),
])
def test_a_state_type_that_snapshots_could_not_restore_is_refused(state_type, message):
    with pytest.raises(PluginError, match=message):
        host(plugin(herald_state_type=state_type))
    host(plugin(herald_state_type=Good))  # the right shape registers


@pytest.mark.parametrize("types, message", [
    (["not an EventType"], "must give engine.EventType values"),
    ([EventType("", handler)], "1 to 100 characters"),
    ([EventType("x" * 101, handler)], "1 to 100 characters"),
    ([EventType("herald.mine", handler)], "Herald's own"),
    ([EventType("ok", handler, aliases=("herald.alias",))], "Herald's own"),
    ([EventType("ok", "not callable")], "handler of 'ok' must be callable"),
    ([EventType("ok", handler, validate=3)], "validate step of 'ok' must be callable"),
])
def test_event_types_are_checked(types, message):
    with pytest.raises(PluginError, match=message):
        host(plugin(herald_event_types=types))


def test_two_plugins_cannot_claim_one_type_or_loader():
    with pytest.raises(PluginError, match="claimed by both"):
        host(plugin(herald_event_types=[EventType("t", handler)]), plugin(herald_event_types=[EventType("t", handler)]))
    loader = Loader("lines", lambda table, body, first: None)
    with pytest.raises(PluginError, match="provided by both"):
        host(plugin(herald_loaders=[loader]), plugin(herald_loaders=[loader]))
    with pytest.raises(PluginError, match="must be callable"):
        host(plugin(herald_loaders=[Loader("broken", None)]))


def test_timer_handlers_and_executors_are_checked():
    with pytest.raises(PluginError, match="herald_timer_handler must be callable"):
        host(plugin(herald_timer_handler="nope"))
    with pytest.raises(PluginError, match="maps effect classes"):
        host(plugin(herald_effect_executors={"Notify": handler}))

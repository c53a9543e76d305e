"""The plugin contract (docs/plugins.md) is checked when a plugin registers, with a clear PluginError."""

from __future__ import annotations

from datetime import datetime, timezone

import attrs
import pytest

from engine import Config, EventType, Loader, PluginError, hookimpl
from engine.host import PluginHost


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


# -- friendlier checks: warnings for mutable states, cattrs failures by field, plain module names -------------


class Opaque:
    """A class cattrs knows nothing about."""

    def __eq__(self, other):
        return isinstance(other, Opaque)


@attrs.frozen
class HoldsOpaque:
    n: int = 0
    thing: Opaque = attrs.field(factory=Opaque)


def test_a_cattrs_failure_names_the_field_and_the_types_that_work():
    with pytest.raises(PluginError) as refused:
        host(plugin(herald_state_type=HoldsOpaque))
    message = str(refused.value)
    assert "p0: HoldsOpaque.thing (typed Opaque" in message and "Register a structure hook" not in message
    assert "frozensets" in message and "nested attrs classes" in message


@attrs.define
class Unfrozen:
    n: int = 0


@attrs.frozen
class Containers:
    tags: set[str] = attrs.field(factory=set)
    items: list[int] = attrs.field(factory=list)
    index: dict[str, int] = attrs.field(factory=dict)
    seen: frozenset[str] = frozenset()
    pairs: tuple[int, ...] = ()


@attrs.frozen
class ReadOnly:
    from typing import Mapping as _Mapping

    index: _Mapping[str, int] = attrs.field(factory=dict)  # declared read-only: copied on write


def test_mutable_states_are_warned_about_by_plugin_class_and_field(caplog):
    with caplog.at_level("WARNING", logger="herald.plugins"):
        host(plugin(herald_state_type=Unfrozen), plugin(herald_state_type=Containers))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4, warnings
    assert "plugin p0: state class Unfrozen is not frozen" in warnings[0] and "@attrs.frozen" in warnings[0]
    assert [w.split(",")[0] for w in warnings[1:]] == [
        "plugin p1: Containers.tags is a set", "plugin p1: Containers.items is a list",
        "plugin p1: Containers.index is a dict"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="herald.plugins"):
        host(plugin(herald_state_type=Good), plugin(herald_state_type=ReadOnly))
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


async def test_a_raising_handler_points_to_validate(caplog):
    from engine.testing import Simulation

    def broken(state, event):
        raise KeyError("amount")

    with caplog.at_level("ERROR", logger="herald"):
        Simulation([("p0", plugin(herald_event_types=[EventType("pay", broken)]))]).apply(
            {"type": "pay", "key": "u1", "timestamp": "2021-02-28T16:00:00Z"})
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "plugin p0" in record.getMessage() and "EventType's validate step" in record.getMessage()


def test_plugins_by_a_plain_module_name(tmp_path, monkeypatch):
    (tmp_path / "mystreaks.py").write_text(
        "from engine import EventType, hookimpl\n\n"
        "@hookimpl\ndef herald_event_types(config):\n    return [EventType('streak.logged', lambda s, e: (s, ()))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = PluginHost.from_config(Config(durability="memory", plugins=["mystreaks"]))
    assert plugins.names == ["mystreaks"] and plugins.origin_of("streak.logged") is not None
    with pytest.raises(PluginError, match=r"unknown plugin 'nostreaks': neither an installed plugin's name "
                                          r"\(installed: .*fitness.*\) nor a module importable here"):
        PluginHost.from_config(Config(durability="memory", plugins=["nostreaks"]))
    (tmp_path / "brokenstreaks.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(PluginError, match="cannot import plugin 'brokenstreaks'.*not_a_module_anywhere"):
        PluginHost.from_config(Config(durability="memory", plugins=["brokenstreaks"]))


@attrs.frozen
class Stamped:
    at: datetime = datetime(2021, 2, 28, tzinfo=timezone.utc)


def test_a_state_round_trips_as_a_snapshot_stores_it():
    """Through JSON bytes, as a snapshot does: an initial datetime survives, a timedelta is named."""
    from datetime import timedelta

    host(plugin(herald_state_type=Stamped))

    @attrs.frozen
    class Waits:
        wait: timedelta = timedelta(minutes=5)

    with pytest.raises(PluginError, match=r"Waits.wait \(typed timedelta, initially .*a duration as seconds"):
        host(plugin(herald_state_type=Waits))

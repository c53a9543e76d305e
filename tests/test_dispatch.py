"""Dispatch: plugin discovery through entry points, routing, unknown types, failures."""

import logging
import subprocess
import sys

import pytest

from engine import Config, EventType, PluginError, hookimpl
from engine.host import Engine, PluginHost
from engine.testing import Simulation

T = "2021-02-28T16:00:00Z"

ECHO_PLUGIN = '''
import attrs
from engine import EventType, Notify, hookimpl

@attrs.frozen
class Count:
    n: int = 0

def ping(state, event):
    return attrs.evolve(state, n=state.n + 1), (Notify("http://x/echo", {"n": state.n + 1}, event.id),)

@hookimpl
def herald_state_type():
    return Count

@hookimpl
def herald_event_types():
    return [EventType("ping", ping, aliases=("PING",))]
'''


@pytest.fixture
def echo_dist(tmp_path, monkeypatch):
    """Install a tiny third-party plugin, 'echo', found only through its entry point."""
    (tmp_path / "herald_echo.py").write_text(ECHO_PLUGIN)
    info = tmp_path / "herald_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: herald-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[herald]\necho = herald_echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


async def test_entry_point_plugin_is_loaded_and_routed(echo_dist, autojump_clock):
    config = Config(plugins=["echo", "fitness"])
    host = PluginHost.from_config(config)
    assert host.names == ["echo", "fitness"]
    assert host.routes["ping"].plugin == "echo" and host.routes["PING"].plugin == "echo"
    async with Simulation(config=config) as sim:
        sim.apply({"type": "ping", "key": "k", "timestamp": T})
        sim.apply({"type": "PING", "key": "k", "timestamp": T})
        assert [n.payload["n"] for n in sim.notifications] == [1, 2]
        assert sim.actor_view("k")["states"] == {"echo": {"n": 2}}


def test_herald_plugins_command_lists_entry_point_plugins(echo_dist):
    out = subprocess.run(
        [sys.executable, "-m", "server", "plugins"],
        capture_output=True, text=True, env={"PYTHONPATH": str(echo_dist), "COLUMNS": "200", "PATH": ""},
        check=True,
    ).stdout
    assert "echo" in out and "herald_echo" in out and "ping" in out
    assert "fitness" in out and "training_program_finished" in out


def test_unknown_plugin_name_is_a_clear_error():
    with pytest.raises(PluginError, match="unknown plugin 'nope'.*fitness"):
        PluginHost.from_config(Config(plugins=["nope"]))


def test_two_plugins_claiming_one_type_conflict():
    class A:
        @hookimpl
        def herald_event_types(self):
            return [EventType("same", lambda s, e: (s, ()))]

    with pytest.raises(PluginError, match="'same' is claimed by both 'a' and 'b'"):
        PluginHost(Config(), [("a", A()), ("b", A())])


def test_unknown_types_are_accepted_counted_and_warned_once(caplog):
    engine = Engine(PluginHost(Config(), []))
    caplog.set_level(logging.WARNING, "herald.engine")
    for type_ in ("x", "x", "y", "x"):
        engine.apply(engine.parse({"type": type_, "key": "k", "timestamp": T}))
    engine.apply(engine.parse({"type": "x", "key": "other", "timestamp": T}))
    assert engine.actor("k").unknown == {"x": 3, "y": 1}
    assert engine.actor_view("other")["unknown"] == {"x": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "'x'" in warnings[0] and "'y'" in warnings[1]
    assert b'herald_events_accepted_total{type="_unknown"} 5.0' in engine.metrics.render()


def test_a_failing_handler_leaves_state_unchanged_and_is_counted(caplog):
    calls = []

    def boom(state, event):
        calls.append(event.data)
        if event.data.get("fail"):
            raise RuntimeError("bug")
        return (state or 0) + 1, ()

    class P:
        @hookimpl
        def herald_event_types(self):
            return [EventType("t", boom)]

    engine = Engine(PluginHost(Config(), [("p", P())]))
    engine.apply(engine.parse({"type": "t", "key": "k", "timestamp": T}))
    engine.apply(engine.parse({"type": "t", "key": "k", "timestamp": T, "data": {"fail": True}}))
    engine.apply(engine.parse({"type": "t", "key": "k", "timestamp": T}))
    assert engine.actor("k").states["p"] == 2
    assert len(calls) == 3
    assert "failed on event" in caplog.text
    assert b'herald_handler_errors_total{type="t"} 1.0' in engine.metrics.render()


def test_plugin_validation_errors_surface_as_invalid_events():
    from engine import InvalidEvent
    from plugins.fitness import hooks as fitness

    engine = Engine(PluginHost.from_objects(Config(), [fitness]))
    with pytest.raises(InvalidEvent) as info:
        engine.apply(engine.parse({"type": "training_program_started", "user_id": "u", "time_stamp": "2021-02-28 16:00:00"}))
    assert info.value.field == "training_program_id"
    assert b'herald_events_rejected_total{code="missing",type="training_program_started"} 1.0' in engine.metrics.render()


def test_events_of_one_key_are_applied_in_arrival_order():
    seen = []

    class P:
        @hookimpl
        def herald_event_types(self):
            return [EventType("t", lambda s, e: (seen.append(e.data["n"]), ()))]

    engine = Engine(PluginHost(Config(), [("p", P())]))
    for n in range(1000):
        engine.apply(engine.parse({"type": "t", "key": f"k{n % 7}", "timestamp": T, "data": {"n": n}}))
    assert seen == list(range(1000))


async def test_a_crashing_source_is_restarted_with_backoff(autojump_clock):
    import trio

    from engine import Config, hookimpl
    from engine.host import Herald, PluginHost

    runs = []

    class Flaky:
        @hookimpl
        def herald_sources(self, context):
            async def source():
                runs.append(trio.current_time())
                if len(runs) < 4:
                    raise RuntimeError("boom")
                await trio.sleep_forever()

            return [source]

    config = Config(durability="memory")
    herald = Herald(config, PluginHost.from_objects(config, [("flaky", Flaky())]))
    async with herald.running():
        await herald.wait_ready()
        await trio.sleep(30)
    gaps = [round(b - a) for a, b in zip(runs, runs[1:])]
    assert gaps == [1, 2, 4]


def test_an_actor_holds_one_plugins_state_inline_and_several_in_a_dict():
    from engine._actor import MANY, Actor

    actor = Actor("k")
    assert actor.states == {} and actor.get("a") is None and not actor.has("a") and not actor.drop("a")
    actor.put("a", 1)
    assert (actor.plugin, actor.state) == ("a", 1) and actor.states == {"a": 1} and actor.has("a")
    actor.put("a", 2)
    actor.put("b", 3)
    assert actor.plugin is MANY and actor.states == {"a": 2, "b": 3} and actor.get("b") == 3
    with pytest.raises(TypeError):
        actor.states["c"] = 4  # read-only: states change through put
    assert not actor.has("c") and actor.get("c", "none") == "none"
    assert actor.drop("a") and (actor.plugin, actor.state) == ("b", 3)
    assert actor.drop("b") and actor.states == {} and actor.plugin is None

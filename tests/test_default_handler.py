"""The default handler (events of types no plugin claims) is a plugin: Herald's bundled one counts them,
a third-party plugin may replace it, and at most one claims it."""

from __future__ import annotations

import logging
import types

import attrs
import orjson
import pytest

from engine import Config, DefaultHandler, EventType, Notify, PluginError, hookimpl
from engine.host import PluginHost
from engine.testing import Simulation
from plugins.fitness import hooks as fitness

T = "2021-03-01T07:00:00Z"
TOKEN = "a-default-handler-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _event(type_: str, key: str = "u1", at: str = T, **extra) -> dict:
    return {"type": type_, "key": key, "timestamp": at, **extra}


# -- a replacement: keeps the last three unclaimed types of an actor, and notifies the first of each ----------

@attrs.frozen
class Kept:
    types: tuple[str, ...] = ()


def keep(state: Kept, event):
    effects = () if event.type in state.types else (
        Notify(payload={"key": event.key, "type": event.type}, idempotency_key=f"unclaimed:{event.id}"),)
    return Kept((*state.types, event.type)[-3:]), effects


quarantine = types.ModuleType("quarantine")
quarantine.HERALD_API = "1"


@hookimpl
def _quarantine_default_handler(config):
    return DefaultHandler(keep, initial=Kept, state_type=Kept, description="keeps the last three unclaimed types")


quarantine.herald_default_handler = _quarantine_default_handler


# -- the bundled default ---------------------------------------------------------------------------------

async def test_with_no_claim_the_bundled_default_counts_unclaimed_types(autojump_clock, caplog):
    caplog.set_level(logging.WARNING, "herald.engine")
    async with Simulation([fitness]) as sim:
        assert sim.engine.plugins.default.bundled and sim.engine.plugins.default.plugin == "herald.default"
        assert sim.engine.plugins.names == ["fitness"]  # the bundled default is no listed plugin
        for type_ in ("ping", "ping", "pong"):
            sim.apply(_event(type_))
        assert sim.actor_view("u1")["unknown"] == {"ping": 2, "pong": 1}
        assert sim.actor_view("u1")["states"] == {} and sim.effects == []
    assert [r.getMessage() for r in caplog.records if "'ping'" in r.getMessage()] == [
        "no plugin handles event type 'ping'; such events go to the default handler (counting them on their actors)"]


async def test_the_bundled_defaults_snapshot_is_what_it_always_was(autojump_clock):
    """On disk, the counts sit in the actor's ``unknown`` place as a plain object, and nothing new is written."""
    from engine import _snapshot

    async with Simulation([fitness]) as sim:
        sim.apply(_event("ping"))
        doc = orjson.loads(_snapshot.encode(_snapshot.capture(sim.engine, 1)))
    [(key, states, timers, unknown, _offset)] = doc["actors"]
    assert (key, states, timers, unknown) == ("u1", {}, None, {"ping": 1})
    assert "default_handler" not in doc


# -- a replacement ---------------------------------------------------------------------------------------

async def test_a_replacement_claims_unclaimed_types_in_a_simulation(autojump_clock):
    env = {"HERALD_NOTIFY_URL": "http://127.0.0.1:9/unclaimed"}
    async with Simulation([fitness, quarantine], env=env) as sim:
        default = sim.engine.plugins.default
        assert (default.plugin, default.bundled) == ("quarantine", False)
        assert not sim.engine.plugins.pm.has_plugin("herald.default")  # replaced, not beside it
        for type_ in ("a", "b", "a", "c", "d"):
            sim.apply(_event(type_))
        sim.apply(_event("training_program_started", data={"program_id": "p1", "duration_days": 3}))
        view = sim.actor_view("u1")
        assert view["unknown"] == {"types": ["a", "c", "d"]}  # the replacement's state, not counts
        assert set(view["states"]) == {"fitness"}  # claimed types still go to their plugin
        notes = [n for n in sim.notifications if n.url.endswith("/unclaimed")]
        assert [n.payload["type"] for n in notes] == ["a", "b", "c", "d"]  # "a" twice: once
        assert sim.engine.metrics.hot.accepted["_unknown"] == 5


async def test_a_replacement_claims_unclaimed_types_over_http(tmp_path):
    async with app_client_of([quarantine], tmp_path) as (herald, client):
        for type_ in ("ping", "ping", "pong"):
            assert (await client.post("/v1/event", json=_event(type_), headers=AUTH)).status_code == 202
        body = (await client.get("/v1/actors/u1", headers=AUTH)).json()
        assert body["unknown"] == {"types": ["ping", "ping", "pong"]} and body["states"] == {}
        await herald.snapshot()
    # Restarted from its snapshot, the replacement's states come back as its state_type.
    async with app_client_of([quarantine], tmp_path) as (herald, client):
        assert herald.engine.actor("u1").unknown == Kept(("ping", "ping", "pong"))
        assert (await client.get("/v1/actors/u1", headers=AUTH)).json()["unknown"] == {"types": ["ping", "ping", "pong"]}


def app_client_of(plugins, tmp_path):
    from web.testing import app_client

    return app_client(plugins, admin_token=TOKEN, durability="batch", data_dir=str(tmp_path),
                      notify_url="http://127.0.0.1:9/unclaimed")


async def test_a_default_state_kept_by_another_default_handler_is_not_restored(tmp_path, caplog):
    """Counts the bundled default kept mean nothing to a replacement: not restored (said once), and back."""
    caplog.set_level(logging.WARNING, "herald.snapshot")
    async with app_client_of([fitness], tmp_path) as (herald, client):
        assert (await client.post("/v1/event", json=_event("ping"), headers=AUTH)).status_code == 202
        await herald.snapshot()
    async with app_client_of([quarantine], tmp_path) as (herald, client):
        assert herald.engine.actor("u1").unknown is None
        await herald.snapshot()
    [line] = [r.getMessage() for r in caplog.records if "default states" in r.getMessage()]
    assert "1 actors" in line and "Herald's bundled counting" in line and "plugin quarantine" in line
    async with app_client_of([fitness], tmp_path) as (herald, client):
        assert (await client.post("/v1/event", json=_event("pong"), headers=AUTH)).status_code == 202
        assert herald.engine.actor("u1").unknown == {"pong": 1}


# -- the checks at registration ----------------------------------------------------------------------------

def test_two_plugins_claiming_the_default_handler_are_refused_in_one_line():
    other = types.ModuleType("other")
    other.herald_default_handler = _quarantine_default_handler
    with pytest.raises(PluginError) as refused:
        PluginHost(Config(), [("quarantine", quarantine), ("other", other)])
    assert str(refused.value) == ("the default handler (for event types no plugin claims) is claimed by "
                                  "'quarantine' and 'other': enable only one of them")


def test_a_plugin_may_decline_the_default_handler():
    class Maybe:
        @hookimpl
        def herald_default_handler(self, config):
            return None

        @hookimpl
        def herald_event_types(self):
            return [EventType("mine", lambda s, e: (s, ()))]

    host = PluginHost(Config(), [("maybe", Maybe())])
    assert host.default.bundled


def test_a_default_handler_must_be_a_default_handler():
    bad = types.ModuleType("bad")
    bad.herald_default_handler = hookimpl(lambda: (lambda s, e: (s, ())))
    with pytest.raises(PluginError, match=r"^bad: herald_default_handler must give an engine.DefaultHandler"):
        PluginHost(Config(), [("bad", bad)])


@pytest.mark.parametrize(("handler", "message"), [
    (DefaultHandler(keep, initial=lambda: 3), r"^odd: the default handler's state must be shown as a JSON object"),
    (DefaultHandler(keep, initial=Kept, state_type=int), r"^odd: the default state does not survive a cattrs round"),
])
def test_a_default_state_that_cannot_be_shown_or_restored_is_refused(handler, message):
    odd = types.ModuleType("odd")
    odd.herald_default_handler = hookimpl(lambda: handler)
    with pytest.raises(PluginError, match=message):
        PluginHost(Config(), [("odd", odd)])


# -- the plugin API's version -------------------------------------------------------------------------------

def test_a_plugin_needing_another_api_version_is_refused_in_one_line():
    import engine

    future = types.ModuleType("future")
    future.HERALD_API = "2"
    with pytest.raises(PluginError) as refused:
        PluginHost(Config(), [("future", future)])
    assert str(refused.value) == ("plugin 'future' needs Herald plugin API '2' (its HERALD_API); this Herald offers "
                                  f"API {engine.API_VERSION!r}: install a release of one made for the other")
    assert PluginHost(Config(), [("quarantine", quarantine)]).names == ["quarantine"]  # "1": accepted


def test_the_bundled_plugins_declare_the_api_they_use():
    import engine

    host = PluginHost.from_config(Config())
    assert host.names and all(host.pm.get_plugin(name).HERALD_API == engine.API_VERSION for name in host.names)


# -- the names that moved ----------------------------------------------------------------------------------

def test_the_names_hosts_and_kafka_use_moved_and_still_resolve_with_a_warning():
    import engine
    import engine.host
    import engine.kafka

    with pytest.warns(DeprecationWarning, match=r"engine\.Herald is deprecated: import it from engine\.host"):
        assert engine.Herald is engine.host.Herald
    with pytest.warns(DeprecationWarning, match=r"import it from engine\.kafka"):
        from engine import KafkaSource
    assert KafkaSource is engine.kafka.KafkaSource
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        engine.Nope  # noqa: B018
    assert "Herald" not in engine.__all__ and "Herald" not in vars(engine)


@pytest.mark.parametrize(("plugins", "shown"), [
    ([fitness], "Events of types no plugin handles: ping × 2."),
    ([quarantine], "Events of types no plugin handles (the default handler, quarantine)"),
])
async def test_the_console_shows_the_default_state_of_either(plugins, shown):
    from web.testing import app_client

    async with app_client(plugins) as (herald, client):
        for _ in range(2):
            assert (await client.post("/v1/event", json=_event("ping"))).status_code == 202
        page = await client.get("/ui/actors/u1")
        assert page.status_code == 200 and shown in page.text
        assert ("&#34;ping&#34;" in page.text or "&quot;ping&quot;" in page.text or '"ping"' in page.text) \
            == (plugins == [quarantine])  # a replacement's state, as its JSON

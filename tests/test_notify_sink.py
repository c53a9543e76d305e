"""A Notify without a URL goes to the configured notify sink: in a simulation, and delivered by a running Herald."""

from __future__ import annotations

import attrs
import pytest
import trio

from engine import EventType, Notify, hookimpl
from engine._event import converter
from engine.testing import Receiver, Simulation
from web.testing import app_client


@attrs.frozen
class Seen:
    count: int = 0


class Pinger:
    """A plugin that notifies on every ``ping``, naming no URL."""

    @hookimpl
    def herald_state_type(self):
        return Seen

    @hookimpl
    def herald_event_types(self, config):
        def ping(state, event):
            return Seen(state.count + 1), (Notify(payload={"n": state.count + 1}, idempotency_key=f"ping:{event.id}"),)

        return [EventType("ping", ping)]


def test_the_url_is_optional_and_the_positional_form_stays():
    assert Notify(payload={"a": 1}, idempotency_key="k").url is None
    assert Notify("http://127.0.0.1:9/n", {"a": 1}, "k") == Notify(url="http://127.0.0.1:9/n", payload={"a": 1},
                                                                     idempotency_key="k")
    with pytest.raises(TypeError, match="payload and an idempotency_key"):
        Notify("http://127.0.0.1:9/n")
    unaddressed = Notify(payload={"a": [1]}, idempotency_key="k")  # as the outbox journals and restores it
    assert converter.structure(converter.unstructure(unaddressed), Notify) == unaddressed


async def test_a_simulation_addresses_it_to_the_configured_sink(autojump_clock):
    async with Simulation([("pinger", Pinger())], env={"HERALD_NOTIFY_URL": "http://127.0.0.1:9/hook"}) as sim:
        sim.apply({"type": "ping", "key": "u1", "timestamp": "2021-02-28T16:00:00Z"})
        [note] = sim.notifications
    assert (note.url, note.payload) == ("http://127.0.0.1:9/hook", {"n": 1})
    async with Simulation([("pinger", Pinger())]) as sim:  # the default sink: this server's /v1/notify
        sim.apply({"type": "ping", "key": "u1", "timestamp": "2021-02-28T16:00:00Z"})
        assert sim.notifications[0].url == "http://127.0.0.1:8000/v1/notify"


async def test_a_running_herald_delivers_it_to_the_configured_sink():
    async with Receiver.running() as receiver:
        async with app_client([("pinger", Pinger())], notify_url=receiver.url + "/sink") as (_, client):
            response = await client.post("/v1/event", json={"type": "ping", "key": "u1", "id": "e1",
                                                            "timestamp": "2021-02-28T16:00:00Z"})
            assert response.status_code == 202
            with trio.fail_after(5):
                [request] = await receiver.wait_for(1)
    assert (request["path"], request["json"], receiver.keys) == ("/sink", {"n": 1}, ["ping:e1"])


def test_a_cluster_partition_addresses_it_to_the_configured_sink():
    """A cluster node's partition emits through a path of its own (its outbox), which addresses it too."""
    from datetime import datetime, timezone

    from engine import Config, Event
    from engine.host import Herald, PluginHost
    from engine._cluster import Shard, encode_event
    from tests.test_cluster_parts import _Message

    config = Config(cluster="127.0.0.1:9", notify_url="http://127.0.0.1:9/hook")
    shard = Shard(Herald(config, PluginHost.from_objects(config, [("pinger", Pinger())])).cluster, 0)
    stamp = datetime(2021, 2, 28, 16, tzinfo=timezone.utc)
    shard.apply(_Message(encode_event(Event("e1", "ping", "u1", stamp, {}, stamp)), 0, int(stamp.timestamp() * 1000)))
    [note] = shard.pending.values()
    assert (note.url, note.payload, note.idempotency_key) == ("http://127.0.0.1:9/hook", {"n": 1}, "ping:e1")

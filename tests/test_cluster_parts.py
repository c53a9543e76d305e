"""The cluster's parts that need no broker: partitioning, the events' encoding, the nodes directory,
the settings, and what a non-cluster Herald keeps (nothing of the cluster)."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone

import pytest

from engine import Config, ConfigError, Event, InvalidEvent
from engine._cluster import _Directory, decode_event, encode_event, partition_of, topics_of

UTC = timezone.utc


def test_a_key_always_goes_to_the_same_partition_whoever_computes_it():
    assert partition_of("user-42", 6) == zlib.crc32(b"user-42") % 6
    spread = {partition_of(f"u{i}", 6) for i in range(100)}
    assert spread == set(range(6))
    assert 0 <= partition_of("\udc80 odd", 6) < 6  # a lone surrogate (JSON allows it) still has a partition


def test_an_event_survives_the_events_topic_exactly():
    at = datetime(2021, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
    event = Event("e1", "app_launch", "u1", at, {"device_id": "d", "n": [1, 2.5, None]}, at)
    back = decode_event(encode_event(event))
    assert back == event


def test_an_event_the_topic_cannot_hold_is_refused_before_it_is_produced():
    at = datetime(2021, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidEvent) as caught:
        encode_event(Event("e1", "t", "u1", at, {"n": 2**70}, at))
    assert caught.value.field == "data" and caught.value.code == "unstorable"


def test_the_directory_knows_the_freshest_live_owner_of_each_partition():
    directory = _Directory(ttl=3.0)
    directory.heard({"node": "a", "url": "http://a", "at": 100.0, "partitions": [0, 1]})
    directory.heard({"node": "b", "url": "http://b", "at": 101.0, "partitions": [1, 2]})
    assert directory.owner(0, 101.5) == ("a", "http://a")
    assert directory.owner(1, 101.5) == ("b", "http://b")  # the later announcement wins during a move
    assert directory.owner(3, 101.5) is None
    assert directory.owner(0, 104.0) is None  # a's announcement is older than the ttl: a is gone
    directory.heard({"node": "b", "url": "http://b", "at": 90.0, "partitions": []})  # out of order: ignored
    assert directory.owner(2, 101.5) == ("b", "http://b")
    directory.heard({"node": "b", "left": True})
    assert directory.owner(2, 101.5) is None
    for bad in ({"url": "no node"}, [1, 2], "x", {"node": "c", "at": "soon"}, {"node": "c", "partitions": 5},
                {"node": "c", "partitions": ["x"]}):
        directory.heard(bad)  # not an announcement Herald writes: ignored, never raised
    assert set(directory.live(101.5)) == {"a"}
    directory.heard({"node": "z", "url": "http://z", "at": 10**12, "partitions": [0]})  # from the "future"
    directory.heard({"node": "a", "url": "http://a", "at": __import__("time").time() + 0.5, "partitions": [0]})
    assert directory.owner(0, __import__("time").time()) is not None


def test_cluster_settings_are_read_and_checked():
    config = Config.from_env({"HERALD_CLUSTER": "127.0.0.1:9092", "HERALD_CLUSTER_PARTITIONS": "12",
                              "HERALD_CLUSTER_REPLICAS": "off", "HERALD_NODE_ID": "n-1"})
    assert (config.cluster, config.cluster_partitions, config.cluster_replicas, config.node_id) == \
        ("127.0.0.1:9092", 12, False, "n-1")
    assert config.data_file("x.db") is None  # a node keeps nothing on disk: Kafka holds it
    for env, value in [("HERALD_CLUSTER_PARTITIONS", "0"), ("HERALD_CLUSTER_REPLICAS", "maybe"),
                       ("HERALD_CLUSTER_NAME", "a b"), ("HERALD_CLUSTER_SESSION_TIMEOUT", "-1")]:
        with pytest.raises(ConfigError, match=env):
            Config.from_env({env: value})
    assert topics_of("prod") == ("prod.events", "prod.changelog", "prod.nodes")


def test_serve_refuses_bulk_loads_in_a_cluster(tmp_path):
    import argparse

    from engine import cli

    data = tmp_path / "c.data"
    data.write_text("")
    parser = argparse.ArgumentParser()
    cli.add_serve_arguments(parser)
    args = parser.parse_args(["--cluster", "127.0.0.1:9092", "--load", f"customers={data}"])
    with pytest.raises(ConfigError, match="--load is not supported in a cluster"):
        cli.serve_config(args)


class _Message:
    """What a shard reads of a Kafka message: its value, offset, timestamp (ms) and headers."""

    def __init__(self, value: bytes, offset: int, ms: int, headers: list | None = None, partition: int = 0) -> None:
        self._value, self._offset, self._ms, self._headers, self._partition = value, offset, ms, headers, partition

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list | None:
        return self._headers

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)


def _shard(retention: float = 86_400.0):
    from engine.host import Herald, PluginHost
    from engine._cluster import Shard

    config = Config(cluster="127.0.0.1:9", dedupe_retention=retention)
    return Shard(Herald(config, PluginHost.from_objects(config, [])).cluster, 0)


def _feed(shard, *pairs: tuple[str, str], at: float) -> None:
    """Apply ``(key, id)`` events to the shard as its partition's next messages, ``at`` (POSIX seconds)."""
    for key, event_id in pairs:
        stamp = datetime.fromtimestamp(at, UTC)
        value = encode_event(Event(event_id, "ping", key, stamp, {}, stamp))
        shard.apply(_Message(value, shard.offset, int(at * 1000)))


def test_a_shard_drops_repeats_of_a_key_and_id_only_and_its_checkpoint_keeps_them_apart():
    import orjson

    from engine._cluster import Shard

    t0 = datetime(2021, 3, 1, 8, tzinfo=UTC).timestamp()
    shard = _shard()
    # Keys of one partition: the same id from another key is another event.
    _feed(shard, ("mallory", "order-1001"), ("alice", "order-1001"), ("mallory", "order-1001"), at=t0)
    assert (shard.applied, shard.duplicates) == (2, 1)
    assert shard.engine.actors["alice"].unknown == {"ping": 1}
    again = _shard()
    assert again.restore(orjson.loads(Shard.encode(*shard.capture()))) == []
    _feed(again, ("alice", "order-1001"), ("mallory", "order-1001"), ("bob", "order-1001"), at=t0 + 1)
    assert (again.applied, again.duplicates) == (1, 2) and again.engine.actors["bob"].unknown == {"ping": 1}


def test_a_checkpoint_written_before_the_scoping_restores_its_ids_for_every_key():
    """Main (60f1492) checkpointed ids without their key (tests/data/make_unkeyed_ids.py): a repeat for
    every key, as they were when accepted, until they leave the window."""
    from pathlib import Path

    import orjson

    doc = orjson.loads((Path(__file__).parent / "data" / "unkeyed_ids_checkpoint.json").read_bytes())
    t0 = float(doc["wall"])
    shard = _shard(retention=60.0)
    shard.restore(doc)
    assert shard.engine.actors["mallory"].unknown == {"ping": 1}
    _feed(shard, ("mallory", "order-1001"), ("alice", "order-1001"), ("alice", "order-7"), at=t0 + 1)
    assert (shard.applied, shard.duplicates) == (1, 2)
    # The old id expired; ids accepted since are scoped by key.
    _feed(shard, ("alice", "order-8"), ("alice", "order-1001"), ("bob", "order-7"), ("alice", "order-7"), at=t0 + 61)
    assert (shard.applied, shard.duplicates) == (4, 3)

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
    directory.heard({"url": "no node"})  # malformed: ignored
    assert set(directory.live(101.5)) == {"a"}


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

"""The cluster's formats, without a broker: what a node of the previous version wrote to the events
topic and the changelog (recorded in tests/golden/changelog1-events1) restores with today's code,
every record says its format, and a stalled node's late checkpoint never wins over the new owner's.

The restores go through the node's own code (``Cluster._restore``, ``_read_checkpoint``,
``checkpoint``) over :class:`Log`, a stand-in for the broker that keeps records in memory.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from engine import Config, Event
from engine.host import Herald, PluginHost
from engine import _changelog as changelog
from engine import _formats as formats
from engine._cluster import EVENT_HEADERS, Shard, encode_event, event_format, partition_of
from plugins.customers import hooks as customers
from plugins.fitness import hooks as fitness

GOLDEN = Path(__file__).parent / "golden"
UTC = timezone.utc


class Record:
    """A Kafka message as the node reads it (a confluent-kafka Message's methods)."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None,
                 headers: list | None = None, ms: int = 0, error: Any = None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._headers, self._ms, self._error = value, key, headers, ms, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)

    def error(self) -> Any:
        return self._error


class Log:
    """A broker's partitions in memory: a consumer that reads them by offset and a producer that
    appends (delivery reports served on ``flush``), as far as a node's restore and checkpoint use them."""

    def __init__(self) -> None:
        self.topics: dict[tuple[str, int], list[Record]] = {}
        self._at: tuple[str, int, int] | None = None
        self._reports: list[tuple[Any, Record]] = []

    def records(self, topic: str, partition: int) -> list[Record]:
        return self.topics.setdefault((topic, partition), [])

    def append(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None,
               headers: list | None = None, ms: int | None = None) -> Record:
        records = self.records(topic, partition)
        offset = records[-1].offset() + 1 if records else 0
        record = Record(topic, partition, offset, value, key, headers, int(time.time() * 1000) if ms is None else ms)
        records.append(record)
        return record

    # -- the consumer ---------------------------------------------------------------------------------

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        records = self.records(tp.topic, tp.partition)
        return (records[0].offset(), records[-1].offset() + 1) if records else (0, 0)

    def assign(self, tps: list) -> None:
        self._at = (tps[0].topic, tps[0].partition, tps[0].offset)

    def unassign(self) -> None:
        self._at = None

    def consume(self, count: int = 1, timeout: float = 0) -> list[Record]:
        from confluent_kafka import KafkaError

        assert self._at is not None
        topic, partition, position = self._at
        records = [r for r in self.records(topic, partition) if r.offset() >= position][:count]
        if not records:
            high = self.get_watermark_offsets(type("TP", (), {"topic": topic, "partition": partition}))[1]
            return [Record(topic, partition, high, None, error=KafkaError(KafkaError._PARTITION_EOF))]
        self._at = (topic, partition, records[-1].offset() + 1)
        return records

    def poll(self, timeout: float = 0) -> Record:
        return self.consume(1)[0]

    def close(self) -> None:
        pass

    # -- the producer ---------------------------------------------------------------------------------

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = 0,
                on_delivery: Any = None, headers: list | None = None) -> None:
        record = self.append(topic, partition, value, key, headers)
        if on_delivery is not None:
            self._reports.append((on_delivery, record))

    def flush(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for report, record in reports:
            report(None, record)
        return 0


def node(partitions: int, log: Log, plugins: list[Any] = (fitness,)) -> Any:
    """A cluster node's :class:`engine._cluster.Cluster` (not running: no broker) writing to ``log``."""
    config = Config(cluster="127.0.0.1:9", cluster_partitions=partitions, notify_url="http://127.0.0.1:9/hook")
    cluster = Herald(config, PluginHost.from_objects(config, list(plugins))).cluster
    cluster._changelog = log
    return cluster


# -- the previous version's records -------------------------------------------------------------------------

def golden_log() -> tuple[Log, dict[str, Any]]:
    """The records a node of the previous version wrote (events and changelog), and what it answered."""
    made = GOLDEN / "changelog1-events1"
    raw = json.loads((made / "records.json").read_text())
    log = Log()
    unb64 = lambda v: None if v is None else base64.b64decode(v)  # noqa: E731
    for name, topic in (("events", "herald.events"), ("changelog", "herald.changelog")):
        for p, records in raw[name].items():
            for r in records:
                log.records(topic, int(p)).append(Record(
                    topic, int(p), r["offset"], unb64(r["value"]), unb64(r["key"]),
                    [(k, unb64(v)) for k, v in r["headers"]] or None, r["timestamp"]))
    return log, json.loads((made / "answers.json").read_text())


def views_of(shards: list[Shard], keys: list[str]) -> dict[str, Any]:
    found = {}
    for key in keys:
        for shard in shards:
            if key in shard.engine.actors:
                found[key] = orjson.loads(orjson.dumps(shard.engine.actor_view(key)))
    return found


def catch_up(shard: Shard, log: Log) -> None:
    """Apply what follows the shard's offset in its events partition, as the consumer would."""
    for record in log.records("herald.events", shard.number):
        if record.offset() >= shard.offset:
            shard.apply(record)


def same_as_answered(views: dict[str, Any], answers: dict[str, Any]) -> None:
    assert set(views) == set(answers["actors"])
    for key, old in answers["actors"].items():
        new = views[key]
        for plugin, state in old["states"].items():
            for field, value in state.items():
                assert new["states"][plugin].get(field) == value, (key, plugin, field)
        assert new["timers"] == old["timers"] and new["unknown"] == old["unknown"], key


async def test_the_previous_versions_checkpoints_and_events_restore_with_everything():
    """A node of today takes over the partitions of a killed node of the previous version (format 1:
    no format header, markers without an epoch): it restores each partition's last checkpoint, applies
    the events after it, and holds every actor, timer and undelivered effect the old node answered."""
    log, answers = golden_log()
    assert not any(r.headers() and dict(r.headers()).get("format") for rs in log.topics.values() for r in rs)
    cluster = node(answers["partitions"], log, [fitness, customers])
    offsets: dict[int, int] = {}
    for p in range(answers["partitions"]):
        await cluster._restore(log, p, offsets)
    shards = list(cluster.shards.values())
    covered = {p: s.offset for p, s in cluster.shards.items()}
    assert covered[0] > 0 and covered[1] > 0  # from the checkpoints ...
    for shard in shards:
        catch_up(shard, log)
    assert any(s.offset > covered[s.number] + 1 for s in shards)  # ... and events after them
    same_as_answered(views_of(shards, list(answers["actors"])), answers)
    # The congratulation the old node could not deliver is this node's to deliver now.
    pending = [key for s in shards for key in s.pending]
    assert len(pending) == answers["health"]["effects_pending"] == 1 and pending[0].startswith("fitness:")
    # Each partition is claimed (format 2) above the old markers' epoch (none: 0), pointing at the
    # checkpoint restored (a node of the previous version follows ``last_end`` there).
    for p in range(answers["partitions"]):
        claim = log.records("herald.changelog", p)[-1]
        headers = dict(claim.headers())
        assert headers["herald"] == b"claim" and headers["format"] == b"2" and headers["epoch"] == b"1"
        assert int(headers["last_end"]) == cluster._last_end[p]
        assert dict(log.records("herald.changelog", p)[int(headers["last_end"])].headers())["herald"] == b"end"


def test_every_old_event_message_decodes_to_what_the_old_node_held():
    """The whole events topic of the previous version, replayed without a checkpoint, gives the same."""
    log, answers = golden_log()
    cluster = node(answers["partitions"], log, [fitness, customers])
    shards = [Shard(cluster, p) for p in range(answers["partitions"])]
    for shard in shards:
        catch_up(shard, log)
        assert shard.applied == sum(1 for r in log.records("herald.events", shard.number) if r.value())
    same_as_answered(views_of(shards, list(answers["actors"])), answers)


# -- formats on every record ----------------------------------------------------------------------------------

def test_event_messages_say_their_format_and_a_newer_one_stops_the_node():
    at = datetime(2021, 3, 1, 8, tzinfo=UTC)
    value = encode_event(Event("e1", "app_launch", "u1", at, {}, at))
    assert event_format(Record("t", 0, 0, value, headers=EVENT_HEADERS)) == formats.EVENT_FORMAT == 1
    assert event_format(Record("t", 0, 0, value)) == 1  # the previous version's: no header
    log = Log()
    cluster = node(1, log)
    shard = cluster.shards[0] = Shard(cluster, 0)
    cluster._apply([Record("herald.events", 0, 0, value, headers=[("format", b"2")], ms=1000)])
    assert shard.offset == 0 and shard.applied == 0  # not applied, not skipped over
    assert "event at offset 0 of partition 0 has format 2; this Herald reads formats 1" in cluster.failure
    assert cluster.herald.refusal() is not None


def test_a_marker_of_a_newer_format_is_refused_not_misread():
    value, headers = changelog.marker_record("c1", 0, 1, 5, 1, -1)
    seen = changelog.Seen(1, {k: v for k, v in headers} | {"format": b"9"}, value)
    with pytest.raises(formats.NewerFormat, match="format 9; this Herald reads formats 1, 2: a newer Herald"):
        changelog.ranked([seen])


# -- a zombie's late checkpoint -------------------------------------------------------------------------------

def launches(log: Log, keys: list[str], partitions: int, start: float) -> None:
    for i, key in enumerate(keys):
        at = datetime.fromtimestamp(start + i, UTC)
        log.append("herald.events", partition_of(key, partitions), encode_event(Event(f"e-{key}", "app_launch", key,
                   at, {}, at)), key.encode(), EVENT_HEADERS, int((start + i) * 1000))


async def test_a_zombies_late_checkpoint_never_wins_over_the_new_owners():
    """A owns the partition and checkpoints; B takes it over (A stalled) and checkpoints further on;
    then A's checkpoint, in flight when it stalled, lands last in the changelog. C restores B's."""
    log = Log()
    t0 = datetime(2021, 3, 1, 8, tzinfo=UTC).timestamp()
    a, b, c = node(1, log), node(1, log), node(1, log)
    launches(log, [f"u{i}" for i in range(5)], 1, t0)
    await a._restore(log, 0, {})
    assert a._owner_epochs[0] == 1
    catch_up(a.shards[0], log)
    await a.checkpoint(a.shards[0])  # A at epoch 1, input offset 5
    launches(log, [f"v{i}" for i in range(3)], 1, t0 + 10)
    catch_up(a.shards[0], log)  # A applies 3 more (offset 8), then stalls with a checkpoint in flight
    await b._restore(log, 0, {})
    assert b._owner_epochs[0] == 2 and b.shards[0].offset == 5
    launches(log, [f"w{i}" for i in range(4)], 1, t0 + 20)
    catch_up(b.shards[0], log)
    await b.checkpoint(b.shards[0])  # B at epoch 2, input offset 12
    await a.checkpoint(a.shards[0])  # A's late one: epoch 1, offset 8, the changelog's last marker
    last = [r for r in log.records("herald.changelog", 0) if dict(r.headers())["herald"] == b"end"][-1]
    assert orjson.loads(last.value())["epoch"] == 1 and orjson.loads(last.value())["offset"] == 8
    await c._restore(log, 0, {})
    shard = c.shards[0]
    assert shard.offset == 12 and c._owner_epochs[0] == 3
    assert set(shard.engine.actors) == set(b.shards[0].engine.actors)
    # (It would not matter to the actors had the zombie covered more: the epoch decides.)
    assert changelog.ranked([changelog.seen_of(r) for r in log.records("herald.changelog", 0)])[0][0].epoch == 2


async def test_markers_without_an_epoch_restore_in_log_order_beside_newer_ones():
    """A rolling upgrade: a node of the previous version takes a partition over from a new one and
    checkpoints (no epoch): its later checkpoint is the one restored, not the new node's earlier one."""
    log = Log()
    t0 = datetime(2021, 3, 1, 8, tzinfo=UTC).timestamp()
    new = node(1, log)
    launches(log, ["u1", "u2"], 1, t0)
    await new._restore(log, 0, {})
    catch_up(new.shards[0], log)
    await new.checkpoint(new.shards[0])  # epoch 1, offset 2
    launches(log, ["u3"], 1, t0 + 5)
    old = Shard(new, 0)  # (a shard of its own, applying what the old node would)
    catch_up(old, log)
    first = log.records("herald.changelog", 0)[-1].offset()
    # What the previous version writes: its pieces and marker, without format or epoch.
    body = Shard.encode(*old.capture())
    log.append("herald.changelog", 0, body, b"old:0", [("herald", b"chunk"), ("ckpt", b"old"), ("last_end", str(first).encode())])
    log.append("herald.changelog", 0, orjson.dumps({"ckpt": "old", "first": first + 1, "pieces": 1, "offset": 3}),
               b"old:end", [("herald", b"end"), ("ckpt", b"old"), ("last_end", str(first).encode())])
    log.append("herald.changelog", 0, None, b"x:0", [("herald", b"tombstone"), ("last_end", str(first + 2).encode())])
    again = node(1, log)
    await again._restore(log, 0, {})
    assert again.shards[0].offset == 3 and "u3" in again.shards[0].engine.actors
    assert again._owner_epochs[0] == 2  # above the claim and the marker it inherits epoch 1 from


async def test_a_node_that_stalled_while_restoring_skips_the_partition_and_stays_up():
    """No claim from a node that is no longer the owner: the partition is left to the heal, and the node
    does not fail (a restore that raised would stop it for good)."""
    log = Log()
    cluster = node(1, log)
    launches(log, ["u1"], 1, datetime(2021, 3, 1, 8, tzinfo=UTC).timestamp())
    cluster._stalled_for = 30.0
    await cluster._restore(log, 0, {})
    assert cluster.shards == {} and cluster.failure is None
    assert not log.records("herald.changelog", 0)  # nothing written


async def test_an_incomplete_newest_checkpoint_falls_back_to_an_older_complete_one(caplog):
    log = Log()
    t0 = datetime(2021, 3, 1, 8, tzinfo=UTC).timestamp()
    a = node(1, log)
    launches(log, ["u1"], 1, t0)
    await a._restore(log, 0, {})
    catch_up(a.shards[0], log)
    await a.checkpoint(a.shards[0])
    launches(log, ["u2"], 1, t0 + 1)
    catch_up(a.shards[0], log)
    await a.checkpoint(a.shards[0])
    records = log.records("herald.changelog", 0)
    newest = next(r for r in reversed(records) if dict(r.headers())["herald"] == b"end")
    records.remove(next(r for r in records if r.offset() == orjson.loads(newest.value())["first"]))  # compacted
    b = node(1, log)
    await b._restore(log, 0, {})
    assert b.shards[0].offset == 1 and b.failure is None
    assert "is incomplete; trying an older one" in caplog.text


async def test_on_the_broker_a_late_checkpoint_of_an_earlier_owner_is_not_restored(kafka_bootstrap, caplog):
    """The same on the dev broker, through the node's Kafka reads: an owner checkpoints; a checkpoint of
    an earlier epoch (a stalled node's, covering less) lands after it as the changelog's last marker;
    the next node restores the owner's, and says which it skipped."""
    import logging

    from confluent_kafka import Producer

    caplog.set_level(logging.INFO, logger="herald.cluster")
    config = Config(cluster=kafka_bootstrap, durability="memory", cluster_partitions=1)

    def herald() -> Herald:
        return Herald(config, PluginHost.from_objects(config, [fitness]))

    events = [{"id": f"e{i}", "type": "app_launch", "key": f"u{i}", "timestamp": "2021-03-01T08:00:00Z"}
              for i in range(12)]
    first = herald()
    async with first.running():
        await first.wait_ready()
        cluster = first.cluster
        with trio.fail_after(30):
            while 0 not in cluster.shards or not cluster.shards[0].ready:
                await trio.sleep(0.05)
        await first.accept([first.engine.parse(e) for e in events[:4]], applied=True)
        shard = cluster.shards[0]
        zombie, stalled_at = Shard.encode(*shard.capture()), shard.offset  # what a stalled earlier owner held
        await first.accept([first.engine.parse(e) for e in events[4:]], applied=True)
        await cluster.checkpoint(shard)
        epoch, covered = cluster._owner_epochs[0], shard.offset
        assert epoch >= 1 and covered >= stalled_at + 8
        # The stalled node's checkpoint lands now, with the epoch before this owner's.
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(config.cluster_name + ".changelog", zombie, b"z:0", partition=0,
                         headers=changelog.piece_headers("z", -1))
        producer.flush(10)
        reader = await trio.to_thread.run_sync(cluster._reader)
        piece_at = (await trio.to_thread.run_sync(cluster._read, reader, 0, 0, 10**6, changelog.seen_of))[-1].at
        await trio.to_thread.run_sync(reader.close)
        value, headers = changelog.marker_record("z", piece_at, 1, stalled_at, epoch - 1, -1)
        producer.produce(config.cluster_name + ".changelog", value, b"z:end", partition=0, headers=headers)
        assert producer.flush(10) == 0
        shard.dirty = False  # nothing more to checkpoint on the way out: the zombie's stays the last marker
    second = herald()
    async with second.running():
        await second.wait_ready()
        with trio.fail_after(30):
            while 0 not in second.cluster.shards:
                await trio.sleep(0.05)
        restored = second.cluster.shards[0]
        assert restored.offset == covered and len(restored.engine.actors) == 12
        assert second.cluster._owner_epochs[0] == epoch + 1
    assert any("not the later one(s)" in r.getMessage() for r in caplog.records)

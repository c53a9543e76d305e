"""A cluster of Herald processes over Kafka: every node accepts, each partition's actors live on one.

The events topic is the cluster's journal. A node that accepts an event
produces it to the partition of its key (``crc32(key) % partitions``) and
answers 202 once the broker acknowledged it. Every node is also a worker in
one consumer group over that topic: for each partition it owns it runs a
:class:`Shard`, an engine of its own applying that partition's messages in
offset order.

Replays are exact because everything a shard's engine reads comes from the
log: an event's arrival is its message's timestamp (never less than the one
before it), and the wall only moves with messages. Between events the owner
produces *ticks* (empty messages) to its partitions that hold timers, and a
tick fires what fell due by its timestamp. A new owner that re-applies a
partition's tail therefore fires every timer where the old owner fired it,
and makes the same effects, with the same idempotency keys.

A shard's actors, timers, clocks, recent event ids and undelivered effects
are checkpointed to the changelog topic (same partition number), with the
input offset they cover, every ``cluster_checkpoint`` seconds and when the
partition is revoked. A node that gets a partition restores the latest
checkpoint, resumes the events topic at its offset, and delivers its pending
effects again: a takeover may repeat a delivery (same key), never lose one.
Restore never depends on compaction: it reads the changelog's tail (and the
checkpoint the last message names), takes the checkpoint of the newest owner
(the highest owner epoch, then input offset: a stalled node's late
checkpoint never wins, see :mod:`engine._changelog`), then reads its pieces.

Every record carries its format in a ``format`` header (see
:mod:`engine._formats`); during a rolling upgrade nodes of the previous version
read what this one writes, and this one reads theirs.

Nodes announce themselves (their URL and the partitions they serve) on the
nodes topic every second; queries for an actor another node owns are sent
there (see :meth:`Cluster.owner_url`). Plugins' sources run on the owner of
partition 0 only, and move with it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import orjson
import trio

from . import _changelog as changelog
from . import _snapshot as snapshots
from ._clients import KafkaClients
from ._config import ConfigError
from ._dedupe import IdWindow, Recent
from ._effects import Effect
from ._engine import Engine
from ._event import Event, InvalidEvent, converter
from ._formats import EVENT_FORMAT, EVENT_FORMATS, NewerFormat, record_format
from ._formats import CHECKPOINT_SNAPSHOT_FORMAT
from ._plugin_error import PluginError
from ._states import UnencodableState
from ._journal import JournalError
from ._kafka import _kafka, ensure_topics, is_fatal, kafka_settings
from ._logs import FieldsLog
from ._metrics import Metrics
from ._outbox import effect_key
from ._refusal import Refusal

__all__ = ["Cluster", "Shard", "partition_of", "topics_of"]

log = logging.getLogger("herald.cluster")
UTC = timezone.utc

#: Changelog messages are cut into pieces of at most this many bytes (Kafka's default limit is 1 MB).
CHUNK_BYTES = 900_000
#: Events consumed per poll.
BATCH = 500
#: A partition is checkpointed once this many messages followed its last checkpoint, whatever they were.
TAIL = 10_000
#: The broker is taken for unreachable (events refused) once no announcement was delivered for this long
#: (seconds; at least 2.5 announcement intervals).
UNREACHABLE_AFTER = 3.0
#: A heal that ends within this many seconds of the previous one counts as the same fault again.
HEAL_WINDOW = 30.0
#: Once healed, a node that was not given a partition within this many seconds accepts anyway.
REJOIN_WAIT = 5.0

def exit_process(line: str) -> None:
    """The default end of a node whose Kafka clients cannot be healed: one line, exit status 70, so that
    its supervisor restarts it (threads stuck in librdkafka cannot hold the exit back)."""
    logging.shutdown()
    sys.stderr.write(f"herald: {line}\n")
    sys.stderr.flush()
    os._exit(70)


class _Healing:
    """A heal under way: why, since when, in which phase (healing: new clients; restoring: rejoined)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.started = time.monotonic()
        self.phase = "healing"
        #: When the new consumer subscribed (monotonic), for the wait for an assignment.
        self.subscribed: float | None = None


class _ClientFailed(Exception):
    """A consumer outside the group (the replicas', the directory's) met a fatal error: it is made again."""


class _Outside:
    """The heal state of a consumer outside the group: why it failed (None: it works), since when, how
    many faults came one after another (each within :data:`HEAL_WINDOW` of the last heal), heals so far."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since = 0.0
        self.faults = 0
        self.healed_at = -math.inf
        self.heals = 0

    def to_json(self) -> dict[str, Any]:
        return {"healing": self.reason, "heals": self.heals,
                "seconds": None if self.reason is None else round(time.monotonic() - self.since, 3)}


def partition_of(key: str, partitions: int) -> int:
    """The partition (and so the shard, and the node) that holds ``key``'s actor."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def topics_of(name: str) -> tuple[str, str, str]:
    """The events, changelog and nodes topics of the cluster ``name``."""
    return f"{name}.events", f"{name}.changelog", f"{name}.nodes"


#: The headers of an event message: its format (the value is format 1's JSON array, so a node of the
#: previous version, which reads no header, reads it too).
EVENT_HEADERS = [("format", str(EVENT_FORMAT).encode())]


def encode_event(event: Event) -> bytes:
    """An event as the events topic holds it (what the journal keeps of it, as one JSON array)."""
    try:
        return orjson.dumps([event.id, event.type, event.key, event.at, event.data,
                             event.received_at.timestamp()])
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent("data", "unstorable", f"event {event.id!r} cannot be journaled: {exc}") from None


def _piece_of(message: Any, ckpt: bytes) -> bool:
    """Whether a changelog message is a piece of checkpoint ``ckpt``."""
    headers = dict(message.headers() or ())
    return headers.get("herald") == b"chunk" and headers.get("ckpt") == ckpt


def event_format(message: Any) -> int:
    """The format of an event message (absent header: 1); :class:`NewerFormat` for one this Herald
    cannot read (it stops the node rather than skip an event it would lose)."""
    headers = message.headers()
    return record_format(dict(headers) if headers else {}, EVENT_FORMATS,
                         f"the event at offset {message.offset()} of partition {message.partition()}")


def decode_event(value: bytes) -> Event:
    """An event message's value (format 1) as the event."""
    id_, type_, key, ts, data, received = orjson.loads(value)
    return Event(id_, type_, key, datetime.fromtimestamp(ts, UTC), data, datetime.fromtimestamp(received, UTC))


class Shard:
    """One partition's actors: an engine whose wall is the partition's log.

    ``apply`` takes the partition's messages in offset order; ``capture``
    and ``restore`` move the shard through the changelog.
    """

    def __init__(self, cluster: "Cluster", number: int, *, replica: bool = False) -> None:
        self.cluster = cluster
        self.number = number
        #: A replica applies the partition for reads only: its effects reach local views, nothing else.
        self.replica = replica
        #: The node's log, naming this partition (and whether this is its replica) in every record.
        self.log = cluster.log.with_fields(partition=number, **({"replica": True} if replica else {}))
        herald = cluster.herald
        config = herald.config
        #: The wall reading of the last message applied (message timestamps never go back here).
        self.wall = 0.0
        self.engine = Engine(
            herald.plugins, emit=self._emit, record=None, wall=self._read_wall, utcnow=herald.utcnow,
            max_skew=math.inf, lateness=config.allowed_lateness, metrics=cluster.shard_metrics,
            notify_url=config.effective_notify_url, log_fields=self.log.extra,
        )
        self.ids = IdWindow(config.dedupe_retention, config.dedupe_max)
        #: The next offset of the events partition to apply.
        self.offset = 0
        #: Effect key -> effect handed to the outbox and not yet delivered (or dead): checkpointed.
        self.pending: dict[str, Effect] = {}
        self.applied = 0
        self.duplicates = 0
        self.checkpointed_offset = -1
        #: Whether anything but the wall changed since the last checkpoint (ticks that fire nothing are
        #: cheaper to replay than to checkpoint).
        self.dirty = False
        self.checkpoints = 0
        self.last_checkpoint = 0.0
        #: Offset of the events partition's end when the shard was assigned: caught up once past it.
        self.catch_up_to = 0
        self.ready = False
        self.restored_actors = 0
        #: When the partition was assigned (monotonic), and how long restoring and catching up took.
        self.assigned_at = time.monotonic()
        self.restore_seconds = 0.0
        self.lock = trio.Lock()

    def _read_wall(self) -> float:
        return self.wall

    def _emit(self, effect: Effect) -> None:
        herald = self.cluster.herald
        sink = herald.sinks.get(type(effect)) if herald.sinks else None
        if sink is not None:
            # A local view (a read model every node keeps) is fed by the replicas, which see every
            # partition; any other sink (one that acts on the world) by the owner only.
            local = getattr(sink, "local_view", False)
            if (local and (self.replica or not self.cluster.replicas)) or (not local and not self.replica):
                sink.put(effect)
            return
        if self.replica:
            return
        key = effect_key(effect)
        self.pending[key] = effect
        self.cluster.pending_of[key] = self
        herald.outbox.emit(effect)

    def settled(self, key: str) -> None:
        self.pending.pop(key, None)

    def apply(self, message: Any) -> None:
        """Apply one message of the partition: an event, or a tick (no value) that only moves the wall."""
        stamp = message.timestamp()[1] / 1000.0
        if stamp > self.wall:
            self.wall = stamp
        wall = self.wall
        value = message.value()
        engine = self.engine
        if value:
            event_format(message)  # NewerFormat: the caller stops the node, this message unapplied
            try:
                event = decode_event(value)
            except Exception as exc:  # never written by Herald: skip it, loudly, and go on
                self.log.error("partition %d offset %d: not an event (%s); skipped", self.number, message.offset(), exc)
            else:
                if not self.ids.remember(event.key, event.id, wall):  # a repeat of (key, id)
                    self.duplicates += 1
                    self.cluster.herald.metrics.duplicates.inc()
                else:
                    engine.apply(event, wall)
                    self.applied += 1
                    self.dirty = True
        elif engine.fire_ripe(wall):
            self.dirty = True
        self.offset = message.offset() + 1
        if self.offset - self.checkpointed_offset >= TAIL:
            self.dirty = True  # even ticks that fired nothing: keep the tail a takeover replays short

    # -- the changelog --------------------------------------------------------------------

    def capture(self) -> tuple[int, Any, list[tuple[str, Any]], float]:
        """A consistent copy of the shard (taken between two messages, in the trio thread)."""
        pending = [(type(e).__name__, converter.unstructure(e)) for e in self.pending.values()]
        return (self.offset, snapshots.capture(self.engine, self.offset, self.ids.items(), time.time()),
                pending, self.wall)

    @staticmethod
    def encode(offset: int, capture: Any, pending: list, wall: float) -> bytes:
        body = snapshots.encode(capture, CHECKPOINT_SNAPSHOT_FORMAT)  # what a node not yet upgraded reads too
        return orjson.dumps({"offset": offset, "wall": wall, "pending": pending, "snapshot": orjson.Fragment(body)})

    def restore(self, doc: dict[str, Any]) -> list[Effect]:
        """Load a decoded checkpoint into this (empty) shard; return the effects it had not delivered."""
        snapshots.restore(self.engine, doc["snapshot"])
        self.wall = float(doc["wall"])
        self.offset = int(doc["offset"])
        self.checkpointed_offset = self.offset
        self.ids.restore(Recent.of_snapshot(doc["snapshot"]), self.wall)
        kinds = self.cluster.herald.outbox.kinds
        effects = []
        for kind, data in doc.get("pending", ()):
            cls = kinds.get(kind)
            if cls is None:
                self.log.error("partition %d: a pending %s effect has no executor here; dropped", self.number, kind)
                continue
            effects.append(converter.structure(data, cls))
        return effects


class _Directory:
    """Who serves which partition, from the nodes' announcements (the nodes topic)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        #: node id -> (announced at, url, partitions served)
        self.nodes: dict[str, tuple[float, str, frozenset[int]]] = {}

    def heard(self, doc: Any) -> None:
        node = doc.get("node") if isinstance(doc, dict) else None
        if not isinstance(node, str):
            return
        if doc.get("left"):
            self.nodes.pop(node, None)
            return
        try:
            # An announcement from the future would win every election: no later than our own clock.
            at = min(float(doc.get("at", 0.0)), time.time() + 1.0)
            parts = frozenset(int(p) for p in doc.get("partitions", ()))
        except (TypeError, ValueError):
            return  # not an announcement Herald writes: ignored
        known = self.nodes.get(node)
        if known is None or known[0] <= at:
            self.nodes[node] = (at, str(doc.get("url", "")), parts)

    def owner(self, partition: int, now: float) -> tuple[str, str] | None:
        best = None
        for node, (at, url, parts) in self.nodes.items():
            if partition in parts and at > now - self.ttl and (best is None or at > best[0]):
                best = (at, node, url)
        return None if best is None else (best[1], best[2])

    def live(self, now: float) -> dict[str, dict[str, Any]]:
        return {node: {"url": url, "partitions": sorted(parts), "seen": round(now - at, 3)}
                for node, (at, url, parts) in sorted(self.nodes.items()) if at > now - self.ttl}


class Cluster:
    """This node's part in a cluster: the producer, the consumer group, its shards, its announcements."""

    def __init__(self, herald: Any, clients: KafkaClients | None = None, *,
                 give_up: Callable[[str], None] | None = None) -> None:
        #: The :class:`engine.host.Herald` this node runs (its plugins, outbox, sinks, metrics and config).
        self.herald = herald
        #: Makes this node's producers and consumers (a test's may fail on purpose).
        self.clients = clients or KafkaClients()
        #: Ends the process when the clients cannot be healed (a test's records it instead).
        self.give_up = give_up or exit_process
        config = herald.config
        self.bootstrap = config.cluster
        self.name = config.cluster_name
        self.partitions = config.cluster_partitions
        self.events_topic, self.changelog_topic, self.nodes_topic = topics_of(self.name)
        self.node = config.node_id or f"{socket.gethostname()}:{config.port}:{os.getpid()}"
        #: This node's log: every record names the node (a shard's adds its partition).
        self.log = FieldsLog(log, node=self.node)
        self.url = config.node_url or config.self_url
        self.shards: dict[int, Shard] = {}
        #: Whether this node keeps a read replica of every partition (``HERALD_CLUSTER_REPLICAS``).
        self.replicas = config.cluster_replicas
        self.replica_shards: dict[int, Shard] = {}
        self.replica_lag: dict[int, int] = {}
        #: Effect key -> the shard that emitted it (to drop it from that shard's pending effects once delivered).
        self.pending_of: dict[str, Shard] = {}
        #: The shards' engines share one set of metrics, apart from the node's (their gauges are summed here).
        self.shard_metrics = Metrics()
        self.directory = _Directory(ttl=max(3.0, 3 * config.cluster_announce))
        #: The next offset of the nodes topic to read (None: start shortly before its end).
        self._directory_offset: int | None = None
        #: The consumers outside the group, each made again after a fatal error (see :meth:`_keep_outside`).
        self.outside = {"replica": _Outside(), "directory": _Outside()}
        self.rebalances = 0
        self.assigned_at: float | None = None
        self.restored_actors = 0
        self.restore_seconds = 0.0
        self.lag: dict[int, int] = {}
        #: Partitions whose last checkpoint failed for a state that cannot be encoded (/healthz degraded).
        self._unencodable: set[int] = set()
        #: Partition -> changelog offset of its latest checkpoint marker (written or read here).
        self._last_end: dict[int, int] = {}
        #: Partition -> (id, pieces) of its latest checkpoint, whose records the next one tombstones.
        self._last_keys: dict[int, tuple[str, int]] = {}
        #: Partition -> this node's owner epoch for it (one more than any in its changelog when restored):
        #: its checkpoints carry it, so a restore prefers them to an earlier owner's late ones.
        self._owner_epochs: dict[int, int] = {}
        #: Partition -> input offset a checkpoint covers, for the consume thread to commit.
        self._commits: dict[int, int] = {}
        self._closed = trio.Event()
        #: Set (and replaced) whenever shards or replicas applied messages: waiters look again.
        self._progressed = trio.Event()
        #: Whether this node said goodbye on the nodes topic (a failure, or the end).
        self._left = False
        #: Why this node stopped taking events (the broker lost data), or None.
        self.failure: str | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._producer: Any = None
        self._changelog: Any = None
        self._consumer: Any = None
        self._stopping = False
        #: Counts the generations of this node's clients: a fatal error starts the next one, and whatever
        #: an older generation's clients report (or ask for) afterwards is ignored.
        self._epoch = 0
        #: The heal under way (None: none), how many faults came one after another, when the last heal ended.
        self._healing: _Healing | None = None
        self._faults_in_row = 0
        self._healed_at = -math.inf
        self.heals = 0
        #: When the broker last answered (monotonic): a broker that stays silent makes the node refuse.
        self._broker_seen = time.monotonic()
        #: Stall detection: a thread notes the time every 0.1 s; a gap longer than the session timeout means
        #: the whole process was stopped (SIGSTOP, a VM stall) and the group has moved on without it.
        self._alive_at = time.monotonic()
        self._stalled_for: float | None = None
        self._stall_after = config.cluster_session_timeout
        self._nursery: trio.Nursery | None = None
        #: The producers of failed generations, to be dropped by the heal.
        self._retired: list[Any] = []
        self._sources_scope: trio.CancelScope | None = None
        self.singletons = trio.Event()  # set while this node runs the cluster's singletons
        self._singleton_changed = trio.Event()
        self.started = trio.Event()
        self._hot = herald.metrics.hot
        self.shard_metrics.hot = herald.metrics.hot  # events accepted and timers fired count on the node
        self._register_metrics()

    # -- metrics -----------------------------------------------------------------------

    def _register_metrics(self) -> None:
        from prometheus_client import Gauge

        m, r = self.herald.metrics, self.herald.metrics.registry
        m.timers_pending.set_function(lambda: sum(len(s.engine.timers) for s in self.shards.values()))
        m.actors.set_function(lambda: sum(len(s.engine.actors) for s in self.shards.values()))
        m.hot.late = lambda: sum(s.engine.late_events for s in self.shards.values())
        Gauge("herald_cluster_partitions_owned", "Partitions of the events topic this node owns",
              registry=r).set_function(lambda: len(self.shards))
        Gauge("herald_cluster_consumer_lag", "Messages of owned partitions not applied yet",
              registry=r).set_function(lambda: sum(self.lag.values()))
        Gauge("herald_cluster_rebalances", "Partition assignments and revocations seen by this node",
              registry=r).set_function(lambda: self.rebalances)
        Gauge("herald_cluster_restored_actors", "Actors restored from the changelog by this node",
              registry=r).set_function(lambda: self.restored_actors)
        Gauge("herald_cluster_restoring", "Owned partitions still restoring or catching up",
              registry=r).set_function(lambda: sum(not s.ready for s in self.shards.values()))

    # -- what the node looks like from outside ---------------------------------------------

    def engine_for(self, key: str) -> Engine | None:
        """The engine holding ``key``'s actor here: the owned partition's, else its replica's (None if
        this node has neither ready)."""
        p = partition_of(key, self.partitions)
        shard = self.shards.get(p)
        if shard is not None and shard.ready:
            return shard.engine
        replica = self.replica_shards.get(p)
        return replica.engine if replica is not None and replica.ready else None

    def replica_lag_of(self, key: str) -> int:
        """Messages of ``key``'s partition the replica here has not applied yet (as last measured)."""
        return self.replica_lag.get(partition_of(key, self.partitions), 0)

    def owns(self, key: str) -> bool:
        shard = self.shards.get(partition_of(key, self.partitions))
        return shard is not None and shard.ready

    def engines(self) -> list[Engine]:
        """One engine per partition readable here (owned, else replicated): every actor once."""
        found = []
        for p in range(self.partitions):
            shard = self.shards.get(p)
            if shard is None or not shard.ready:
                shard = self.replica_shards.get(p)
            if shard is not None and shard.ready:
                found.append(shard.engine)
        return found

    def owned_engines(self) -> list[Engine]:
        return [s.engine for s in self.shards.values()]

    def owner_url(self, key: str) -> tuple[str, str] | None:
        """``(node, url)`` of the node serving ``key``'s partition (None while nobody does)."""
        return self.directory.owner(partition_of(key, self.partitions), time.time())

    def refusal(self) -> Refusal | None:
        """Why this node refuses events now (None: it accepts); :meth:`Herald.refusal` asks here."""
        if self.failure is not None:
            return Refusal("cluster_failed", f"not accepted: {self.failure}")
        if self._healing is not None:
            what = ("rejoined the group; restoring its partitions" if self._healing.phase == "restoring"
                    else "making new Kafka clients and rejoining the group")
            return Refusal(self._healing.phase, f"not accepted: this node is healing from \"{self._healing.reason}\" "
                                                f"since {time.monotonic() - self._healing.started:.1f} s: {what}")
        if self._stale():
            return Refusal("healing", "not accepted: this node was stalled; it gives up its partitions and heals")
        if self._producer is None:
            return Refusal("joining", "not accepted: the cluster producer is not connected yet")
        silent = time.monotonic() - self._broker_seen
        if silent > max(UNREACHABLE_AFTER, 2.5 * self.herald.config.cluster_announce):
            return Refusal("broker_unreachable", f"not accepted: the broker has not answered for {silent:.0f} s")
        return None

    def claims(self, effect: Effect) -> bool:
        """Whether this node may (still) deliver an effect: it owns the partition that emitted it, in this
        generation of its clients, and it was not stalled meanwhile (the outbox asks before each attempt)."""
        shard = self.pending_of.get(effect_key(effect))
        return shard is not None and self.shards.get(shard.number) is shard and not self._stale()

    def _stale(self) -> bool:
        """Whether the process was stopped for longer than the session timeout (and has not healed since)."""
        return self._stalled_for is not None or time.monotonic() - self._alive_at > self._stall_after

    def health(self) -> dict[str, Any]:
        healing = self._healing
        return {
            "node": self.node,
            "url": self.url,
            "bootstrap": self.bootstrap,
            "topic": self.events_topic,
            "partitions": self.partitions,
            "owned": sorted(self.shards),
            "ready": sorted(p for p, s in self.shards.items() if s.ready),
            "lag": {str(p): n for p, n in sorted(self.lag.items())},
            "rebalances": self.rebalances,
            "checkpoints": sum(s.checkpoints for s in self.shards.values()),
            "restore": {"actors": self.restored_actors, "seconds": round(self.restore_seconds, 3),
                        "restoring": sorted(p for p, s in self.shards.items() if not s.ready)},
            "replicas": {"enabled": self.replicas,
                         "ready": sorted(p for p, r in self.replica_shards.items() if r.ready),
                         "lag": {str(p): n for p, n in sorted(self.replica_lag.items())}},
            "singletons": self.singletons.is_set(),
            "failure": self.failure,
            "healing": None if healing is None else {
                "reason": healing.reason, "phase": healing.phase,
                "seconds": round(time.monotonic() - healing.started, 3)},
            "heals": self.heals,
            "consumers": {name: state.to_json() for name, state in self.outside.items()},
            "nodes": self.directory.live(time.time()),
        }

    # -- accepting: produce, then 202 --------------------------------------------------------

    async def accept(self, events: Sequence[Event], *, applied: bool = False) -> list[bool]:
        """Produce each event to its partition; return once the broker acknowledged them all (repeats
        are dropped by the owning shard, so none is reported here). With ``applied``, also wait until
        this node applied them (its owned partition or its replica): a plugin that accepts, then
        reads, reads its own writes, as in a single process."""
        if not events:
            return []
        refusal = self.refusal()
        if refusal is not None:
            raise JournalError(refusal.reason)
        encoded = [(e.key, encode_event(e)) for e in events]
        done = trio.Event()
        state: dict[str, Any] = {"left": len(encoded), "error": None}
        offsets: dict[int, int] = {}
        token = self._token
        epoch = self._epoch

        def delivered(error: Any, message: Any) -> None:  # in the poll thread
            token.run_sync_soon(settle, error, message.partition(), message.offset())

        def settle(error: Any, partition: int, offset: int) -> None:
            if error is not None:
                if state["error"] is None:
                    state["error"] = error
                if is_fatal(error):
                    self._fault(f"the producer failed: {error.str()}", epoch)
            elif offset > offsets.get(partition, -1):
                offsets[partition] = offset
            state["left"] -= 1
            if state["left"] == 0:
                done.set()

        partitions = self.partitions
        producer = self._producer
        kafka = _kafka()
        for i, (key, value) in enumerate(encoded):
            try:
                self._produce(producer, self.events_topic, value, partition_of(key, partitions), key.encode(),
                              delivered, EVENT_HEADERS)
            except kafka.KafkaException as exc:
                code = exc.args[0].code()
                if code in (kafka.KafkaError._UNKNOWN_PARTITION, kafka.KafkaError._UNKNOWN_TOPIC,
                            kafka.KafkaError.UNKNOWN_TOPIC_OR_PART):
                    self.fail(f"the topic {self.events_topic} lost partitions: {exc.args[0].str()}")
                elif is_fatal(exc.args[0]):
                    self._fault(f"the producer failed: {exc.args[0].str()}", epoch)
                state["left"] -= len(encoded) - i  # those were never queued
                if state["error"] is None:
                    state["error"] = exc.args[0].str()
                if state["left"] == 0:
                    done.set()
                break
        await done.wait()
        if state["error"] is not None:
            raise JournalError(f"the broker did not take the event(s): {state['error']}")
        self._broker_seen = time.monotonic()
        if applied:
            await self._applied_here(offsets)
        return [False] * len(encoded)

    def _readable_offset(self, partition: int) -> int:
        shard = self.shards.get(partition)
        if shard is None or not shard.ready:
            shard = self.replica_shards.get(partition)
        return -1 if shard is None else shard.offset

    async def _applied_here(self, offsets: dict[int, int]) -> None:
        """Wait until this node applied these offsets (bounded: they are durable already)."""
        # Only partitions this node holds (owned, or replicated): with replicas off, others cannot be waited for.
        offsets = {p: o for p, o in offsets.items() if p in self.shards or p in self.replica_shards}
        with trio.move_on_after(self.herald.config.cluster_produce_timeout):
            while any(self._readable_offset(p) <= o for p, o in offsets.items()) and self.failure is None:
                await self._progressed.wait()
            return
        self.log.warning("accepted events were not applied here within %g s (a restore or a rebalance?)",
                    self.herald.config.cluster_produce_timeout)

    def _progress(self) -> None:
        self._progressed.set()
        self._progressed = trio.Event()

    @staticmethod
    def _produce(producer: Any, topic: str, value: bytes | None, partition: int, key: bytes | None,
                 on_delivery: Any, headers: Any = None) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery,
                                 headers=headers)
                return
            except BufferError:  # the local queue is full: serve delivery reports (they free it) and retry
                producer.poll(0.005)

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        config = self.herald.config
        await trio.to_thread.run_sync(ensure_topics, self.bootstrap, [
            (self.events_topic, self.partitions, {}),
            (self.changelog_topic, self.partitions, {"cleanup.policy": "compact"}),
            (self.nodes_topic, 1, {}),
        ], 15, config)
        await trio.to_thread.run_sync(self._check_partitions)
        self._make_producers()
        threading.Thread(target=self._note_time, name="herald-stall-watch", daemon=True).start()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._poll_producer)
            nursery.start_soon(self._listen)
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._checkpoint_loop)
            nursery.start_soon(self._watch_topics)
            nursery.start_soon(self._watch_stalls)
            if self.replicas:
                nursery.start_soon(self._replicate)
            if self.replicas:
                # Ready (for queries and plugins' reads) once every partition is readable here.
                while len(self.replica_shards) < self.partitions or not all(
                        r.ready for r in self.replica_shards.values()):
                    await self._progressed.wait()
            task_status.started()
            self.started.set()
            try:
                while True:
                    await self._consume()
                    if self._stopping or self.failure is not None:
                        break
                    await self._heal()  # a fatal error ended that consumer: new clients, then rejoin
            finally:
                self._stopping = True  # (also ends the stall watch)
                nursery.cancel_scope.cancel()

    def _make_producers(self) -> None:
        """This generation's producers: one for accepted events (and ticks, announcements), one for
        checkpoints. A fatal error either reports starts the next generation (see :meth:`_fault`)."""
        config = self.herald.config
        token, epoch = self._token, self._epoch

        def producer_error(error: Any) -> None:  # in a librdkafka thread
            if is_fatal(error):
                token.run_sync_soon(self._fault, f"the producer failed: {error.str()}", epoch)

        self._producer = self.clients.producer(kafka_settings(config, "producer", {
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
            "message.timeout.ms": int(config.cluster_produce_timeout * 1000), "reconnect.backoff.max.ms": 1000,
            "error_cb": producer_error,
        }))
        # Checkpoints have a producer of their own: flushing one then waits for that checkpoint only, never
        # for the stream of accepted events (and those never queue behind a large checkpoint).
        self._changelog = self.clients.producer(kafka_settings(config, "producer", {
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0,
            "message.timeout.ms": 30_000, "reconnect.backoff.max.ms": 1000, "error_cb": producer_error,
        }))

    def _check_partitions(self) -> None:
        _kafka()
        import confluent_kafka.admin as admin_mod

        admin = admin_mod.AdminClient(kafka_settings(self.herald.config, "admin", {"bootstrap.servers": self.bootstrap}))
        topic = admin.list_topics(self.events_topic, timeout=10).topics.get(self.events_topic)
        found = len(topic.partitions) if topic is not None else 0
        if found != self.partitions:
            raise ConfigError(
                f"the topic {self.events_topic} has {found} partitions, this node is configured for "
                f"{self.partitions} (HERALD_CLUSTER_PARTITIONS): every node of a cluster must agree")

    async def _poll_producer(self) -> None:
        """Serve the producer's delivery reports (they resolve the 202s) in a worker thread (the producer
        of the day: a heal replaces it)."""
        while True:
            producer = self._producer
            if producer is None:
                await trio.sleep(0.05)
            else:
                await trio.to_thread.run_sync(producer.poll, 0.05)

    async def stop(self) -> None:
        """Leave gracefully: checkpoint and hand over every partition, then say goodbye."""
        if self._stopping:
            return
        self._stopping = True
        herald = self.herald
        herald.ready = False  # new events get 503 from here on; those in flight are flushed below
        herald.status = "stopping"
        with trio.CancelScope(shield=True):
            if self._consumer is not None:
                with trio.move_on_after(self.herald.config.drain_timeout + 10):
                    await self._closed.wait()  # the consume loop closes the consumer as it ends
            if self._producer is not None:
                if not self._left:
                    self._left = True
                    try:
                        self._produce(self._producer, self.nodes_topic,
                                      orjson.dumps({"node": self.node, "left": True}), 0, self.node.encode(), None)
                    except _kafka().KafkaException as exc:
                        self.log.warning("announcing the leave: %s", exc)
                await trio.to_thread.run_sync(self._producer.flush, 5.0)

    # -- the consumer group ----------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        config = self.herald.config
        session_ms = int(config.cluster_session_timeout * 1000)
        return kafka_settings(config, "consumer", {
            "bootstrap.servers": self.bootstrap, "group.id": self.name, "enable.auto.commit": False,
            # Every assignment names its offset (the checkpoint's, or 0): a partition that no longer has it
            # lost data, which must stop this node rather than quietly start it over.
            "auto.offset.reset": "error", "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 6), "fetch.wait.max.ms": 10,
            "partition.assignment.strategy": "cooperative-sticky", "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 5000, "enable.partition.eof": False,
            "client.id": f"herald-{self.node}",
        })

    async def _consume(self) -> None:
        """Be a member of the group (this generation's consumer) until the node stops, fails or heals."""
        kafka = _kafka()
        token, epoch = self._token, self._epoch
        self._closed = trio.Event()

        def consumer_error(error: Any) -> None:  # in a librdkafka thread
            if is_fatal(error):
                token.run_sync_soon(self._fault, f"the consumer failed: {error.str()}", epoch)

        consumer = self._consumer = self.clients.consumer({**self._consumer_config(), "error_cb": consumer_error})

        # An older generation's consumer (closing after a fault) changes nothing here any more.
        def assigned(c: Any, partitions: list) -> None:  # in the consume thread
            if epoch != self._epoch:
                return
            offsets = trio.from_thread.run(self._assigned, [tp.partition for tp in partitions], epoch)
            c.incremental_assign([kafka.TopicPartition(self.events_topic, p, offsets[p]) for p in offsets])

        def revoked(c: Any, partitions: list) -> None:
            if epoch == self._epoch:
                trio.from_thread.run(self._revoked, [tp.partition for tp in partitions], True)
            c.incremental_unassign(partitions)

        def lost(c: Any, partitions: list) -> None:
            if epoch == self._epoch:
                trio.from_thread.run(self._revoked, [tp.partition for tp in partitions], False)
            c.incremental_unassign(partitions)

        consumer.subscribe([self.events_topic], on_assign=assigned, on_revoke=revoked, on_lost=lost)
        if self._healing is not None:
            self._healing.subscribed = time.monotonic()

        def step(measure: bool, commits: dict[int, int]) -> tuple[list, dict[int, int] | None]:
            """One turn of the consume thread: commit what checkpoints covered, consume, read the high
            watermarks (from the fetches: ListOffsets may be wrong on some brokers)."""
            if commits:
                try:
                    consumer.commit(offsets=[kafka.TopicPartition(self.events_topic, p, o) for p, o in commits.items()],
                                    asynchronous=True)
                except kafka.KafkaException as exc:
                    self.log.debug("commit: %s", exc)
            try:
                messages = consumer.consume(BATCH, 0.1)
            except kafka.KafkaException as exc:  # the consumer itself cannot go on: heal, as for a fatal error
                error = exc.args[0] if exc.args else exc
                token.run_sync_soon(self._fault, f"the consumer failed: {getattr(error, 'str', error.__str__)()}",
                                    epoch)
                return [], None
            return messages, self._highs(consumer, list(self.shards)) if measure else None

        try:
            await self._consume_loop(consumer, step, epoch)
        finally:
            with trio.CancelScope(shield=True):
                started = time.monotonic()
                if epoch == self._epoch:
                    await trio.to_thread.run_sync(consumer.close)  # revokes (and so checkpoints) what it owns
                    self.log.info("left the consumer group in %.3f s", time.monotonic() - started)
                else:
                    # A faulted generation: its partitions are given up already (nothing is checkpointed on
                    # the way out); a close that hangs on an unreachable broker is left behind.
                    with trio.move_on_after(5):
                        await trio.to_thread.run_sync(consumer.close, abandon_on_cancel=True)
                self._consumer = None
                self._closed.set()

    async def _consume_loop(self, consumer: Any, step: Any, epoch: int = 0) -> None:
        last_lag = 0.0
        while not self._stopping and self.failure is None and epoch == self._epoch:
            limit = max(self.herald.config.effect_queue // 2, self.herald.config.effect_queue - 4 * BATCH)
            while self.herald.outbox.pending > limit and not self._stopping and self.failure is None:
                await trio.sleep(0.05)  # deliveries are behind: let them catch up before making more
            now = time.monotonic()
            measure = now - last_lag >= 0.5
            if measure:
                last_lag = now
            commits, self._commits = self._commits, {}
            messages, highs = await trio.to_thread.run_sync(step, measure, commits)
            if epoch != self._epoch:
                break
            if messages:
                self._apply(messages)
            if highs is not None:
                self._measure_lag(highs)
            if messages or highs is not None:
                self._progress()
            healing = self._healing
            if (healing is not None and healing.phase == "restoring" and healing.subscribed is not None
                    and time.monotonic() - healing.subscribed > REJOIN_WAIT):
                self._healed("no partition was given to it yet")
            await trio.sleep(0)

    def fail(self, reason: str) -> None:
        """Something only an operator can judge happened (the broker lost data): stop taking events."""
        if self.failure is None:
            self.failure = reason
            self.log.error("the cluster cannot go on: %s. This node refuses events (503) and applies nothing more; "
                      "restart the nodes once the broker holds the topics again (see docs/cluster.md)", reason)
            herald = self.herald
            herald.ready = False
            herald.status = "cluster_failed"
            # Leave: the consume loop ends (closing the consumer hands the partitions over, without a
            # checkpoint of what this node may have wrong), and the nodes topic hears a goodbye.
            self._announce_now()

    # -- healing ------------------------------------------------------------------------------

    def _fault(self, reason: str, epoch: int) -> None:
        """A client of generation ``epoch`` failed fatally (fenced, unknown producer id, authentication, a
        stall that expired the session): give up the partitions at once (nothing more is applied,
        checkpointed or delivered for them), then heal: new clients, rejoin, restore. Too many faults in a
        row (each within :data:`HEAL_WINDOW` of the last heal) end the process."""
        if epoch != self._epoch or self.failure is not None or self._stopping:
            return  # an older generation's last words, or nothing left to heal
        now = time.monotonic()
        if self._healing is None and now - self._healed_at > HEAL_WINDOW:
            self._faults_in_row = 0
        self._faults_in_row += 1
        limit = self.herald.config.cluster_heal_attempts
        if self._faults_in_row > limit:
            self._epoch += 1
            line = (f"the cluster's Kafka clients failed {self._faults_in_row} times in a row, the last time: "
                    f"{reason}; exiting for a restart")
            self.log.critical("%s", line)
            self.fail(line)
            self.give_up(line)
            return
        owned = sorted(self.shards)
        self._give_up_partitions()  # (its last announcement goes out on the failing producer, if it can)
        self._epoch += 1  # whatever the failed clients do from here on is ignored
        # Nothing is produced on the failed producers any more (an event, a tick, an announcement made
        # meanwhile would fail again, and count as a new fault): they are dropped by the heal.
        self._retired += [self._producer, self._changelog]
        self._producer = self._changelog = None
        if self._healing is None:
            self._healing = _Healing(reason)
            self.log.warning("healing: %s; gave up partitions %s, making new Kafka clients and rejoining the group",
                        reason, owned)
        else:
            self._healing.reason, self._healing.phase = reason, "healing"
            self.log.warning("healing again (attempt %d of %d): %s", self._faults_in_row, limit, reason)
        self._progress()

    def _fault_stalled(self) -> None:
        gap = self._stalled_for
        self._fault(f"this process was stopped for {gap or self._stall_after:.1f} s, longer than the session "
                    "timeout: the group has moved its partitions", self._epoch)

    def _give_up_partitions(self) -> None:
        """Forget every owned partition without a checkpoint (its next owner restores it from the
        changelog); their effects not delivered yet stay with that owner."""
        for shard in self.shards.values():
            for key in shard.pending:
                self.pending_of.pop(key, None)
        self.shards.clear()
        self.lag.clear()
        self._commits.clear()
        self._update_singletons()
        self._announce_now()  # no partitions: queries go elsewhere

    async def _heal(self) -> None:
        """New producers (the failed ones are dropped in the background), once the broker answers them;
        the caller then rejoins the group with a new consumer, and the first assignment restored (or
        :data:`REJOIN_WAIT` without one) ends the heal."""
        healing = self._healing
        assert healing is not None
        delay = 0.2
        while not self._stopping and self.failure is None:
            epoch = self._epoch
            old, self._retired = tuple(self._retired), []
            assert self._nursery is not None
            self._nursery.start_soon(self._discard, old)
            self._make_producers()
            producer = self._producer
            while epoch == self._epoch and not self._stopping and self.failure is None:
                try:
                    await trio.to_thread.run_sync(lambda: producer.list_topics(self.events_topic, timeout=2),
                                                  abandon_on_cancel=True)
                except Exception as exc:  # unreachable: not the clients' fault, wait for it
                    self.log.debug("healing: the broker does not answer yet (%s)", exc)
                    await trio.sleep(0.2)
                else:
                    self._broker_seen = time.monotonic()
                    break
            if epoch == self._epoch:
                break
            await trio.sleep(delay)  # the new clients failed too: again, a little later
            delay = min(delay * 2, 5.0)
        self._stalled_for = None
        healing.phase = "restoring"
        self._progress()

    def _healed(self, how: str) -> None:
        healing, self._healing = self._healing, None
        if healing is None:
            return
        self.heals += 1
        self._healed_at = time.monotonic()
        self.log.warning("healed in %.2f s (from: %s): %s; owns partitions %s, accepting again",
                    self._healed_at - healing.started, healing.reason, how, sorted(self.shards))
        self._progress()

    async def _discard(self, producers: tuple[Any, ...]) -> None:
        """Drop a failed generation's producers: what they still hold is not waited for (requests got
        their 503 or will time out), and a destroy that hangs on an unreachable broker is left behind."""
        def drop() -> None:
            for producer in producers:
                if producer is not None:
                    try:
                        producer.purge()
                        producer.flush(0)
                    except Exception as exc:
                        self.log.debug("dropping a failed producer: %s", exc)

        with trio.move_on_after(10):
            await trio.to_thread.run_sync(drop, abandon_on_cancel=True)

    def _note_time(self) -> None:
        """The stall watch (a thread): a gap between two notes longer than the session timeout means the
        whole process was stopped; the trio side reads it before it applies, checkpoints or delivers."""
        while not self._stopping:
            now = time.monotonic()
            gap = now - self._alive_at
            if gap > self._stall_after:
                self._stalled_for = gap  # noted before the new time: a reader never misses the stall
            self._alive_at = now
            time.sleep(0.1)

    async def _watch_stalls(self) -> None:
        while True:
            await trio.sleep(0.1)
            if self._stale() and self._healing is None:
                self._fault_stalled()

    def _apply(self, messages: list) -> None:
        if self.failure is not None:
            return
        if self._stale():  # woken from a stall: these partitions are someone else's by now
            self._fault_stalled()
            return
        shards = self.shards
        kafka = _kafka()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == kafka.KafkaError._AUTO_OFFSET_RESET:
                    self.fail(f"partition {message.partition()}: {error.str()}: the broker lost data")
                    return
                if is_fatal(error):
                    self._fault(f"the consumer failed: {error.str()}", self._epoch)
                    return
                if error.code() != kafka.KafkaError._PARTITION_EOF:
                    self.log.warning("consumer: %s", error)
                continue
            shard = shards.get(message.partition())
            if shard is None or message.offset() < shard.offset:
                continue  # revoked meanwhile, or a repeat of what a restore already holds
            try:
                shard.apply(message)
            except NewerFormat as exc:
                self.fail(str(exc))
                return
            if not shard.ready and shard.offset >= shard.catch_up_to:
                self._caught_up(shard)

    def _caught_up(self, shard: Shard) -> None:
        shard.ready = True
        shard.restore_seconds = time.monotonic() - shard.assigned_at
        shard.log.info("partition %d ready: %d actors, at offset %d", shard.number, len(shard.engine.actors),
                       shard.offset)
        self._announce_now()
        self._tick(shard)  # overdue timers fire at once, through the log

    def _highs(self, consumer: Any, partitions: Any) -> dict[int, int]:
        """The high watermarks of these events partitions, as the consumer's fetches last saw them
        (ListOffsets may answer less on some brokers; in the consume thread)."""
        kafka = _kafka()
        highs = {}
        for p in partitions:
            try:
                highs[p] = consumer.get_watermark_offsets(kafka.TopicPartition(self.events_topic, p), cached=True)[1]
            except kafka.KafkaException:
                pass
        return highs

    def _measure_lag(self, highs: dict[int, int]) -> None:
        lag = {}
        for p, shard in list(self.shards.items()):
            high = highs.get(p)
            if high is not None and high < shard.catch_up_to:
                continue  # cached from before this assignment (no fetch answered yet): stale, not a loss
            if high is not None and 0 <= high < shard.offset and shard.ready:
                self.fail(f"partition {p} of {self.events_topic} ends at offset {high}, but this node applied it up "
                          f"to {shard.offset}: the broker lost data (an in-memory broker restarted?)")
            if high is not None and high >= 0:
                lag[p] = max(0, high - shard.offset)
                if not shard.ready and high <= shard.offset:
                    self._caught_up(shard)
        self.lag = lag

    async def _assigned(self, partitions: list[int], epoch: int | None = None) -> dict[int, int]:
        """Partitions were given to this node: restore each from the changelog; return where to resume."""
        epoch = self._epoch if epoch is None else epoch
        self.rebalances += 1
        started = time.monotonic()
        offsets: dict[int, int] = {}
        reader = await trio.to_thread.run_sync(self._reader) if partitions else None
        try:
            for p in partitions:
                if epoch != self._epoch:
                    break  # a fault meanwhile: these partitions are given up already
                try:
                    await self._restore(reader, p, offsets)
                except Exception as exc:  # a checkpoint this node cannot read: stop, loudly, rather than crash
                    self.log.with_fields(partition=p).exception("restoring partition %d failed", p)
                    kafka = _kafka()
                    code = exc.args[0].code() if isinstance(exc, kafka.KafkaException) and exc.args else None
                    if code in (kafka.KafkaError._UNKNOWN_PARTITION, kafka.KafkaError._UNKNOWN_TOPIC,
                                kafka.KafkaError.UNKNOWN_TOPIC_OR_PART):
                        self.fail(f"partition {p} of {self.events_topic} is unknown to the broker: the broker lost "
                                  "data (or the topic was changed)")
                    else:
                        self.fail(f"restoring partition {p} failed: {type(exc).__name__}: {exc}")
                    break
        finally:
            if reader is not None:
                await trio.to_thread.run_sync(reader.close)
        self.restore_seconds += time.monotonic() - started
        self.log.info("assigned partitions %s (resuming at %s) in %.3f s", partitions, offsets,
                      time.monotonic() - started, extra={"partitions": partitions})
        if epoch != self._epoch:
            for p in offsets:
                self.shards.pop(p, None)
            return {}
        self._update_singletons()
        if partitions and self._healing is not None and self._healing.phase == "restoring":
            self._healed(f"rejoined the group and restored partitions {sorted(offsets)}")
        return offsets

    async def _restore(self, reader: Any, p: int, offsets: dict[int, int]) -> None:
        if self.failure is not None:
            return
        shard = Shard(self, p)
        # What this node's replica had read, taken *before* the partition's end is read: it goes on
        # reading meanwhile, and only a broker that lost data can end a partition before it.
        known = self.replica_shards.get(p)
        replicated = known.offset if known is not None else 0
        epoch = self._epoch
        doc, end, newest = await trio.to_thread.run_sync(self._read_checkpoint, reader, p)
        seen = max(replicated, doc["offset"] if doc is not None else 0)
        if end < seen:  # e.g. a restarted in-memory broker: the topic was made again, empty
            self.fail(f"partition {p} of {self.events_topic} ends at offset {end}, but this node read it up to "
                      f"{seen}: the broker lost data")
            return
        # This node's ownership begins: a claim with an epoch above every one in the changelog, before
        # anything is applied (a node that took the partition over from the same checkpoint, and then
        # stalled, has written its own claim first, so the epochs of two owners never tie).
        owner_epoch = newest + 1
        if not await trio.to_thread.run_sync(self._claim, p, owner_epoch, doc["offset"] if doc is not None else 0,
                                             epoch):
            return  # given up meanwhile (a fault, or a stall): the heal rejoins
        self._owner_epochs[p] = owner_epoch
        if doc is not None:
            try:
                restored = shard.restore(doc)
            except PluginError as exc:  # a plugin's new release cannot read its states: no restart helps
                line = f"partition {p}'s checkpoint cannot be restored: {exc}"
                self.log.critical("%s", line, extra={"partition": p})
                self.fail(line)
                self.give_up(line)
                return
            for effect in restored:
                shard._emit(effect)
            shard.restored_actors = len(shard.engine.actors)
            self.restored_actors += shard.restored_actors
        shard.catch_up_to = end
        self.shards[p] = shard
        offsets[p] = shard.offset
        if shard.offset >= end:
            self._caught_up(shard)

    def _claim(self, partition: int, owner_epoch: int, offset: int, epoch: int) -> bool:
        """Write this node's claim on a partition it restores (blocking: run in a thread). False when the
        partition is no longer this node's to take (its clients failed, or it stalled, meanwhile): it is
        skipped, and the heal under way rejoins. A claim the broker did not take is only warned about:
        the checkpoints still carry the epoch (the claim breaks a tie with an owner that stalled
        before it wrote anything)."""
        producer = self._changelog
        if epoch != self._epoch or self._stale() or producer is None:
            return False
        value, headers = changelog.claim_record(owner_epoch, self.node, offset, self._last_end.get(partition, -1))
        errors: list[Any] = []
        self._produce(producer, self.changelog_topic, value, partition, changelog.CLAIM_KEY,
                      lambda error, message: errors.append(error) if error is not None else None, headers)
        left = producer.flush(30)
        fatal = next((e for e in errors if is_fatal(e)), None)
        if fatal is not None:
            self._token.run_sync_soon(self._fault, f"the changelog producer failed: {fatal.str()}", epoch)
            return False
        if left or errors:
            self.log.with_fields(partition=partition).warning(
                "partition %d: the changelog did not take this node's claim (%s); going on without it",
                partition, errors or "timed out")
        return True

    async def _revoked(self, partitions: list[int], graceful: bool) -> None:
        """Partitions leave this node: checkpoint each (unless lost to another owner already)."""
        self.rebalances += 1
        for p in partitions:
            shard = self.shards.get(p)
            if shard is None:
                continue
            if graceful and shard.ready and shard.dirty and self.failure is None:
                # Let deliveries in flight finish first (briefly): what the checkpoint still lists as
                # pending, the next owner delivers again.
                with trio.move_on_after(self.herald.config.cluster_handover):
                    while shard.pending:
                        await trio.sleep(0.02)
                try:
                    await self.checkpoint(shard)
                except Exception:
                    shard.log.exception("final checkpoint of partition %d failed; its next owner replays more", p)
            self.shards.pop(p, None)
            for key in shard.pending:
                self.pending_of.pop(key, None)
            self.lag.pop(p, None)
        self.log.info("revoked partitions %s (%s)", partitions, "handed over" if graceful else "lost",
                      extra={"partitions": partitions})
        self._announce_now()
        self._update_singletons()

    def _update_singletons(self) -> None:
        owns = 0 in self.shards
        if owns != self.singletons.is_set():
            if owns:
                self.singletons.set()
            else:
                self.singletons = trio.Event()
            self._singleton_changed.set()

    async def singleton_changes(self) -> None:
        """Wait until this node starts or stops running the cluster's singletons."""
        self._singleton_changed = trio.Event()
        await self._singleton_changed.wait()

    # -- checkpoints -------------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        interval = self.herald.config.cluster_checkpoint
        while True:
            await trio.sleep(interval / 4)
            now = time.monotonic()
            for shard in list(self.shards.values()):
                if shard.ready and shard.dirty and now - shard.last_checkpoint >= interval:
                    try:
                        await self.checkpoint(shard)
                    except Exception:
                        shard.log.exception("checkpoint of partition %d failed; retrying", shard.number)

    def _holds(self, shard: Shard, epoch: int) -> bool:
        """Whether ``shard`` is still this node's, in client generation ``epoch``, with no stall since (a
        zombie never checkpoints: asked before each piece of a checkpoint is produced)."""
        return epoch == self._epoch and self.shards.get(shard.number) is shard and not self._stale()

    async def checkpoint(self, shard: Shard) -> None:
        """Write the shard to the changelog and commit the input offset it covers."""
        epoch = self._epoch
        async with shard.lock:
            if not self._holds(shard, epoch):
                return
            herald = self.herald
            if not await self._flush_world_sinks(herald.config.drain_timeout):
                shard.log.warning("checkpoint of partition %d skipped: effect sinks did not drain", shard.number)
                return
            if not self._holds(shard, epoch):
                return
            offset, capture, pending, wall = shard.capture()
            shard.dirty = False
            try:
                body = await trio.to_thread.run_sync(Shard.encode, offset, capture, pending, wall)
                await trio.to_thread.run_sync(self._write_checkpoint, shard, offset, body, epoch)
            except UnencodableState as exc:  # a plugin's state: named, /healthz degraded, tried again next round
                shard.dirty = True
                self._unencodable.add(shard.number)
                herald.state_unencodable(exc)
                return
            except BaseException:
                shard.dirty = True  # the next round tries again
                raise
            if not self._holds(shard, epoch):
                return
            shard.checkpointed_offset = offset
            shard.last_checkpoint = time.monotonic()
            # Healthy again once every partition still here whose checkpoint failed has been written.
            self._unencodable.discard(shard.number)
            self._unencodable &= self.shards.keys()
            if not self._unencodable:
                herald.state_encodable()
            shard.checkpoints += 1
            # Committed by the consume thread (a consumer is never called from two threads at once): the
            # committed offset shows lag to Kafka's tools; restores go by the changelog.
            self._commits[shard.number] = offset

    async def _flush_world_sinks(self, timeout: float) -> bool:
        """Before a checkpoint: what the sinks that act on the world were given must be out (local views
        are rebuilt by the replicas, so they never hold a checkpoint back)."""
        sinks = {id(s): s for s in self.herald.sinks.values() if not getattr(s, "local_view", False)}
        with trio.move_on_after(timeout):
            for sink in sinks.values():
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    await flush()
            return True
        return False

    def _write_checkpoint(self, shard: Shard, offset: int, body: bytes, epoch: int) -> None:
        """Produce the pieces, then the marker naming them (blocking: run in a thread). Before each piece,
        the shard must still be this node's (:meth:`_holds`): a node that woke from a stall, or whose
        clients failed, stops writing at once."""
        partition = shard.number
        producer = self._changelog
        token = self._token

        def holds() -> None:
            if not self._holds(shard, epoch):
                raise RuntimeError(f"partition {partition} is no longer this node's: its checkpoint is abandoned")

        def check(errors: list) -> None:
            for error in errors:
                if is_fatal(error):
                    token.run_sync_soon(self._fault, f"the changelog producer failed: {error.str()}", epoch)
                    break

        ckpt = uuid.uuid4().hex
        offsets: list[int] = []
        errors: list[Any] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                errors.append(error)
            else:
                offsets.append(message.offset())

        last_end = self._last_end.get(partition, -1)
        owner_epoch = self._owner_epochs.get(partition, 0)
        pieces = [body[i:i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)] or [b""]
        headers = changelog.piece_headers(ckpt, last_end)
        # Every record has a key of its own (a compacted topic refuses records without one); once a newer
        # checkpoint is complete, the older one's keys get tombstones, so compaction can drop it.
        for i, piece in enumerate(pieces):
            holds()
            self._produce(producer, self.changelog_topic, piece, partition, f"{ckpt}:{i}".encode(), delivered,
                          headers)
        if producer.flush(30) or errors or len(offsets) != len(pieces):
            check(errors)
            raise RuntimeError(f"the changelog did not take the checkpoint: {errors or 'timed out'}")
        marker, marker_headers = changelog.marker_record(ckpt, min(offsets), len(pieces), offset, owner_epoch,
                                                         last_end)
        offsets.clear()
        holds()
        self._produce(producer, self.changelog_topic, marker, partition, f"{ckpt}:end".encode(), delivered,
                      marker_headers)
        if producer.flush(30) or errors or not offsets:
            check(errors)
            raise RuntimeError(f"the changelog did not take the checkpoint marker: {errors or 'timed out'}")
        self._last_end[partition] = marker_at = offsets[0]
        previous, self._last_keys[partition] = self._last_keys.get(partition), (ckpt, len(pieces))
        if previous is not None and self._holds(shard, epoch):  # a zombie tombstones nothing
            old, count = previous
            tombstone = changelog.tombstone_headers(marker_at)
            for key in [f"{old}:{i}" for i in range(count)] + [f"{old}:end"]:
                self._produce(producer, self.changelog_topic, None, partition, key.encode(), None, tombstone)
            producer.flush(30)  # not waited for by anything: a lost tombstone only delays compaction

    def _reader(self) -> Any:
        """A consumer outside the group, for reading partitions by offset (blocking to make and close)."""
        return self.clients.consumer(kafka_settings(self.herald.config, "consumer", {
            "bootstrap.servers": self.bootstrap, "group.id": f"{self.name}.restore", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": 10, "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
        }))

    def _read_checkpoint(self, reader: Any, partition: int) -> tuple[dict[str, Any] | None, int, int]:
        """The checkpoint of a partition's newest owner (None if there is none), the end offset of its
        events partition, and the highest owner epoch its changelog holds (blocking: run in a thread).
        Reads the changelog's last :data:`changelog.TAIL_SCAN` records (and the marker the last one
        names, when it lies further back), then the chosen checkpoint's pieces: never the whole log."""
        kafka = _kafka()
        events_end = self._end_offset(reader, kafka.TopicPartition(self.events_topic, partition))
        topic = kafka.TopicPartition(self.changelog_topic, partition)
        end = self._end_offset(reader, topic)
        if end <= 0:
            return None, events_end, 0
        low = max(0, reader.get_watermark_offsets(topic, timeout=10, cached=False)[0])
        start = max(low, end - changelog.TAIL_SCAN)
        tail = self._read(reader, partition, start, end, changelog.seen_of)
        if not tail:
            return None, events_end, 0
        named = None
        if tail[-1].headers.get("herald") != b"end":
            at = int(tail[-1].headers.get("last_end", b"-1"))
            if 0 <= at < start:
                named = next(iter(self._read(reader, partition, at, at + 1, changelog.seen_of)), None)
        markers, newest = changelog.ranked(tail, named)
        for marker in markers:
            ckpt = marker.ckpt.encode()
            pieces = [m.value() for m in self._read(reader, partition, marker.first, marker.at) if _piece_of(m, ckpt)]
            if len(pieces) != marker.pieces:
                self.log.with_fields(partition=partition).warning(
                    "partition %d: checkpoint %s (changelog offset %d) is incomplete; trying an older one",
                    partition, marker.ckpt, marker.at)
                continue
            later = [m for m in markers if m.at > marker.at]
            if later:
                self.log.with_fields(partition=partition).warning(
                    "partition %d: restoring the checkpoint at changelog offset %d (owner epoch %d, input offset %d), "
                    "not the later one(s) at %s: written by an earlier owner (a stalled node)",
                    partition, marker.at, marker.rank, marker.offset, [m.at for m in later])
            self._last_end[partition] = marker.at
            self._last_keys[partition] = (marker.ckpt, marker.pieces)
            return orjson.loads(b"".join(pieces)), events_end, max(newest, marker.rank)
        if markers:
            raise RuntimeError(f"no complete checkpoint in the changelog of partition {partition} "
                               f"(markers at {[m.at for m in markers]})")
        return None, events_end, newest

    @staticmethod
    def _end_offset(reader: Any, tp: Any) -> int:
        """The true end of a partition: ListOffsets may answer less on some brokers (Tansu answers the last
        batch's first offset + 1), so read from there up to the partition's EOF."""
        low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
        if high <= 0:
            return max(high, 0)
        kafka = _kafka()
        reader.assign([kafka.TopicPartition(tp.topic, tp.partition, max(low, high - 1))])
        end = high
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == kafka.KafkaError._PARTITION_EOF:
                    end = max(end, message.offset())
                    break
                raise RuntimeError(f"reading {tp.topic}[{tp.partition}]: {message.error()}")
            end = max(end, message.offset() + 1)
        reader.unassign()
        return end

    def _read(self, reader: Any, partition: int, start: int, stop: int, keep: Callable[[Any], Any] | None = None) -> list:
        """Messages ``start`` up to (not including) ``stop`` of a changelog partition (each as ``keep``
        makes it, when given: a scan need not hold every piece's bytes)."""
        kafka = _kafka()
        reader.assign([kafka.TopicPartition(self.changelog_topic, partition, start)])
        found: list = []
        last = start - 1
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                # consume() waits for as many messages as asked (or the timeout): ask for what is left.
                batch = reader.consume(max(1, min(500, stop - last - 1)), 0.5)
                for message in batch:
                    if message.error() is not None:
                        if message.error().code() == kafka.KafkaError._PARTITION_EOF:
                            return found
                        raise RuntimeError(f"reading the changelog: {message.error()}")
                    if message.offset() >= stop:
                        return found
                    last = message.offset()
                    found.append(message if keep is None else keep(message))
                if last >= stop - 1:
                    return found
            raise RuntimeError(f"reading the changelog of partition {partition} timed out")
        finally:
            reader.unassign()

    # -- replicas ------------------------------------------------------------------------------

    async def _replicate(self) -> None:
        """Follow every partition outside the group, for reads: restore each from its latest checkpoint,
        then apply what follows. Replicas fire their timers by the log's ticks, as owners do, and send
        their effects to local views only: every node reads every actor, and views see every partition.
        A fatal error of the replicas' consumer makes a new one, resuming where each replica stands."""
        await self._keep_outside("replica", self._replicate_once)

    async def _restore_replicas(self) -> None:
        """Make the replicas not made yet, each from its partition's latest checkpoint."""
        reader = await trio.to_thread.run_sync(self._reader)
        # Local views live in this process only: rebuilt from the start of the log (what the topic still
        # holds), they see every event; from a checkpoint they would miss what came before it.
        rebuild = any(getattr(sink, "local_view", False) for sink in self.herald.sinks.values())
        try:
            for p in range(self.partitions):
                if p in self.replica_shards:
                    continue
                shard = Shard(self, p, replica=True)
                doc, end, _ = await self._outside_call("the replicas' reader", self._read_checkpoint, reader, p)
                if doc is not None and not rebuild:
                    shard.restore(doc)
                shard.catch_up_to = end
                shard.ready = shard.offset >= end
                self.replica_shards[p] = shard
        finally:
            await self._close_outside(reader)

    async def _replicate_once(self) -> None:
        """One consumer of the replicas: it runs until the node stops, or raises :class:`_ClientFailed`."""
        kafka = _kafka()
        if len(self.replica_shards) < self.partitions:
            await self._restore_replicas()
        errors: list[Any] = []
        consumer = self.clients.consumer(kafka_settings(self.herald.config, "consumer", {
            "bootstrap.servers": self.bootstrap, "group.id": f"{self.name}.replica.{self.node}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 10, "session.timeout.ms": 6000,
            "auto.offset.reset": "error", "error_cb": self._noting(errors),
        }))
        last = 0.0

        def step(measure: bool) -> tuple[list, dict[int, int] | None]:
            messages = consumer.consume(BATCH, 0.1)
            return messages, self._highs(consumer, range(self.partitions)) if measure else None

        what = "the replicas' consumer"
        try:
            await self._outside_call(what, consumer.assign, [
                kafka.TopicPartition(self.events_topic, p, shard.offset)
                for p, shard in sorted(self.replica_shards.items())])
            while not self._stopping:
                now = time.monotonic()
                measure = now - last >= 0.5
                if measure:
                    last = now
                messages, highs = await self._outside_call(what, step, measure)
                self._raise_fatal(what, errors)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        self._raise_fatal(what, (error,))
                        if error.code() == kafka.KafkaError._AUTO_OFFSET_RESET:
                            self.fail(f"replica of partition {message.partition()}: {error.str()}: the broker lost data")
                        elif error.code() != kafka.KafkaError._PARTITION_EOF:
                            self.log.warning("replica consumer: %s", error)
                        continue
                    shard = self.replica_shards.get(message.partition())
                    if shard is not None and message.offset() >= shard.offset:
                        try:
                            shard.apply(message)
                        except NewerFormat as exc:
                            self.fail(f"replica: {exc}")
                            return
                        if not shard.ready and shard.offset >= shard.catch_up_to:
                            shard.ready = True
                if highs:
                    for p, high in highs.items():
                        shard = self.replica_shards[p]
                        if high is not None and high >= 0:
                            self.replica_lag[p] = max(0, high - shard.offset)
                            if not shard.ready and high <= shard.offset:
                                shard.ready = True
                self._outside_works("replica")
                if messages or highs:
                    self._progress()
                await trio.sleep(0)
        finally:
            await self._close_outside(consumer)

    # -- consumers outside the group: made again after a fatal error ------------------------------

    async def _keep_outside(self, name: str, run: Callable[[], Any]) -> None:
        """Run a consumer outside the group (``run``: one consumer's life) and make a new one, with backoff,
        whenever a fatal error ends it; after ``HERALD_CLUSTER_HEAL_ATTEMPTS`` faults in a row (each within
        :data:`HEAL_WINDOW` of the last heal) the node fails and exits with one line, as for the group's
        clients. These consumers feed reads (replicas, the directory), never ingestion: the node goes on
        accepting meanwhile, and ``/healthz`` tells it under ``cluster.consumers``."""
        state = self.outside[name]
        delay = 0.2
        while not self._stopping and self.failure is None:
            try:
                await run()
                return
            except _ClientFailed as exc:
                reason = str(exc)
            now = time.monotonic()
            if state.reason is None and now - state.healed_at > HEAL_WINDOW:
                state.faults, delay = 0, 0.2
            state.faults += 1
            limit = self.herald.config.cluster_heal_attempts
            if state.faults > limit:
                line = (f"the {name} consumer failed {state.faults} times in a row, the last time: {reason}; "
                        "exiting for a restart")
                self.log.critical("%s", line)
                self.fail(line)
                self.give_up(line)
                return
            if state.reason is None:
                state.since = now
            state.reason = reason
            self.log.warning("%s; making a new %s consumer in %.1f s (attempt %d of %d)", reason, name, delay,
                             state.faults, limit)
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _outside_works(self, name: str) -> None:
        """A consumer outside the group got through a turn without a fatal error: healed, if it was healing."""
        state = self.outside[name]
        if state.reason is not None:
            self.log.warning("the %s consumer healed in %.2f s (from: %s)", name, time.monotonic() - state.since,
                             state.reason)
            state.reason = None
            state.heals += 1
            state.healed_at = time.monotonic()

    @staticmethod
    def _noting(errors: list) -> Callable[[Any], None]:
        """An ``error_cb`` keeping the fatal errors a client reports (served in the thread that polls it)."""
        def noted(error: Any) -> None:
            if is_fatal(error):
                errors.append(error)
        return noted

    @staticmethod
    async def _outside_call(what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` of a consumer outside the group, in a worker thread: a Kafka error it raises means
        the client cannot go on (:class:`_ClientFailed`)."""
        kafka = _kafka()
        try:
            return await trio.to_thread.run_sync(call, *args)
        except kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            raise _ClientFailed(f"{what} failed: {error.str() if hasattr(error, 'str') else error}") from None

    @staticmethod
    def _raise_fatal(what: str, errors: Sequence[Any]) -> None:
        for error in errors:
            if error is not None and is_fatal(error):
                raise _ClientFailed(f"{what} failed: {error.str()}")

    @staticmethod
    async def _close_outside(consumer: Any) -> None:
        """Close a consumer outside the group; one that hangs (a failed client, an unreachable broker) is left
        behind after 5 s."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await trio.to_thread.run_sync(consumer.close, abandon_on_cancel=True)

    # -- ticks and announcements -----------------------------------------------------------

    def _tick(self, shard: Shard) -> None:
        if self._producer is not None and self.failure is None and not self._stale():
            try:
                self._produce(self._producer, self.events_topic, None, shard.number, None, None)
            except _kafka().KafkaException as exc:  # the next interval ticks again
                shard.log.warning("tick of partition %d: %s", shard.number, exc)

    async def _tick_loop(self) -> None:
        """Partitions holding timers get a tick each interval: their timers fire by the log's time."""
        interval = self.herald.config.cluster_tick
        while True:
            await trio.sleep(interval)
            for shard in list(self.shards.values()):
                if shard.ready and len(shard.engine.timers):
                    self._tick(shard)

    def _announce_now(self) -> None:
        if self._producer is None or self._left:
            return
        if self.failure is not None:  # a failed node serves nothing: say goodbye once
            self._left = True
            doc: dict[str, Any] = {"node": self.node, "left": True}
            self.directory.heard(doc)
            try:
                self._produce(self._producer, self.nodes_topic, orjson.dumps(doc), 0, self.node.encode(), None)
            except _kafka().KafkaException as exc:
                self.log.warning("announcing the leave: %s", exc)
            return
        # Healing, or woken from a stall: no partitions (they are someone else's by now).
        serving = () if self._healing is not None or self._stale() else self.shards.items()
        doc = {"node": self.node, "url": self.url, "at": time.time(),
               "partitions": sorted(p for p, s in serving if s.ready)}
        self.directory.heard(doc)
        token, epoch = self._token, self._epoch

        def pulse(error: Any, message: Any) -> None:  # in the poll thread
            token.run_sync_soon(self._pulse, error, epoch)

        try:
            self._produce(self._producer, self.nodes_topic, orjson.dumps(doc), 0, self.node.encode(), pulse)
        except _kafka().KafkaException as exc:  # the next interval announces again
            self.log.warning("announcement: %s", exc)

    def _pulse(self, error: Any, epoch: int) -> None:
        """An announcement's delivery report: the broker's pulse. Only a produce that succeeds proves the
        node can accept (metadata may answer while the producer is fenced), so only that clears
        ``broker_unreachable``; a fatal report heals."""
        if error is None:
            if epoch == self._epoch:
                self._broker_seen = time.monotonic()
        elif is_fatal(error):
            self._fault(f"the producer failed: {error.str()}", epoch)

    async def _watch_topics(self) -> None:
        """A broker that lost its data (an in-memory one restarted) has no topics, or new ones with other
        partitions: that stops this node, loudly, instead of quietly starting over."""
        strikes = 0
        while self.failure is None:
            await trio.sleep(0.5)
            producer = self._producer
            if producer is None:
                continue
            try:
                metadata = await trio.to_thread.run_sync(lambda: producer.list_topics(self.events_topic, timeout=2),
                                                         abandon_on_cancel=True)
            except Exception as exc:  # the broker is unreachable: not a loss of data (yet)
                self.log.debug("metadata: %s", exc)
                continue
            topic = metadata.topics.get(self.events_topic)
            if topic is None or topic.error is not None or len(topic.partitions) != self.partitions:
                strikes += 1  # four times in a row (2 s): a leader election can hide a topic for a moment
                if strikes >= 4:
                    found = 0 if topic is None or topic.error is not None else len(topic.partitions)
                    self.fail(f"the topic {self.events_topic} has {found} partitions now, not {self.partitions}: "
                              "the broker lost data (or the topic was changed)")
            else:
                strikes = 0

    async def _announce_loop(self) -> None:
        interval = self.herald.config.cluster_announce
        while True:
            self._announce_now()
            await trio.sleep(interval)

    async def _listen(self) -> None:
        """Follow the nodes topic (from shortly before its end) to know who serves what; a fatal error of
        its consumer makes a new one, resuming where the last one stopped."""
        await self._keep_outside("directory", self._listen_once)

    async def _listen_once(self) -> None:
        kafka = _kafka()
        errors: list[Any] = []
        reader = self.clients.consumer(kafka_settings(self.herald.config, "consumer", {
            "bootstrap.servers": self.bootstrap, "group.id": f"{self.name}.directory.{self.node}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 50, "session.timeout.ms": 6000,
            "error_cb": self._noting(errors),
        }))

        def start() -> None:
            tp = kafka.TopicPartition(self.nodes_topic, 0)
            if self._directory_offset is None:
                low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
                self._directory_offset = max(low, high - 500)
            reader.assign([kafka.TopicPartition(self.nodes_topic, 0, self._directory_offset)])

        what = "the directory's consumer"
        try:
            await self._outside_call(what, start)
            while True:
                messages = await self._outside_call(what, reader.consume, 200, 0.2)
                self._raise_fatal(what, errors)
                for message in messages:
                    self._raise_fatal(what, (message.error(),))
                    if message.error() is None:
                        self._directory_offset = message.offset() + 1
                        if message.value():
                            try:
                                self.directory.heard(orjson.loads(message.value()))
                            except orjson.JSONDecodeError:
                                pass
                self._outside_works("directory")
        finally:
            await self._close_outside(reader)

    # -- the settled effects -----------------------------------------------------------------

    def settled(self, effect: Effect) -> None:
        """The outbox delivered an effect (or gave up on it): it no longer goes into checkpoints."""
        key = effect_key(effect)
        shard = self.pending_of.pop(key, None)
        if shard is not None:
            shard.settled(key)

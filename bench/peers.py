"""Peers: a per-user counting job on the dev broker, written bare with confluent-kafka and with Quix Streams.

The job every stream processor can do: read events keyed by user, keep a count
per user, write each updated count to an output topic keyed by user. It tells
what a consume-process-produce loop costs on this machine and this broker
before any framework, and what a popular Python framework (Quix Streams, with
its RocksDB state and changelog topic) pays for its guarantees: the figures
that Herald's own Kafka path can be put beside.

One Tansu broker (``engine.dev_broker``, in memory) serves three runs, each on
fresh topics (input and output with ``--partitions`` partitions) and a fresh
consumer group, the same N JSON events ``{"id", "type", "key", "timestamp",
"data"}`` produced into the input before the clock starts:

1. bare: one confluent-kafka consumer (``auto.offset.reset=earliest``) decodes
   each event, counts per key in a dict and produces the count (idempotent
   producer, ``acks=all``, ``linger.ms=5``); every 5 s (and at the end) it
   flushes the producer, then commits offsets: at-least-once.
2. Quix Streams, ``processing_guarantee="at-least-once"``: an ``Application``
   whose ``StreamingDataFrame`` counts per key in its stateful ``state``
   (RocksDB, changelog topic on) and sends the counts ``to_topic``.
3. the same, ``processing_guarantee="exactly-once"`` (transactions).

The clock runs from the subscription (``subscribe``, or ``Application.run``)
until every event is processed, the output flushed and the offsets committed
(the transaction, for exactly-once). The group join is inside: "join s" is the
time to the first event (about 3 s on Tansu, whatever the peer), "after join"
the rate from there on. Afterwards the output topic is read back: the last
count of each user must equal the user's number of events, or the command
fails.

Quix Streams pins confluent-kafka below 2.13, older than the one Herald runs
with, so it may live in its own environment: ``--quix-python`` names the
interpreter that runs the Quix peers (in a child process, where ``run()``
can block and stop by itself); the default is this one.

    python -m bench.peers [--events 200000] [--users 10000] [--partitions 6] [--quix-python PATH]
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run from the repository root: python -m bench.peers")

import argparse
import functools
import os
import random
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import confluent_kafka
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import trio

from engine import Config, Event
from engine.host import Herald, PluginHost
from engine._cluster import encode_event, partition_of, topics_of
from engine._kafka import dev_broker, ensure_topics

from ._common import SEED_START, print_table

ROOT = Path(__file__).resolve().parent.parent

#: Tansu wants an explicit session timeout; a short fetch wait keeps a consumer from idling on empty fetches.
TANSU_CONSUMER = {"session.timeout.ms": 6000, "fetch.wait.max.ms": 10}
#: The output producer of every peer.
PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
#: Seconds between checkpoints (Quix's default ``commit_interval``; the bare loop does the same).
COMMIT_INTERVAL = 5.0
#: Given explicitly: Tansu's DescribeConfigs answers only what a topic was created with, and Quix needs
#: ``retention.ms`` to derive its changelog topic's config (Kafka's default, 7 days).
TOPIC_CONFIG = {"retention.ms": "604800000"}
#: No run may take longer than this (seconds).
DEADLINE = 600.0

TYPES = ("app_launch", "training_program_started", "training_program_finished", "screen_view")


@dataclass
class Run:
    """One peer's figures: seconds from the subscription to done and to its first event; then its output."""

    seconds: float
    first: float
    client: str
    outputs: int = 0  #: messages in the output topic
    right: int = 0  #: users whose last count there is their number of events
    changelog: int | None = None  #: messages in the changelog topics (None: there are none)


def make_events(n: int, users: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) pairs: JSON events of uniformly random users, timestamps (ms) increasing."""
    rng = random.Random(seed)
    start = int(SEED_START * 1000)
    records = []
    for number in range(n):
        user = f"user-{rng.randrange(users):06d}"
        event = {"id": f"evt-{number}", "type": rng.choice(TYPES), "key": user,
                 "timestamp": start + number * 10, "data": {}}
        records.append((user.encode(), orjson.dumps(event)))
    return records


def _client() -> str:
    return f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"


def _produce_blocking(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    """Queue a message, letting the producer's local queue drain while it is full."""
    while True:
        try:
            return producer.produce(topic, value, key)
        except BufferError:
            producer.poll(0.05)


def fill_input(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Produce the events into ``topic`` (not timed as part of a run); return the seconds it took."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER, "linger.ms": 20})
    started = time.perf_counter()
    for key, value in records:
        _produce_blocking(producer, topic, value, key)
    if producer.flush(60):
        raise RuntimeError(f"producing into {topic} unfinished after 60 s")
    return time.perf_counter() - started


def run_bare(bootstrap: str, group: str, source: str, sink: str, n: int) -> Run:
    """The job as a plain confluent-kafka loop: consume, decode, count, produce; flush then commit every 5 s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **TANSU_CONSUMER})
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    counts: dict[bytes, int] = {}
    loads, dumps, produce = orjson.loads, orjson.dumps, producer.produce
    seen, first = 0, None
    started = checkpoint = time.perf_counter()
    consumer.subscribe([source])
    while seen < n:
        batch = consumer.consume(1000, 0.5)
        if batch and first is None:
            first = time.perf_counter() - started
        for message in batch:
            if message.error() is not None:
                raise KafkaException(message.error())
            key = message.key()
            loads(message.value())  # decoded as Quix decodes it, so both do the same work
            counts[key] = count = counts.get(key, 0) + 1
            try:
                produce(sink, dumps(count), key)
            except BufferError:
                _produce_blocking(producer, sink, dumps(count), key)
        seen += len(batch)
        producer.poll(0)
        now = time.perf_counter()
        if now - checkpoint >= COMMIT_INTERVAL:
            producer.flush(30)
            consumer.commit(asynchronous=False)
            checkpoint = now
        if now - started > DEADLINE:
            raise RuntimeError(f"bare loop: {seen:,} of {n:,} events after {DEADLINE:g} s")
    if producer.flush(60):
        raise RuntimeError("bare loop: output unflushed after 60 s")
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - started
    consumer.close()
    return Run(elapsed, first, _client())


def run_quix(python: str, guarantee: str, bootstrap: str, group: str, source: str, sink: str, n: int) -> Run:
    """Run :func:`_quix_child` in ``python`` (a child process) and return its figures."""
    spec = {"bootstrap": bootstrap, "group": group, "source": source, "sink": sink, "n": n, "guarantee": guarantee}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    with tempfile.TemporaryFile("w+") as log:
        try:
            done = subprocess.run([python, "-m", "bench.peers", "--quix-child", orjson.dumps(spec).decode()],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                                  timeout=DEADLINE + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Quix ({guarantee}) still running after {DEADLINE + 60:g} s") from None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            log.seek(0)
            tail = "".join(log.readlines()[-30:])
            raise RuntimeError(f"Quix ({guarantee}) exited with {done.returncode}: {' '.join(lines[-1:])}\n{tail}")
    result = orjson.loads(lines[-1])
    return Run(result["seconds"], result["first"], result["client"])


def _quix_child(spec: dict) -> None:
    """In the child: the counting job as a Quix Streams Application; prints its figures as one JSON line."""
    try:
        import quixstreams
        from quixstreams import Application
    except ImportError as exc:
        sys.exit(f"quixstreams is not installed for {sys.executable} ({exc}): install it there, or name a Python "
                 "that has it with --quix-python (see bench/README.md)")
    n = spec["n"]
    with tempfile.TemporaryDirectory(prefix="herald-bench-quix-") as state_dir:
        app = Application(
            broker_address=spec["bootstrap"],
            consumer_group=spec["group"],
            auto_offset_reset="earliest",
            processing_guarantee=spec["guarantee"],
            commit_interval=COMMIT_INTERVAL,
            state_dir=state_dir,
            use_changelog_topics=True,
            consumer_extra_config=TANSU_CONSUMER,
            producer_extra_config=PRODUCER,
            loglevel="WARNING",
        )
        source = app.topic(spec["source"])  # both exist; JSON values, bytes keys (the defaults)
        sink = app.topic(spec["sink"])
        first: list[float] = []

        def count(value: dict, state) -> int:
            if not first:
                first.append(time.perf_counter())
            total = state.get("count", 0) + 1
            state.set("count", total)
            return total

        app.dataframe(source).apply(count, stateful=True).to_topic(sink)
        started = time.perf_counter()
        app.run(count=n, collect=False)  # stops after n outputs, then commits its last checkpoint
        elapsed = time.perf_counter() - started
    print(orjson.dumps({
        "seconds": elapsed, "first": first[0] - started if first else None,
        "client": f"quixstreams {quixstreams.__version__}, {_client()}",
    }).decode())


def fill_herald(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int) -> float:
    """The same events as Herald's events topic holds them (its encoding, its partition of each key)."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER, "linger.ms": 20})
    started = time.perf_counter()
    for key, value in records:
        raw = orjson.loads(value)
        at = datetime.fromtimestamp(raw["timestamp"] / 1000, timezone.utc)
        event = Event(raw["id"], raw["type"], raw["key"], at, raw["data"], at)
        while True:
            try:
                producer.produce(topic, encode_event(event), key, partition=partition_of(raw["key"], partitions))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError(f"producing into {topic} unfinished after 60 s")
    return time.perf_counter() - started


def run_herald(bootstrap: str, group: str, source: str, sink: str, n: int, partitions: int) -> Run:
    """Herald's cluster worker on the job: one node of cluster ``group``, the counting plugin, its
    changelog checkpoints on (every 2 s, Herald's default); done when every event was applied and the
    counts' producer flushed."""
    from . import _counting

    config = Config(cluster=bootstrap, cluster_name=group, cluster_partitions=partitions, durability="memory",
                    environ={"HERALD_COUNTING_BOOTSTRAP": bootstrap, "HERALD_COUNTING_TOPIC": sink})
    herald = Herald(config, PluginHost.from_objects(config, [_counting]))
    cluster = herald.cluster
    timings: dict[str, float] = {}

    async def job() -> None:
        started = time.perf_counter()
        async with herald.running():
            while True:
                applied = sum(s.applied for s in cluster.shards.values())
                if applied and "first" not in timings:
                    timings["first"] = time.perf_counter() - started
                if applied >= n:
                    break
                await trio.sleep(0.01)
            await herald.flush_sinks()
            timings["seconds"] = time.perf_counter() - started
            timings["checkpoints"] = sum(s.checkpoints for s in cluster.shards.values())

    trio.run(job)
    result = Run(timings["seconds"], timings["first"], f"Herald on {_client()}")
    print(f"  herald: {timings['checkpoints']:.0f} checkpoints written while running", flush=True)
    return result


def read_topic(bootstrap: str, topic: str, partitions: int, expected: int) -> tuple[int, dict[bytes, bytes]]:
    """Every committed message of ``topic``: how many, and the last value of each key.

    Read until ``expected`` messages came and one more second passed without
    any (extra ones would be duplicates), or until 10 s passed without any
    before that. Tansu's high watermark is not to be trusted, so it is not used.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "enable.auto.commit": False,
                         "isolation.level": "read_committed", **TANSU_CONSUMER})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    last: dict[bytes, bytes] = {}
    messages, quiet_since = 0, time.monotonic()
    while time.monotonic() - quiet_since < (1.0 if messages >= expected else 10.0):
        batch = consumer.consume(1000, 0.2)
        for message in batch:
            if message.error() is None:
                last[message.key()] = message.value()
                messages += 1
        if batch:
            quiet_since = time.monotonic()
    consumer.close()
    return messages, last


def changelog_messages(bootstrap: str, group: str, partitions: int) -> int | None:
    """How many messages the changelog topics of consumer group ``group`` hold (None: it made none)."""
    names = [name for name in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
             if (name.startswith("changelog") and group in name) or name == f"{group}.changelog"]
    return sum(read_topic(bootstrap, name, partitions, 1)[0] for name in names) if names else None


def _report(results: list[tuple[str, Run | None]], n: int, users: int) -> None:
    """The table, each peer's rate also after its group join, against the first (the baseline)."""
    baseline = results[0][1]
    rows = []
    for label, result in results:
        if result is None:
            rows.append((label, "failed", *[""] * 8))
            continue
        busy = result.seconds - result.first
        rows.append((
            label, f"{n / result.seconds:,.0f}", f"{result.seconds:.2f}",
            f"{baseline.seconds / result.seconds:.2f}x" if baseline else "", f"{result.first:.2f}",
            f"{n / busy:,.0f}", f"{(baseline.seconds - baseline.first) / busy:.2f}x" if baseline else "",
            f"{result.outputs:,}", f"{result.right:,} / {users:,}",
            "-" if result.changelog is None else f"{result.changelog:,}"))
    print()
    print_table(("peer", "events/s", "seconds", "vs bare", "join s", "after join events/s", "vs bare",
                 "output msgs", "users right", "changelog msgs"), rows)
    print()
    for label, result in results:
        if result is not None:
            print(f"{label}: {result.client}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--quix-python", default=sys.executable,
                        help="the Python that has quixstreams installed (default: this one)")
    parser.add_argument("--quix-child", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="run only these peers (comma-separated: bare, quix-alo, quix-eos, herald)")
    args = parser.parse_args(argv)
    if args.quix_child:
        return _quix_child(orjson.loads(args.quix_child))

    records = make_events(args.events, args.users)
    expected = Counter(key for key, _ in records)
    n, p = args.events, args.partitions
    print(f"{n:,} events of {len(expected):,} users (avg {sum(len(v) for _, v in records) / n:.0f} B), "
          f"{p} partitions; each run on fresh topics of one Tansu broker")
    peers = [
        ("bare confluent-kafka loop (baseline)", "bare", run_bare),
        ("quix streams, at-least-once", "quix-alo", functools.partial(run_quix, args.quix_python, "at-least-once")),
        ("quix streams, exactly-once", "quix-eos", functools.partial(run_quix, args.quix_python, "exactly-once")),
        ("herald cluster worker (1 node)", "herald", functools.partial(run_herald, partitions=p)),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        peers = [peer for peer in peers if peer[1] in wanted or peer[1] == "bare"]
    results: list[tuple[str, Run | None]] = []
    with dev_broker() as bootstrap:
        for label, slug, run in peers:
            group, source, sink = f"peers-{slug}", f"peers-{slug}-input", f"peers-{slug}-counts"
            try:
                if slug == "herald":
                    source = topics_of(group)[0]
                    ensure_topics(bootstrap, [(source, p, TOPIC_CONFIG), (sink, p, TOPIC_CONFIG)])
                    produced = fill_herald(bootstrap, source, records, p)
                else:
                    ensure_topics(bootstrap, [(source, p, TOPIC_CONFIG), (sink, p, TOPIC_CONFIG)])
                    produced = fill_input(bootstrap, source, records)
                print(f"{label}: input produced in {produced:.2f} s; running ...", flush=True)
                result = run(bootstrap, group, source, sink, n)
                result.outputs, last = read_topic(bootstrap, sink, p, n)
                result.right = sum(last.get(key) == b"%d" % count for key, count in expected.items())
                result.changelog = changelog_messages(bootstrap, group, p)
            except (RuntimeError, KafkaException) as exc:
                print(f"{label}: failed: {exc}", flush=True)
                result = None
            results.append((label, result))
    _report(results, n, len(expected))
    if any(result is None or result.right != len(expected) for _, result in results):
        sys.exit("a peer failed or counted wrong")


if __name__ == "__main__":
    main()

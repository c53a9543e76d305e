"""A cluster node meeting a fatal Kafka error or waking from a stall, without a broker: it gives up its
partitions at once (nothing more applied, checkpointed or delivered for them), announces none, refuses
with the reason, and after too many faults in a row ends the process with one line. Its consumers outside
the group (the replicas', the directory's) are made again and resume where they stood; so are a
:class:`KafkaSource`'s consumer and a :class:`KafkaProducer`."""

from __future__ import annotations

import io
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import pytest
import trio

from engine import Config, Event, Notify
from engine.host import Herald, PluginHost
from engine.kafka import KafkaClients, KafkaProducer, KafkaSource, SourceFailed
from engine._cluster import Shard, encode_event, is_fatal
from engine._logs import log_handler
from tests.test_cluster_formats import Record
from plugins.fitness import hooks as fitness


class _Recording:
    """A producer that records what it is given and acknowledges it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = 0, on_delivery: Any = None,
                headers: Any = None) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def _Message(partition: int, offset: int, value: bytes | None, error: Any = None) -> Record:
    """A message of the events topic as the node's consumer hands it over."""
    return Record("herald.events", partition, offset, value, ms=1_614_585_600_000, error=error)


def node(kafka: KafkaClients | None = None, **settings: Any) -> tuple[Herald, Any, list[str]]:
    config = Config(cluster="127.0.0.1:1", durability="memory", **{"cluster_replicas": False, **settings})
    ended: list[str] = []
    herald = Herald(config, PluginHost.from_objects(config, [fitness]), kafka=kafka, give_up=ended.append)
    cluster = herald.cluster
    herald.status, herald.ready = "ready", True
    cluster._token = trio.lowlevel.current_trio_token()
    cluster._producer = cluster._changelog = _Recording()
    return herald, cluster, ended


def owning(cluster: Any, *partitions: int) -> dict[int, Shard]:
    for p in partitions:
        shard = Shard(cluster, p)
        shard.ready = shard.dirty = True
        cluster.shards[p] = shard
    return dict(cluster.shards)


def fatal(name: str) -> Any:
    from confluent_kafka import KafkaError

    return KafkaError(getattr(KafkaError, name), "injected", fatal=name == "_FATAL")


@pytest.mark.parametrize("name", ["_FATAL", "_FENCED", "PRODUCER_FENCED", "UNKNOWN_PRODUCER_ID",
                                  "OUT_OF_ORDER_SEQUENCE_NUMBER", "_MAX_POLL_EXCEEDED", "_AUTHENTICATION"])
def test_the_errors_a_client_cannot_go_on_after_are_fatal(name):
    assert is_fatal(fatal(name))


def test_errors_a_client_rides_out_are_not_fatal():
    from confluent_kafka import KafkaError

    assert not is_fatal(KafkaError(KafkaError._MSG_TIMED_OUT)) and not is_fatal(KafkaError(KafkaError._TRANSPORT))


async def test_a_fatal_error_gives_up_every_partition_at_once_and_refuses_with_the_reason():
    herald, cluster, ended = node()
    shards = owning(cluster, 0, 3)
    effect = Notify(url="http://receiver.test/", payload={}, idempotency_key="k1")
    shards[3].pending["k1"] = effect
    cluster.pending_of["k1"] = shards[3]
    assert cluster.claims(effect) and cluster.refusal() is None
    producer = cluster._producer
    cluster._fault("the producer failed: PRODUCER_FENCED", cluster._epoch)

    assert cluster.shards == {} and not cluster.singletons.is_set()
    assert not cluster.claims(effect)  # the outbox drops it: the new owner delivers it
    refusal = herald.refusal()
    assert refusal.code == "healing" and "PRODUCER_FENCED" in refusal.reason
    announced = orjson.loads([v for t, v in producer.sent if t == cluster.nodes_topic][-1])
    assert announced["partitions"] == []
    # The failed producer is retired: nothing more is produced on it (the heal drops it).
    assert cluster._producer is None and producer in cluster._retired
    # A checkpoint of a partition given up writes nothing; a message of it is not applied.
    sent = len(producer.sent)
    await cluster.checkpoint(shards[0])
    assert len(producer.sent) == sent and shards[0].dirty
    cluster._apply([_Message(0, 0, None)])
    assert shards[0].offset == 0
    # What the failed clients say afterwards changes nothing (an older generation's last words).
    cluster._fault("the consumer failed: late", cluster._epoch - 1)
    assert cluster._healing.reason == "the producer failed: PRODUCER_FENCED" and not ended


async def test_a_node_woken_from_a_stall_applies_nothing_and_heals():
    herald, cluster, ended = node()
    shards = owning(cluster, 1)
    producer = cluster._producer
    cluster._alive_at = time.monotonic() - 5 * cluster._stall_after  # the stall watch has not run since
    assert herald.refusal().code == "healing"
    cluster._apply([_Message(1, 0, None)])  # what the consumer fetched before the stall
    assert shards[1].offset == 0 and cluster.shards == {}
    assert "stopped for" in cluster._healing.reason
    cluster._tick(shards[1])
    assert not [t for t, _ in producer.sent if t == cluster.events_topic]  # no tick either


async def test_faults_in_a_row_end_the_process_with_one_line():
    herald, cluster, ended = node(cluster_heal_attempts=2)
    for attempt in range(3):
        cluster._fault("the producer failed: SASL authentication error", cluster._epoch)
    assert len(ended) == 1 and "\n" not in ended[0] and "3 times in a row" in ended[0]
    assert herald.refusal().code == "cluster_failed"


async def test_a_fault_long_after_a_heal_starts_the_count_again():
    herald, cluster, ended = node(cluster_heal_attempts=1)
    cluster._fault("fenced", cluster._epoch)
    cluster._healed("test")
    cluster._healed_at -= 60  # a minute of good health later
    cluster._fault("fenced", cluster._epoch)
    assert not ended and cluster.heals == 1


# -- consumers outside the group, a source's consumer, a producer: made again after a fatal error ----------


class _Consumer:
    """A consumer that plays a script: each consume answers the next step (a list of messages; a callable
    returning one, e.g. raising or reporting through ``error_cb``), then nothing."""

    def __init__(self, settings: dict[str, Any], script: list[Any]) -> None:
        self.settings, self.script = settings, list(script)
        self.assigned: list[tuple[int, int]] | None = None
        self.closed = False
        self._closing = threading.Event()

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, 0

    def assign(self, partitions: list) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in partitions]

    def subscribe(self, topics: list, **callbacks: Any) -> None:
        pass

    def commit(self, **options: Any) -> None:
        pass

    def consume(self, count: int = 1, timeout: float = 0) -> list:
        if not self.script:
            time.sleep(0.001)  # (a worker thread: an idle consumer waits a little, as a real one)
            return []
        step = self.script.pop(0)
        return step(self) if callable(step) else step

    def close(self) -> None:
        self.closed = True
        self._closing.set()

    def closed_by(self, seconds: float = 10.0) -> bool:
        """Whether it was closed, waiting in real time: Herald closes a failed consumer on a worker
        thread and moves on after 5 s, which a mock clock may jump before the thread ran."""
        return self._closing.wait(seconds)


class _Scripted(KafkaClients):
    """Hands out consumers playing ``scripts`` in turn (the last one again once they run out)."""

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.made: list[_Consumer] = []

    def consumer(self, settings: dict[str, Any]) -> _Consumer:
        script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        self.made.append(_Consumer(settings, script))
        return self.made[-1]


def _failing(how: str) -> Callable[[_Consumer], list]:
    """A consume that meets a fatal error: in a message, through ``error_cb``, or raised."""
    def fail(consumer: _Consumer) -> list:
        from confluent_kafka import KafkaException

        error = fatal("_FATAL")
        if how == "message":
            return [_Message(0, -1, None, error)]
        if how == "error_cb":
            consumer.settings["error_cb"](error)
            return []
        raise KafkaException(error)
    return fail


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        while not condition():
            await trio.sleep(0.01)


def _announcement(name: str, offset: int) -> _Message:
    doc = {"node": name, "url": f"http://{name}.test", "at": time.time(), "partitions": [1]}
    return _Message(0, offset, orjson.dumps(doc))


@pytest.mark.parametrize("how", ["message", "error_cb", "raised"])
async def test_the_directory_consumer_is_made_again_after_a_fatal_error_and_resumes(autojump_clock, how):
    seen: list[Any] = []
    clients = _Scripted([[_announcement("n2", 7)], _failing(how)],
                        [lambda c: seen.append(cluster.health()["consumers"]["directory"]) or [],
                         [_announcement("n3", 8)]])
    herald, cluster, ended = node(kafka=clients)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster._listen)
        await until(lambda: "n3" in cluster.directory.nodes)
        nursery.cancel_scope.cancel()
    first, second = clients.made
    assert first.closed_by() and first.assigned == [(0, 0)] and second.assigned == [(0, 8)]  # resumed after offset 7
    assert "n2" in cluster.directory.nodes
    # While the new consumer was being made, /healthz told it; it accepted events all along.
    assert "the directory's consumer failed" in seen[0]["healing"] and "injected" in seen[0]["healing"]
    assert cluster.health()["consumers"]["directory"] == {"healing": None, "heals": 1, "seconds": None}
    assert herald.refusal() is None and not ended


async def test_a_directory_consumer_that_keeps_failing_ends_the_process_with_one_line(autojump_clock):
    clients = _Scripted([_failing("message")])
    herald, cluster, ended = node(kafka=clients, cluster_heal_attempts=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster._listen)
        await until(lambda: bool(ended))
    assert cluster.failure is not None  # (and so ``_listen`` returned)
    assert len(clients.made) == 3 and all(c.closed_by() for c in clients.made)
    assert len(ended) == 1 and "\n" not in ended[0] and "directory consumer failed 3 times in a row" in ended[0]
    assert herald.refusal().code == "cluster_failed"


def _event(n: int) -> bytes:
    at = datetime(2021, 3, 1, 8, n, tzinfo=timezone.utc)
    return encode_event(Event(f"e{n}", "app_launch", "u1", at, {"user_id": "u1"}, at))


async def test_the_replicas_consumer_is_made_again_after_a_fatal_error_and_resumes_where_each_replica_stands(
        autojump_clock):
    clients = _Scripted([[_Message(1, 0, _event(0)), _Message(1, 1, _event(1))], _failing("error_cb")],
                        [[_Message(1, 2, _event(2))]])
    herald, cluster, ended = node(kafka=clients, cluster_replicas=True)
    for p in range(cluster.partitions):  # restored already (from their checkpoints)
        cluster.replica_shards[p] = replica = Shard(cluster, p, replica=True)
        replica.ready = True
    replica = cluster.replica_shards[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cluster._replicate)
        await until(lambda: replica.offset == 3)
        nursery.cancel_scope.cancel()
    first, second = clients.made
    assert first.closed_by() and dict(second.assigned)[1] == 2 and dict(second.assigned)[0] == 0
    assert replica.applied == 3 and cluster.outside["replica"].heals == 1 and not ended


async def test_a_group_consumer_that_raises_heals_the_node():  # (real time: its close is bounded by 5 s)
    clients = _Scripted([_failing("raised")])
    herald, cluster, ended = node(kafka=clients)
    owning(cluster, 2)
    await cluster._consume()  # returns: that generation is over (raises, without the heal)
    assert cluster.shards == {} and herald.refusal().code == "healing" and "injected" in cluster._healing.reason
    assert clients.made[0].closed


class _Context:
    """What a :class:`KafkaSource` uses of a plugin's context."""

    def __init__(self) -> None:
        self.config = Config()
        self.sections: dict[str, dict[str, Any]] = {}
        self.accepted: list[Event] = []

    def health(self, name: str, initial: dict[str, Any]) -> dict[str, Any]:
        return self.sections.setdefault(name, dict(initial))

    async def accept(self, events: list[Event]) -> None:
        self.accepted.extend(events)


async def test_a_kafka_source_whose_consumer_fails_ends_so_that_herald_starts_it_again():
    # Real time: the consumer is closed in a thread under a timeout, which a jumping clock would end at once.
    context = _Context()
    clients = _Scripted([_failing("message")])
    source = KafkaSource(context, "127.0.0.1:1", ["users"], "g", lambda m: [], name="crm-kafka", clients=clients)
    with pytest.raises(SourceFailed, match="crm-kafka: the consumer failed: .*injected"):
        await source.consume()
    assert clients.made[0].closed
    assert "injected" in context.sections["crm-kafka"]["last_error"]


class _Producer:
    """A producer whose delivery reports say what ``fail`` says (None: delivered)."""

    def __init__(self, fail: Any) -> None:
        self.fail, self.sent, self.reports = fail, [], []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        self.sent.append(value)
        self.reports.append((on_delivery, self.fail))

    def poll(self, timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for report, error in reports:
            report(error, _Sent(self.sent[-1]))
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class _Sent:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self) -> str:
        return "trips"

    def key(self) -> bytes:
        return b"u1"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


class _Producers(KafkaClients):
    def __init__(self, *producers: _Producer) -> None:
        self.producers = list(producers)
        self.made: list[_Producer] = []

    def producer(self, settings: dict[str, Any]) -> _Producer:
        self.made.append(self.producers.pop(0))
        return self.made[-1]


def test_a_kafka_producer_that_fails_fatally_is_made_again_and_sends_what_failed():
    clients = _Producers(_Producer(fatal("_FATAL")), _Producer(None))
    producer = KafkaProducer("127.0.0.1:1", settings=Config(), clients=clients)
    producer.produce("trips", b"u1", b"one", poll=False)
    producer.poll()  # the fatal report: a new producer, and the message again on it
    assert producer.resets == 1 and len(clients.made) == 2 and clients.made[1].sent == [b"one"]
    assert producer.drained_blocking(1.0)



class _RaisingProducer(_Producer):
    """A producer whose next poll raises a fatal error (as librdkafka does when no error_cb is set),
    and whose reports fail the messages it held."""

    def __init__(self) -> None:
        super().__init__(fatal("_FATAL"))
        self.raised = False

    def poll(self, timeout: float = 0) -> int:
        if not self.raised:
            from confluent_kafka import KafkaError, KafkaException

            self.raised = True
            raise KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "injected", fatal=True))
        return super().poll(timeout)


def test_a_fatal_error_raised_by_poll_makes_a_new_producer_that_sends_what_failed():
    clients = _Producers(_RaisingProducer(), _Producer(None))
    producer = KafkaProducer("127.0.0.1:1", settings=Config(), clients=clients)
    producer.produce("trips", b"u1", b"one", poll=False)
    producer.poll()  # raised inside: not to the caller (the crm delivery crashed on it, for good)
    assert producer.resets == 1 and clients.made[1].sent == [b"one"]
    assert producer.drained_blocking(1.0)


class _RefusingProducer(_Producer):
    """A producer whose first ``produce`` raises a fatal error."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(KafkaError._FATAL, "injected", fatal=True))


def test_a_fatal_error_raised_by_produce_sends_the_message_on_a_new_producer():
    clients = _Producers(_RefusingProducer(None), _Producer(None))
    producer = KafkaProducer("127.0.0.1:1", settings=Config(), clients=clients)
    producer.produce("trips", b"u1", b"one")
    assert producer.resets == 1 and clients.made[1].sent == [b"one"]
    assert producer.drained_blocking(1.0)

# -- logs: a cluster node's records name it, and the partition they concern --------------------------


def _json_records(logger: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = log_handler("json", stream)
    handler.setLevel(logging.INFO)
    logging.getLogger(logger).addHandler(handler)
    return stream, handler


async def test_a_cluster_nodes_json_log_lines_carry_its_node_and_the_partition():
    herald, cluster, ended = node(node_id="node-a")
    [shard] = owning(cluster, 4).values()
    shard.ready, shard.catch_up_to = False, 0
    streams = [_json_records("herald.cluster"), _json_records("herald.engine")]
    level = logging.getLogger("herald.cluster").level
    logging.getLogger("herald.cluster").setLevel(logging.INFO)
    try:
        cluster._caught_up(shard)  # "partition 4 ready"
        cluster._fault("the producer failed: PRODUCER_FENCED", cluster._epoch)
        failing = Event("ev-9", "app_launch", "u1", datetime(2021, 3, 1, tzinfo=timezone.utc), "not a dict",
                        datetime(2021, 3, 1, tzinfo=timezone.utc))
        Shard(cluster, 4).apply(_Message(4, 0, encode_event(failing)))  # the handler fails on its data
    finally:
        logging.getLogger("herald.cluster").setLevel(level)
        for logger, (_, handler) in zip(("herald.cluster", "herald.engine"), streams):
            logging.getLogger(logger).removeHandler(handler)
    ready, healing = (orjson.loads(line) for line in streams[0][0].getvalue().splitlines())
    assert (ready["node"], ready["partition"]) == ("node-a", 4) and "partition 4 ready" in ready["message"]
    assert healing["node"] == "node-a" and "partition" not in healing and "healing" in healing["message"]
    [handler_failed] = [orjson.loads(line) for line in streams[1][0].getvalue().splitlines()]
    assert {k: handler_failed[k] for k in ("node", "partition", "plugin", "event_id")} == {
        "node": "node-a", "partition": 4, "plugin": "fitness", "event_id": "ev-9"}

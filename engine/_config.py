"""Configuration: embedded defaults, overridden by ``HERALD_*`` variables, then flags."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs

from ._kafka_props import ClientProperties
from ._redact import redact_url

__all__ = ["Config", "ConfigError", "MIN_TOKEN_LENGTH", "SETTINGS", "non_negative", "parse_load_spec", "parse_networks",
           "parse_plugin_list", "positive"]


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


#: The shortest admin token Herald accepts (a short one is guessed; see docs/security.md).
MIN_TOKEN_LENGTH = 16


def _token_long_enough(_config: Any, _attribute: Any, token: str | None) -> None:
    # Never echo the token: say what is wrong with it only.
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"HERALD_ADMIN_TOKEN is too short: it needs at least {MIN_TOKEN_LENGTH} characters "
                          "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")


def parse_plugin_list(value: str | None) -> list[str] | None:
    """``a,b`` -> ``["a", "b"]``; empty, ``all`` or ``*`` -> None (every installed plugin)."""
    if value is None or value.strip() in ("", "all", "*"):
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser for settings that must be > 0 (``positive(float)``), for ``plugin_setting`` too."""
    def convert(value: str) -> Any:
        result = kind(value)
        if result <= 0:
            raise ValueError("must be positive")
        return result

    return convert


def non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser for settings that must be >= 0."""
    def convert(value: str) -> Any:
        result = kind(value)
        if result < 0:
            raise ValueError("must not be negative")
        return result

    return convert


_positive = positive


def _durability(value: str) -> str:
    value = value.strip().lower()
    if value not in ("fsync", "batch", "memory"):
        raise ValueError("must be fsync, batch or memory")
    return value


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in ("auto", "text", "rich", "json"):
        raise ValueError("must be auto, text, rich or json")
    return value


def _kafka_properties(value: str | ClientProperties | None) -> ClientProperties | None:
    if value is None or isinstance(value, ClientProperties):
        return value
    return ClientProperties.read(value)


def _delays(value: str) -> tuple[float, ...]:
    delays = tuple(float(part) for part in value.split(",") if part.strip())
    if not delays or any(d < 0 for d in delays):
        raise ValueError("must be non-negative seconds, comma-separated")
    return delays


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be between 0 and 65535")
    return port


def _body_timeout(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= 30:
        raise ValueError("must be more than 0 and at most 30 seconds")
    return seconds


def _flag(value: str) -> bool:
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 100 or not all(c.isalnum() or c in "._-:" for c in value):
        raise ValueError("must be 1-100 letters, digits or . _ - :")
    return value


def parse_load_spec(value: str) -> tuple[tuple[str, str], ...]:
    """``customers=a.data,customers=b.data`` -> ``(("customers", "a.data"), ...)``."""
    pairs = []
    for part in value.split(","):
        if not part.strip():
            continue
        loader, sep, path = part.partition("=")
        if not sep or not loader.strip() or not path.strip():
            raise ValueError(f"{part!r} is not LOADER=FILE")
        pairs.append((loader.strip(), path.strip()))
    return tuple(pairs)


_load_spec = parse_load_spec

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str | Any) -> tuple[Network, ...]:
    """``10.0.0.5, 192.168.0.0/16, ::1`` (or an iterable of such) -> the networks (an address is a network
    of one); ValueError naming the first entry that is neither an IP address nor a network in CIDR notation."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for part in parts:
        if isinstance(part, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(part)
            continue
        text = str(part).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text))
        except ValueError:
            try:
                meant = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is neither an IP address nor a network in CIDR notation "
                                 "(such as 10.0.0.0/8)") from None
            raise ValueError(f"{text!r} has host bits set: the network is {meant}") from None
    return tuple(networks)


@attrs.frozen
class Setting:
    """One documented setting: its field, environment variable and meaning."""

    field: str
    env: str
    parse: Callable[[str], Any]
    help: str
    #: Never echoed (an error about it says what is wrong, not what it was).
    secret: bool = False


#: Every engine setting, in the order the settings page (docs/operations/settings.md) lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting("host", "HERALD_HOST", str, "interface to listen on"),
    Setting("port", "HERALD_PORT", _port, "TCP port to listen on"),
    Setting("data_dir", "HERALD_DATA_DIR", str, "directory for Herald's data"),
    Setting("plugins", "HERALD_PLUGINS", parse_plugin_list, "comma-separated plugins to enable (default: all installed)"),
    Setting("notify_url", "HERALD_NOTIFY_URL", str, "where notifications without a URL of their own are POSTed (default: this server's /v1/notify)"),
    Setting("max_skew", "HERALD_MAX_SKEW", _positive(float), "seconds an event may be ahead of the wall clock"),
    Setting("allowed_lateness", "HERALD_ALLOWED_LATENESS", non_negative(float),
            "seconds the watermark trails the newest event timestamp (timers it passes fire)"),
    Setting("effect_queue", "HERALD_EFFECT_QUEUE", _positive(int), "effects held in memory for delivery (more wait in the journal)"),
    Setting("effect_workers", "HERALD_EFFECT_WORKERS", _positive(int), "concurrent effect deliveries"),
    Setting("effect_timeout", "HERALD_EFFECT_TIMEOUT", _positive(float), "seconds per delivery attempt"),
    Setting("log_level", "HERALD_LOG_LEVEL", str.upper, "logging level"),
    Setting("log_format", "HERALD_LOG_FORMAT", _log_format,
            "auto (rich on a terminal, else text), text (one line per record), rich or json (one object per line)"),
    Setting("durability", "HERALD_DURABILITY", _durability, "fsync, batch or memory (see the docs: Guarantees)"),
    Setting("sync_interval", "HERALD_SYNC_INTERVAL", _positive(float), "batch durability: seconds between WAL fsyncs"),
    Setting("snapshot_every", "HERALD_SNAPSHOT_EVERY", _positive(int), "events between snapshots"),
    Setting("snapshot_interval", "HERALD_SNAPSHOT_INTERVAL", _positive(float), "seconds between snapshots (if anything changed)"),
    Setting("dedupe_retention", "HERALD_DEDUPE_RETENTION", _positive(float), "seconds an event id is remembered for deduplication"),
    Setting("dedupe_max", "HERALD_DEDUPE_MAX", _positive(int), "event ids remembered at most"),
    Setting("webhook_secret", "HERALD_WEBHOOK_SECRET", str, "sign deliveries with HMAC-SHA256 (Standard Webhooks)",
            secret=True),
    Setting("outbox_delays", "HERALD_OUTBOX_DELAYS", _delays, "comma-separated seconds between delivery attempts"),
    Setting("outbox_max_age", "HERALD_OUTBOX_MAX_AGE", _positive(float), "seconds after which an undelivered effect is dead"),
    Setting("admin_token", "HERALD_ADMIN_TOKEN", str,
            "bearer token required by writes and reads of personal data, at least 16 characters "
            "(default: none; loopback only)", secret=True),
    Setting("ui_session_idle", "HERALD_UI_SESSION_IDLE", _positive(float),
            "seconds a signed-in web page session lasts without a request"),
    Setting("ui_session_max", "HERALD_UI_SESSION_MAX", _positive(float),
            "seconds a signed-in web page session lasts at most, however busy"),
    Setting("drain_timeout", "HERALD_DRAIN_TIMEOUT", _positive(float), "seconds to finish deliveries at shutdown"),
    Setting("journal_retry", "HERALD_JOURNAL_RETRY", _positive(float),
            "seconds before the first retry of a journal that failed a write (doubling, at most 60)"),
    Setting("load", "HERALD_LOAD", _load_spec, "files to bulk-load at start: LOADER=FILE, comma-separated"),
    Setting("max_load_bytes", "HERALD_MAX_LOAD_BYTES", _positive(int), "largest body of POST /v1/load/{loader} (herald load sends 32 MiB)"),
    Setting("body_timeout", "HERALD_BODY_TIMEOUT", _body_timeout,
            "seconds a request body may take (at most 30); each 64 KiB received restarts the clock"),
    Setting("max_connections", "HERALD_MAX_CONNECTIONS", _positive(int),
            "open connections at most; at the cap the oldest idle ones are closed"),
    Setting("trusted_proxies", "HERALD_TRUSTED_PROXIES", parse_networks,
            "comma-separated addresses or CIDR networks of reverse proxies whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed (default: none; see docs/security.md)"),
    Setting("cluster", "HERALD_CLUSTER", str,
            "Kafka bootstrap servers: run as a node of a cluster over Kafka (see docs/cluster.md); "
            "default: one embedded process"),
    Setting("cluster_name", "HERALD_CLUSTER_NAME", _name, "cluster name: the consumer group and the topics' prefix"),
    Setting("cluster_partitions", "HERALD_CLUSTER_PARTITIONS", _positive(int),
            "partitions of the events topic (fixed when the cluster is first started)"),
    Setting("cluster_session_timeout", "HERALD_CLUSTER_SESSION_TIMEOUT", _positive(float),
            "seconds before a silent node's partitions move to others (bounds the takeover time)"),
    Setting("cluster_checkpoint", "HERALD_CLUSTER_CHECKPOINT", _positive(float),
            "seconds between checkpoints of a partition to the changelog (bounds what a takeover replays)"),
    Setting("cluster_tick", "HERALD_CLUSTER_TICK", _positive(float),
            "seconds between ticks of partitions holding timers (bounds how late a timer fires)"),
    Setting("cluster_announce", "HERALD_CLUSTER_ANNOUNCE", _positive(float),
            "seconds between a node's announcements of the partitions it serves"),
    Setting("cluster_produce_timeout", "HERALD_CLUSTER_PRODUCE_TIMEOUT", _positive(float),
            "seconds an accepted event may wait for the broker before the request answers 503"),
    Setting("cluster_handover", "HERALD_CLUSTER_HANDOVER", non_negative(float),
            "seconds a node leaving a partition waits for its deliveries in flight before it hands it over"),
    Setting("cluster_heal_attempts", "HERALD_CLUSTER_HEAL_ATTEMPTS", _positive(int),
            "fatal Kafka client errors in a row a node heals from (new clients, rejoin) before it exits (status 70)"),
    Setting("cluster_replicas", "HERALD_CLUSTER_REPLICAS", _flag,
            "keep a read replica of every partition on every node (plugins' queries then see every actor)"),
    Setting("kafka_config", "HERALD_KAFKA_CONFIG", _kafka_properties,
            "a client.properties file of librdkafka settings (TLS, SASL, tuning) for every Kafka client Herald makes"),
    Setting("kafka_replication", "HERALD_KAFKA_REPLICATION", _positive(int),
            "replication factor of the Kafka topics Herald creates"),
    Setting("kafka_min_insync", "HERALD_KAFKA_MIN_INSYNC", _positive(int),
            "min.insync.replicas of the Kafka topics Herald creates (default: the broker's)"),
    Setting("node_id", "HERALD_NODE_ID", _name, "this node's name in the cluster (default host:port:pid)"),
    Setting("node_url", "HERALD_NODE_URL", str,
            "the URL other nodes send queries for this node's actors to (default http://HOST:PORT)"),
)


@attrs.frozen
class Config:
    """Settings of one Herald instance. ``environ`` keeps the environment it
    was read from so that plugins can read their own ``HERALD_<PLUGIN>_*``."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./herald-data"
    plugins: list[str] | None = None
    notify_url: str | None = None
    max_skew: float = 300.0
    allowed_lateness: float = 3600.0
    effect_queue: int = 10_000
    effect_workers: int = 16
    effect_timeout: float = 5.0
    log_level: str = "INFO"
    log_format: str = "auto"
    durability: str = "batch"
    sync_interval: float = 0.1
    snapshot_every: int = 100_000
    snapshot_interval: float = 300.0
    dedupe_retention: float = 86_400.0
    dedupe_max: int = 1_000_000
    webhook_secret: str | None = None
    outbox_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
    outbox_max_age: float = 86_400.0
    admin_token: str | None = attrs.field(default=None, validator=_token_long_enough)
    ui_session_idle: float = 1800.0
    ui_session_max: float = 43_200.0
    drain_timeout: float = 5.0
    journal_retry: float = 1.0
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_load_bytes: int = 64 * 1024 * 1024
    load: tuple[tuple[str, str], ...] = ()
    body_timeout: float = 10.0
    max_connections: int = 1000
    #: Reverse proxies whose forwarded headers are believed (``parse_networks`` takes a string or a list too).
    trusted_proxies: tuple[Network, ...] = attrs.field(default=(), converter=parse_networks)
    cluster: str | None = None
    cluster_name: str = "herald"
    cluster_partitions: int = 6
    cluster_session_timeout: float = 2.0
    cluster_checkpoint: float = 2.0
    cluster_tick: float = 1.0
    cluster_announce: float = 1.0
    cluster_produce_timeout: float = 10.0
    cluster_handover: float = 2.0
    cluster_replicas: bool = True
    cluster_heal_attempts: int = 5
    node_id: str | None = None
    node_url: str | None = None
    kafka_config: ClientProperties | None = attrs.field(default=None, converter=_kafka_properties)
    kafka_replication: int = 1
    kafka_min_insync: int | None = None
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Config":
        """Defaults, then ``HERALD_*`` variables, then ``overrides`` (not None)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw is None or raw == "":
                continue
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                shown = "<secret>" if setting.secret else redact_url(raw) if "://" in raw else repr(raw)
                raise ConfigError(f"{setting.env}={shown}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(environ=environ, **values)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def self_url(self) -> str:
        """This server's base URL as seen from the same machine."""
        host = self.host
        if host in ("0.0.0.0", "", "::", "localhost"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def effective_notify_url(self) -> str:
        return self.notify_url or f"{self.self_url}/v1/notify"

    def data_file(self, name: str) -> Path | None:
        """Where a plugin keeps a file of its own beside the journal (``None`` with ``durability=memory``:
        keep it in memory too; also in a cluster, whose state lives in Kafka). The data directory is created if needed."""
        if self.durability == "memory" or self.cluster:
            return None
        self.data_path.mkdir(parents=True, exist_ok=True)
        return self.data_path / name

    def plugin_setting(self, plugin: str, name: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
        """Read ``HERALD_<PLUGIN>_<NAME>`` from the environment, else ``default``."""
        env = f"HERALD_{plugin}_{name}".upper()
        raw = self.environ.get(env)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{env}={raw!r}: {exc}") from None

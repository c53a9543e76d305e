"""Herald's engine: events, actors with their own clocks, timers, plugins, effects, the journal.

A plugin needs the names below and nothing else (and :mod:`engine.testing`
for its tests); the implementation modules (``engine._*``) are private. The
contract a plugin keeps is in ``docs/plugins.md``. Bringing events in has
one verb per idea: :meth:`Context.accept` (durable: journaled before it
returns), ``Engine.apply`` / ``Simulation.apply`` (in memory), and bulk
``load`` for files of lines.
"""

# For plugins: declaring what they handle, and the values they handle.
from ._clock import iso_utc, utc_datetime
from ._context import GUARDED_ROUTE, ActorView, Context, TimerView
from ._effects import CancelTimer, Notify, SetTimer, Timer
from ._engine import REMOVED, LoadReport, StateTable
from ._event import MAX_JSON_DEPTH, Event, InvalidEvent, decode_json, new_event_id, parse_timestamp
from ._plugins import EventType, Loader, Origin, PluginError
from ._config import Config, ConfigError, non_negative, positive
from ._journal import JournalError
from ._clients import KafkaClients
from ._kafka import KafkaProducer, KafkaSource, Refused, SourceFailed, ensure_topics, kafka_event_id
from ._outbox import DeliveryError, Signer
from ._redact import redact_text, redact_url
from .hookspecs import hookimpl, hookspec

# For hosts (the web layer, the CLI, benchmarks): running the engine.
from ._engine import Engine
from ._herald import Herald, tune_gc
from ._plugins import PluginHost, available_plugins

__all__ = [
    # plugins
    "ActorView",
    "CancelTimer",
    "Config",
    "ConfigError",
    "Context",
    "DeliveryError",
    "Event",
    "EventType",
    "InvalidEvent",
    "JournalError",
    "KafkaClients",
    "KafkaProducer",
    "KafkaSource",
    "LoadReport",
    "Loader",
    "MAX_JSON_DEPTH",
    "Notify",
    "Origin",
    "PluginError",
    "REMOVED",
    "Refused",
    "SetTimer",
    "Signer",
    "SourceFailed",
    "StateTable",
    "Timer",
    "TimerView",
    "decode_json",
    "ensure_topics",
    "kafka_event_id",
    "hookimpl",
    "hookspec",
    "iso_utc",
    "new_event_id",
    "non_negative",
    "parse_timestamp",
    "positive",
    "redact_text",
    "redact_url",
    "utc_datetime",
    # hosts
    "Engine",
    "GUARDED_ROUTE",
    "Herald",
    "PluginHost",
    "available_plugins",
    "tune_gc",
]

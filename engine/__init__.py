"""Herald's engine: events, virtual actors, timers, plugins and effects.

The public API is re-exported here; plugin authors need nothing else (and
:mod:`engine.testing` for their tests).
"""

from .actor import Actor
from .clock import StreamClock
from .config import Config, ConfigError
from .core import LOAD_TYPE, REMOVED, Engine, LoadReport, StateTable
from .effects import CancelTimer, Effect, Notify, SetTimer, Timer
from .event import Event, InvalidEvent, converter, dumps, loads, new_event_id, parse_event, parse_timestamp
from .hookspecs import hookimpl
from .metrics import Metrics
from .plugins import EventType, Loader, Origin, PluginError, PluginHost, available_plugins
from .journal import Durability, Journal, JournalError
from .outbox import DeliveryError, Outbox, RetrySchedule, Signer
from .redact import redact_text, redact_url
from .runtime import Herald, tune_gc

__all__ = [
    "Actor",
    "CancelTimer",
    "Config",
    "ConfigError",
    "DeliveryError",
    "Effect",
    "Durability",
    "Engine",
    "Event",
    "EventType",
    "Herald",
    "InvalidEvent",
    "LOAD_TYPE",
    "LoadReport",
    "Loader",
    "Journal",
    "JournalError",
    "Metrics",
    "Notify",
    "Origin",
    "Outbox",
    "PluginError",
    "PluginHost",
    "REMOVED",
    "RetrySchedule",
    "SetTimer",
    "StreamClock",
    "Signer",
    "StateTable",
    "Timer",
    "available_plugins",
    "converter",
    "dumps",
    "hookimpl",
    "loads",
    "new_event_id",
    "parse_event",
    "parse_timestamp",
    "redact_text",
    "redact_url",
    "tune_gc",
]

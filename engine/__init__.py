"""Herald's plugin API: what a plugin declares, the values its handlers take and return, and its context.

A plugin needs the names below and nothing else (plus :mod:`engine.testing`
for its tests, and :mod:`engine.kafka` if it talks to Kafka); the
implementation modules (``engine._*``) are private. They are the stable plugin
API, version :data:`API_VERSION`: a plugin may declare the version it is
written for with a module attribute ``HERALD_API = "1"``, and a Herald
offering another refuses it at registration, in one line. The contract a
plugin keeps, and what is stable, is in ``docs/plugins.md``.

Hosts (the web layer, the CLI, benchmarks, an embedding program) run the
engine through :mod:`engine.host`. The host names ``engine`` offered up to
0.2 (``Engine``, ``Herald``, ``PluginHost``, ``tune_gc``, the Kafka helpers,
...) still resolve here, with a ``DeprecationWarning`` naming their new home.

Bringing events in has one verb per idea: :meth:`Context.accept` (durable:
journaled before it returns), ``Engine.apply`` / ``Simulation.apply`` (in
memory), and bulk ``load`` for files of lines.
"""

import importlib as _importlib
import warnings as _warnings
from typing import Any as _Any

# Declaring what a plugin handles.
from .hookspecs import hookimpl, hookspec
from ._default import DefaultHandler
from ._plugins import API_VERSION, EventType, Loader, Origin, PluginError
# The values handlers take and return.
from ._event import MAX_JSON_DEPTH, Event, InvalidEvent, decode_json, new_event_id, parse_timestamp
from ._effects import CancelTimer, Notify, SetTimer, Timer
from ._engine import REMOVED, LoadReport, StateTable
from ._clock import iso_utc, utc_datetime
# What a plugin's acting hooks receive, and what they may raise or use.
from ._context import ActorView, Context, TimerView
from ._config import Config, ConfigError, non_negative, positive
from ._journal import JournalError
from ._outbox import DeliveryError, Signer
from ._redact import redact_text, redact_url
# A sink's slow work on a thread of its own.
from ._sink_thread import SinkThread

__all__ = [
    "API_VERSION",
    # declaring
    "DefaultHandler",
    "EventType",
    "Loader",
    "Origin",
    "PluginError",
    "hookimpl",
    "hookspec",
    # events and effects
    "CancelTimer",
    "Event",
    "InvalidEvent",
    "LoadReport",
    "MAX_JSON_DEPTH",
    "Notify",
    "REMOVED",
    "SetTimer",
    "StateTable",
    "Timer",
    "decode_json",
    "iso_utc",
    "new_event_id",
    "parse_timestamp",
    "utc_datetime",
    # the context and the settings
    "ActorView",
    "Config",
    "ConfigError",
    "Context",
    "DeliveryError",
    "JournalError",
    "Signer",
    "SinkThread",
    "TimerView",
    "non_negative",
    "positive",
    "redact_text",
    "redact_url",
]

#: Names ``engine`` offered up to 0.2 that now live elsewhere: name -> its module.
_MOVED = {
    "Engine": "engine.host",
    "GUARDED_ROUTE": "engine.host",
    "Herald": "engine.host",
    "PluginHost": "engine.host",
    "available_plugins": "engine.host",
    "tune_gc": "engine.host",
    "KafkaProducer": "engine.kafka",
    "KafkaSource": "engine.kafka",
    "Refused": "engine.kafka",
    "ensure_topics": "engine.kafka",
    "kafka_event_id": "engine.kafka",
}


def __getattr__(name: str) -> _Any:
    """The names moved out of ``engine`` after 0.2, still found here with a DeprecationWarning."""
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    _warnings.warn(f"engine.{name} is deprecated: import it from {home} (engine keeps the plugin API only)",
                   DeprecationWarning, stacklevel=2)
    return getattr(_importlib.import_module(home), name)

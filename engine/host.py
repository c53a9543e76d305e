"""Running Herald: what a host (the web layer, the CLI, a benchmark, an embedding program) uses.

A plugin never needs these (it uses :mod:`engine`); a host builds the plugin
set, then either a whole server or a bare engine:

- :class:`PluginHost` loads and registers plugins (``from_config`` for the
  installed or configured ones, ``from_objects`` for modules at hand) and
  checks their declarations; :func:`available_plugins` lists what is installed.
- :class:`Herald` is a running server without its web app: the journal,
  snapshots, the outbox, plugins' sources and sinks, a cluster when
  configured. ``async with Herald(config, plugins).running():`` starts and
  stops it; ``accept`` is durable ingestion.
- :class:`Engine` is the in-memory core alone (actors, clocks, timers), as a
  benchmark or a simulation drives it: ``parse`` then ``apply``.
- :data:`GUARDED_ROUTE` is how a web layer tells the engine that a request
  passed a credential check (internal event types may then enter through it).
- :func:`tune_gc` sets the garbage collector for many long-lived objects, as
  ``herald serve`` does.
"""

from ._context import GUARDED_ROUTE
from ._engine import Engine
from ._herald import Herald, tune_gc
from ._plugins import PluginHost, available_plugins

__all__ = ["Engine", "GUARDED_ROUTE", "Herald", "PluginHost", "available_plugins", "tune_gc"]

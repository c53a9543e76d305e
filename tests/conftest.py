"""Shared fixtures: a Herald app driven through HTTP in-process, and helpers."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest

from engine import Config, Herald, PluginHost
from plugins.fitness import hooks as fitness
from server import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def app_client(plugins: list[Any] | None = None, **settings: Any) -> AsyncIterator[tuple[Herald, httpx.AsyncClient]]:
    """A running Herald with its ASGI app behind an httpx client (no sockets).

    In memory unless ``durability`` (and a ``data_dir``) are given."""
    settings.setdefault("durability", "memory")
    config = Config(**settings)
    host = PluginHost.from_objects(config, [fitness] if plugins is None else plugins)
    herald = Herald(config, host)
    app = create_app(herald)
    async with herald.running():
        await herald.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
            yield herald, client


@pytest.fixture
async def client():
    async with app_client() as (_, client):
        yield client


@pytest.fixture
async def herald_and_client():
    async with app_client() as pair:
        yield pair

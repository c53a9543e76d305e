"""The project's own fixtures: a Herald with the fitness plugin behind an in-process client.

The general ones (``herald_process``, ``app_client``, ``free_port``, ``herald_command``,
``kafka_bootstrap``) come from :mod:`engine.testing`, Herald's pytest plugin, so that a
third-party plugin's tests have them too.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from engine.testing import app_client as _app_client
from engine.testing import free_port, herald_command, herald_process  # noqa: F401  (re-exported for the tests)
from plugins.fitness import hooks as fitness


@asynccontextmanager
async def app_client(plugins: list[Any] | None = None, **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """:func:`engine.testing.app_client` with the fitness plugin unless told otherwise."""
    async with _app_client([fitness] if plugins is None else plugins, **settings) as pair:
        yield pair


@pytest.fixture
async def client():
    async with app_client() as (_, client):
        yield client


@pytest.fixture
async def herald_and_client():
    async with app_client() as pair:
        yield pair

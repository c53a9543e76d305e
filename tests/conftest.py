"""The project's own fixtures: a Herald with the fitness plugin behind an in-process client.

The general ones come from Herald's pytest plugins, so that a third-party plugin's tests
have them too: ``herald_process``, ``free_port``, ``herald_command``, ``kafka_bootstrap``
from :mod:`engine.testing`, the ``app_client`` fixture (and function) from :mod:`web.testing`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from engine.testing import free_port, herald_command, herald_process  # noqa: F401  (re-exported for the tests)
from plugins.fitness import hooks as fitness
from web.testing import app_client as _app_client


@asynccontextmanager
async def app_client(plugins: list[Any] | None = None, **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """:func:`web.testing.app_client` with the fitness plugin unless told otherwise."""
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

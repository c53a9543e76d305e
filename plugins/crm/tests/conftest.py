"""Fixtures of the crm plugin's tests: a real PostgreSQL (marker ``postgres``) for the shared key store."""

from __future__ import annotations

import itertools
from typing import Iterator

import pytest

from .postgres import PostgresServer, serve_or_skip

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (Debian's binaries; skips, saying why, where it cannot start)."""
    yield from serve_or_skip()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL (password included) of a database of its own for this test, dropped after it."""
    import psycopg

    name = f"herald_test_{next(_databases)}"
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def pytest_collection_modifyitems(items: list) -> None:
    """A test that asks for PostgreSQL is a ``postgres`` test (``-m 'not postgres'`` leaves it out)."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)

"""The key stores behind crypto-shredding: one contract for both, and what the shared one adds.

The contract runs on the SQLite file of a single process (default run) and on
PostgreSQL (marker ``postgres``: a real server from Debian's binaries, see
``postgres.py``). PostgreSQL's stores stand for two nodes: each its own pool
and cache, one database.
"""

from __future__ import annotations

import hashlib

import psycopg
import pytest
import trio

from plugins.crm import hooks
from plugins.crm.keystore import Erased, KeyStore, KeyStoreUnavailable
from plugins.crm.keystore_sqlite import SqliteKeyStore
from engine.testing import serving
from plugins.crm.mock_crm import CrmStore, standalone_app
from web.testing import app_client

U, V = "ed2f89d9-4a2f-40aa-b3c6-4af775a89294", "0b7e1c1a-5d0a-4d55-9d4e-6f0f3c2f7a11"


class Clock:
    """A clock a test moves by hand (the stores' TTL is read from it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def stores(request, tmp_path):
    """A function that opens another store on the same keys (a reopened file; another node's pool)."""
    opened: list[KeyStore] = []

    async def another(**options) -> KeyStore:
        if request.param == "sqlite":
            store = SqliteKeyStore(tmp_path / "keys.db")
        else:
            from plugins.crm.keystore_postgres import PostgresKeyStore

            store = PostgresKeyStore(request.getfixturevalue("postgres_url"), **options)
        await store.open()
        opened.append(store)
        return store

    yield another
    for store in opened:
        await store.aclose()


async def test_a_users_key_is_made_once_and_stays(stores):
    keys = await stores()
    assert isinstance(keys, KeyStore)
    assert await keys.existing(U) is None  # unknown: looking does not make one
    first = await keys.key(U)
    assert len(first) == 32 and await keys.key(U) == first and await keys.existing(U) == first
    assert await keys.key(V) != first
    assert await (await stores()).key(U) == first  # the same key through another handle on the store


async def test_erasure_forgets_the_key_for_good(stores):
    keys = await stores()
    other = await stores()
    await keys.key(U)
    kept = await keys.key(V)
    assert await keys.erase(U) is True
    with pytest.raises(Erased):
        await keys.key(U)  # and no new key is made
    assert await keys.existing(U) is None
    later = await stores()  # a restarted process, or another node
    with pytest.raises(Erased):
        await later.key(U)
    assert await later.existing(U) is None and await other.key(V) == kept


async def test_erasure_is_idempotent_and_covers_users_never_seen(stores):
    keys = await stores()
    await keys.key(U)
    assert await keys.erase(U) is True
    assert await keys.erase(U) is False
    assert await keys.erase(V) is False  # never had a key: none will ever be made
    with pytest.raises(Erased):
        await keys.key(V)
    with pytest.raises(Erased):
        await keys.key(U)


def _rows(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(f"SELECT subject FROM {table}")}


@pytest.mark.postgres
async def test_another_nodes_erasure_reaches_this_node_within_the_ttl(postgres_url):
    from plugins.crm.keystore_postgres import PostgresKeyStore

    clock = Clock()
    a = PostgresKeyStore(postgres_url, ttl=5.0)
    b = PostgresKeyStore(postgres_url, ttl=5.0, listen=False, clock=clock)  # hears nothing: the TTL alone
    await a.open()
    await b.open()
    try:
        key = await a.key(U)
        assert await b.key(U) == key and b.cached(U)
        assert await a.erase(U) is True
        subject = hashlib.sha256(U.encode()).hexdigest()
        assert subject not in await trio.to_thread.run_sync(_rows, postgres_url, "herald_crm_keys")
        assert subject in await trio.to_thread.run_sync(_rows, postgres_url, "herald_crm_erased")
        clock.now += 4.9
        assert await b.key(U) == key  # the bound: a node that missed the notice trusts its copy for the TTL
        clock.now += 0.2
        assert not b.cached(U)
        with pytest.raises(Erased):
            await b.key(U)
        assert await b.existing(U) is None
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.postgres
async def test_an_erasure_is_announced_and_every_listening_node_forgets_at_once(postgres_url):
    from plugins.crm.keystore_postgres import PostgresKeyStore

    a = PostgresKeyStore(postgres_url, ttl=3600)
    b = PostgresKeyStore(postgres_url, ttl=3600)  # an hour: only the notification can make b forget
    await a.open()
    await b.open()
    try:
        await until(b.listening.is_set)
        key = await a.key(U)
        assert await b.key(U) == key and await b.key(V)
        await a.erase(U)
        await until(lambda: not b.cached(U))
        with pytest.raises(Erased):
            await b.key(U)
        assert b.cached(V)  # the others stay cached
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.postgres
async def test_herald_uses_the_shared_store_and_never_shows_its_password(postgres, postgres_url):
    from plugins.crm.keystore_postgres import PostgresKeyStore

    wrong = postgres_url.replace(postgres.password, "not-the-pw-4711")
    store = PostgresKeyStore(wrong, timeout=2)
    with pytest.raises(KeyStoreUnavailable) as refused:
        await store.open()
    assert "not-the-pw-4711" not in str(refused.value) and "***" in str(refused.value)
    assert "not-the-pw-4711" not in repr(store.description)
    environ = {"HERALD_CRM_KEYSTORE": postgres_url, "HERALD_CRM_KEY_TTL": "1"}
    async with serving(standalone_app(CrmStore())) as crm_url, \
            app_client([("crm", hooks)], environ={**environ, "HERALD_CRM_URL": crm_url}) as (herald, client):
        health = await client.get("/healthz")
        assert postgres.password not in health.text
        assert health.json()["sources"]["crm_keys"]["store"] == "postgresql"
        erased = await client.delete(f"/v1/subjects/{U}")
        assert erased.status_code == 202 and postgres.password not in erased.text
        assert (await client.get(f"/v1/subjects/{U}/key")).status_code == 404
        assert await herald.flush_sinks(10)
    assert hashlib.sha256(U.encode()).hexdigest() in await trio.to_thread.run_sync(
        _rows, postgres_url, "herald_crm_erased")
    assert await trio.to_thread.run_sync(_others_connected, postgres_url) == 0  # Herald let go of its pool


def _others_connected(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchone()[0]

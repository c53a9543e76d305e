"""The crm delivery on its own thread: per-user order across the hand-off, acknowledgement only after
delivery, erasure, retries, and the thread joined at stop (the CRM as an httpx transport: no sockets;
real threads, so the real clock)."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import attrs
import httpx
import orjson
import trio

from plugins.crm.api import ERASE
from plugins.crm.delivery import Delivery
from plugins.crm.keystore_sqlite import SqliteKeyStore
from plugins.crm.model import CrmCall, CrmState, on_erase, on_user
from plugins.crm.sealing import seal_events
from .test_sealing import U, events, user_message

THREAD = "herald-crm-delivery"


class Context:
    def __init__(self) -> None:
        self.sections: dict = {}

    def health(self, name, initial):
        return self.sections.setdefault(name, dict(initial))


class Crm:
    """Answers like the CRM (201 to a create, 200 to a replace or a delete); records every call with the
    thread it came from; a call whose body has ``"hold"`` waits for :attr:`gate`; :attr:`fail` 503s first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict | None]] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.fail = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.threads.add(threading.current_thread().name)
        body = orjson.loads(request.content) if request.content else None
        if body and body.get("hold"):
            await trio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
        await trio.sleep(random.random() / 1000)  # workers finish out of order
        if self.fail:
            self.fail -= 1
            return httpx.Response(503)
        self.calls.append((request.method, request.url.path, body))
        return httpx.Response(201 if request.method == "POST" and request.url.path.count("/") == 1 else 200)


def delivery(crm: Crm, keys=None, **options) -> tuple[Delivery, Context]:
    context = Context()
    return Delivery(context, "http://crm.test", keys or SqliteKeyStore(None), None,
                    transport=httpx.MockTransport(crm), **options), context


def _alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == THREAD]


async def test_each_users_calls_reach_the_crm_in_order_from_the_delivery_thread_and_it_is_joined_at_stop():
    crm = Crm()
    sink, context = delivery(crm)
    users = [f"user-{n}" for n in range(40)]
    put = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        for n in range(30):  # the engine's loop puts users' effects interleaved, in several hand-offs
            for user in users:
                sink.put(CrmCall(user, "user", user, {"Id": user, "LastName": "L", "n": n}))
                put += 1
            await trio.sleep(0)
        assert context.sections["crm"]["pending"] > 0  # counted when put, before the thread took them
        with trio.fail_after(30):
            await sink.flush()
        assert context.sections["crm"]["pending"] == 0 and context.sections["crm"]["delivered"] == put
        assert _alive() == [THREAD]
        nursery.cancel_scope.cancel()
    seen = defaultdict(list)
    for _method, path, body in crm.calls:
        seen[body["Id"]].append(body["n"])
    assert seen == {user: list(range(30)) for user in users}
    assert crm.threads == {THREAD}  # every CRM call from the delivery's thread, none from the engine's loop
    assert _alive() == []  # stopping the source joined the thread
    with trio.fail_after(5):
        await sink.stopped()


async def test_a_flush_is_acknowledged_only_once_its_effects_were_delivered():
    crm = Crm()
    sink, context = delivery(crm)
    flushed = trio.Event()

    async def flush() -> None:
        await sink.flush()
        flushed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        sink.put(CrmCall("a", "user", "a", {"Id": "a", "LastName": "L", "hold": True}))
        sink.put(CrmCall("a", "trip", "t1", {"Id": "t1", "UserId": "a"}))
        nursery.start_soon(flush)
        await trio.sleep(0.2)
        assert not flushed.is_set() and crm.calls == []  # the CRM has not answered: nothing acknowledged
        assert context.sections["crm"]["pending"] == 2 and context.sections["crm"]["delivered"] == 0
        crm.gate.set()
        with trio.fail_after(10):
            await flushed.wait()
        assert [path for _, path, _ in crm.calls] == ["/users", "/trips"]  # in order, both delivered first
        assert context.sections["crm"]["pending"] == 0 and context.sections["crm"]["delivered"] == 2
        nursery.cancel_scope.cancel()
    assert _alive() == []


async def test_an_erased_users_waiting_calls_are_dropped_and_the_erasures_own_run_once():
    keys = SqliteKeyStore(None)
    crm = Crm()
    sink, _ = delivery(crm, keys)
    [user] = await seal_events(keys, events(user_message()))
    _, first = on_user(CrmState(), user)
    _, second = on_user(CrmState(), user)
    [call] = [e for e in first if isinstance(e, CrmCall)]
    held = CrmCall(call.owner, "trip", "t0", {"Id": "t0", "UserId": U, "hold": True})  # keeps the queue waiting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        for effect in (held, *first, *second):
            sink.put(effect)
        await trio.sleep(0.1)
        await keys.erase(U)  # as DELETE /v1/subjects/{id} does: the key first, then the erasure's event
        erase = attrs.evolve(user, type=ERASE, data={"user_id": U})
        _, erasure = on_erase(CrmState(profile=user.data, trips={"t0": {}}), erase)
        for effect in erasure:
            sink.put(effect)
        crm.gate.set()
        with trio.fail_after(10):
            await sink.flush()
        nursery.cancel_scope.cancel()
    assert [(method, path) for method, path, _ in crm.calls] == [
        ("POST", "/trips"), ("DELETE", "/trips/t0"), ("DELETE", f"/users/{U}")]
    assert b"rexy@trafi.com" not in orjson.dumps(crm.calls)


async def test_a_failed_call_is_retried_on_the_thread_and_counted_in_health():
    crm = Crm()
    crm.fail = 2
    sink, context = delivery(crm, max_backoff=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        sink.put(CrmCall("a", "trip", "t1", {"Id": "t1", "UserId": "a"}))
        with trio.fail_after(10):
            await sink.flush()
        nursery.cancel_scope.cancel()
    health = context.sections["crm"]
    assert health["retried"] == 2 and health["delivered"] == 1 and health["pending"] == 0
    assert "503" in health["last_error"]
    assert [path for _, path, _ in crm.calls] == ["/trips"]


def test_a_crm_behind_a_proxy_of_the_environment_is_called_through_httpx(monkeypatch):
    """httpcore ignores HTTP(S)_PROXY; httpx honours it (and NO_PROXY): such a CRM goes through httpx."""
    from plugins.crm.delivery import proxied

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied("https://crm.example.com")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert proxied("https://crm.example.com") and not proxied("http://crm.example.com")
    monkeypatch.setenv("NO_PROXY", "crm.example.com")
    assert not proxied("https://crm.example.com") and proxied("https://other.example.com")

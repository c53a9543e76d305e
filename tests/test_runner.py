"""Effect delivery against real HTTP servers on 127.0.0.1 (real clock: sockets and
autojump_clock don't mix, so backoff is kept tiny)."""

import trio

from engine import Metrics, Notify, RetryPolicy
from engine.runner import EffectRunner, NotifyExecutor
from engine.testing import Receiver

from .conftest import app_client, free_port

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.02)


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


async def run_one(effect, **kwargs):
    import httpx

    metrics = Metrics()
    async with httpx.AsyncClient() as http:
        runner = EffectRunner({Notify: NotifyExecutor(http)}, metrics=metrics, retry=FAST, timeout=2, **kwargs)
        ok = await runner.deliver(effect)
    return ok, metrics


async def test_notify_posts_json_with_idempotency_key():
    async with Receiver.running() as receiver:
        ok, metrics = await run_one(Notify(receiver.url + "/v1/notify", {"hello": "world"}, "key-1"))
    assert ok
    [request] = receiver.requests
    assert request["method"] == "POST" and request["path"] == "/v1/notify"
    assert request["json"] == {"hello": "world"}
    assert request["headers"]["idempotency-key"] == "key-1"
    assert sample(metrics, "herald_effects_sent_total", effect="Notify") == 1


async def test_transient_failures_are_retried_with_the_same_key():
    async with Receiver.running(statuses=[503, 500, 429, 200]) as receiver:
        ok, metrics = await run_one(Notify(receiver.url, {"n": 1}, "same"))
    assert ok
    assert [r["status"] for r in receiver.requests] == [503, 500, 429, 200]
    assert {r["headers"]["idempotency-key"] for r in receiver.requests} == {"same"}
    assert sample(metrics, "herald_effects_retried_total", effect="Notify") == 3


async def test_client_errors_are_not_retried():
    async with Receiver.running(statuses=[400]) as receiver:
        ok, metrics = await run_one(Notify(receiver.url, {}, "k"))
    assert not ok and len(receiver.requests) == 1
    assert sample(metrics, "herald_effects_failed_total", effect="Notify", reason="rejected") == 1


async def test_a_dead_receiver_exhausts_the_attempts():
    ok, metrics = await run_one(Notify(f"http://127.0.0.1:{free_port()}/", {}, "k"))
    assert not ok
    assert sample(metrics, "herald_effects_retried_total", effect="Notify") == FAST.attempts - 1
    assert sample(metrics, "herald_effects_failed_total", effect="Notify", reason="attempts") == 1


async def test_a_slow_receiver_times_out_and_is_retried():
    import httpx

    async with Receiver.running(delay=1.0) as receiver:
        metrics = Metrics()
        async with httpx.AsyncClient() as http:
            runner = EffectRunner({Notify: NotifyExecutor(http)}, metrics=metrics,
                                  retry=RetryPolicy(attempts=2, base=0.01), timeout=0.2)
            assert not await runner.deliver(Notify(receiver.url, {}, "k"))
    assert len(receiver.requests) == 2


async def test_a_full_queue_drops_counts_and_never_blocks():
    metrics = Metrics()
    runner = EffectRunner({Notify: NotifyExecutor(None)}, metrics=metrics, capacity=3)
    results = [runner.submit(Notify("http://x", {}, str(i))) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert sample(metrics, "herald_effects_dropped_total", effect="Notify", reason="queue_full") == 2
    assert runner.pending == 3


async def test_a_slow_receiver_never_slows_ingestion():
    async with Receiver.running(delay=30) as receiver:
        async with app_client(notify_url=receiver.url + "/notify", effect_workers=2) as (herald, client):
            for i in range(20):  # 20 congratulations, each waiting on the stuck receiver
                user = f"u{i}"
                base = {"user_id": user, "training_program_id": "p"}
                r1 = await client.post("/v1/event", json={**base, "type": "training_program_started",
                                                           "time_stamp": "2021-02-28 10:00:00"})
                r2 = await client.post("/v1/event", json={**base, "type": "training_program_finished",
                                                           "time_stamp": "2021-02-28 11:00:00"})
                assert r1.status_code == r2.status_code == 202
            with trio.fail_after(5):
                await receiver.wait_for(2, delivered=False)
            assert receiver.delivered == []  # nothing answered yet, yet every event was accepted
            assert herald.runner.pending == 20

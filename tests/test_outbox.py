"""The outbox against real HTTP servers on 127.0.0.1 (real clock: sockets and
autojump_clock don't mix, so the retry schedule is shrunk to milliseconds)."""

from contextlib import asynccontextmanager

import httpx
import orjson
import trio

from engine import Notify, Signer

from engine._journal import Durability, Journal

from engine._metrics import Metrics

from engine._outbox import RetrySchedule
from engine._outbox import NotifyExecutor, Outbox
from engine.testing import Receiver

from .conftest import app_client, free_port

FAST = RetrySchedule(delays=(0.01, 0.02, 0.03), max_age=60)


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


@asynccontextmanager
async def outbox(tmp_path=None, schedule=FAST, signer=None, **kwargs):
    """An outbox with a Notify executor, journaled in tmp_path (or in memory)."""
    boxes = []  # the journal hands what it committed to the outbox, made just below
    journal = Journal(tmp_path or ".", Durability.BATCH if tmp_path else Durability.MEMORY,
                      on_new_effects=lambda rows: boxes[0].committed(rows))
    await trio.to_thread.run_sync(journal.open)
    metrics = Metrics()
    async with httpx.AsyncClient() as http:
        box = Outbox({Notify: NotifyExecutor(http, signer)}, journal=journal, metrics=metrics,
                     schedule=schedule, timeout=kwargs.pop("timeout", 2), **kwargs)
        boxes.append(box)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(box.run)
            yield box
            nursery.cancel_scope.cancel()
    journal.close()


async def settle(box):
    with trio.fail_after(10):
        while box.pending:
            await trio.sleep(0.01)


async def test_notify_posts_json_with_idempotency_key():
    async with Receiver.running() as receiver, outbox() as box:
        box.emit(Notify(receiver.url + "/v1/notify", {"hello": "world"}, "key-1"))
        await settle(box)
    [request] = receiver.requests
    assert request["method"] == "POST" and request["path"] == "/v1/notify"
    assert request["json"] == {"hello": "world"}
    assert request["headers"]["idempotency-key"] == "key-1"
    assert "webhook-signature" not in request["headers"]
    assert sample(box.metrics, "herald_effects_sent_total", effect="Notify") == 1


async def test_transient_failures_are_retried_with_the_same_key():
    async with Receiver.running(statuses=[503, 500, 429, 200]) as receiver, outbox() as box:
        box.emit(Notify(receiver.url, {"n": 1}, "same"))
        await settle(box)
    assert [r["status"] for r in receiver.requests] == [503, 500, 429, 200]
    assert {r["headers"]["idempotency-key"] for r in receiver.requests} == {"same"}
    assert sample(box.metrics, "herald_effects_retried_total", effect="Notify") == 3


async def test_rejected_effects_become_dead_letters_and_can_be_replayed(tmp_path):
    async with Receiver.running(statuses=[400, 200]) as receiver, outbox(tmp_path) as box:
        box.emit(Notify(receiver.url, {"n": 1}, "k"))
        await box.journal.commit()
        await settle(box)
        await box.journal.commit()
        [dead] = await box.journal.query(lambda j: j.outbox_rows("dead"))
        assert (dead.key, dead.attempts, dead.error) == ("k", 1, f"{receiver.url} answered 400")
        assert await box.replay_dead() == 1
        await settle(box)
        await box.journal.commit()
        [row] = await box.journal.query(lambda j: j.outbox_rows())
        assert row.status == "delivered"
    assert [r["status"] for r in receiver.requests] == [400, 200]
    assert sample(box.metrics, "herald_effects_failed_total", effect="Notify", reason="rejected") == 1


async def test_a_dead_receiver_exhausts_the_schedule():
    async with outbox() as box:
        box.emit(Notify(f"http://127.0.0.1:{free_port()}/", {}, "k"))
        await settle(box)
    assert sample(box.metrics, "herald_effects_retried_total", effect="Notify") == len(FAST.delays)
    assert sample(box.metrics, "herald_effects_failed_total", effect="Notify", reason="expired") == 1
    [dead] = box.dead
    assert dead["attempts"] == len(FAST.delays) + 1 and dead["effect"]["idempotency_key"] == "k"


async def test_a_slow_receiver_times_out_and_is_retried():
    async with Receiver.running(delay=1.0) as receiver, outbox(schedule=RetrySchedule((0.01,)), timeout=0.2) as box:
        box.emit(Notify(receiver.url, {}, "k"))
        await settle(box)
    assert len(receiver.requests) == 2


async def test_memory_mode_drops_beyond_capacity_and_counts():
    async with outbox(capacity=3) as box:
        box.pause()  # hold deliveries so the queue fills
        for i in range(5):
            box.emit(Notify("http://127.0.0.1:9/", {}, str(i)))
        assert box.pending == 3
    assert sample(box.metrics, "herald_effects_dropped_total", effect="Notify", reason="queue_full") == 2


async def test_journaled_effects_beyond_capacity_wait_in_the_journal_and_all_arrive(tmp_path):
    async with Receiver.running() as receiver, outbox(tmp_path, capacity=4) as box:
        for i in range(40):
            box.emit(Notify(receiver.url, {"i": i}, f"k{i}"))
        await box.journal.commit()
        with trio.fail_after(10):
            await receiver.wait_for(40)
    assert sorted(r["json"]["i"] for r in receiver.requests) == list(range(40))
    assert sample(box.metrics, "herald_effects_spilled_total") > 0
    assert sample(box.metrics, "herald_effects_dropped_total", effect="Notify", reason="queue_full") == 0


async def test_repeated_keys_are_delivered_once(tmp_path):
    async with Receiver.running() as receiver, outbox(tmp_path) as box:
        for _ in range(3):
            box.emit(Notify(receiver.url, {"n": 1}, "once"))
            await box.journal.commit()
        await settle(box)
    assert len(receiver.requests) == 1


async def test_deliveries_are_signed_and_verifiable():
    secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
    async with Receiver.running() as receiver, outbox(signer=Signer(secret)) as box:
        box.emit(Notify(receiver.url, {"user": "u1"}, "sig-1"))
        await settle(box)
    [request] = receiver.requests
    headers, body = request["headers"], orjson.dumps(request["json"])
    assert headers["webhook-id"] == "sig-1" and headers["webhook-signature"].startswith("v1,")
    assert Signer.verify(secret, headers, body)
    assert not Signer.verify(secret, headers, body.replace(b"u1", b"u2"))  # tampered
    assert not Signer.verify("whsec_" + "b3RoZXI=", headers, body)  # wrong secret
    stale = int(headers["webhook-timestamp"]) + 301
    assert not Signer.verify(secret, headers, body, now=stale)  # replayed later than 5 minutes


async def test_a_slow_receiver_never_slows_ingestion():
    async with Receiver.running(delay=30) as receiver:
        async with app_client(notify_url=receiver.url + "/notify", effect_workers=2) as (herald, client):
            for i in range(20):  # 20 congratulations, each waiting on the stuck receiver
                base = {"user_id": f"u{i}", "training_program_id": "p"}
                r1 = await client.post("/v1/event", json={**base, "type": "training_program_started",
                                                           "time_stamp": "2021-02-28 10:00:00"})
                r2 = await client.post("/v1/event", json={**base, "type": "training_program_finished",
                                                           "time_stamp": "2021-02-28 11:00:00"})
                assert r1.status_code == r2.status_code == 202
            with trio.fail_after(5):
                await receiver.wait_for(2, delivered=False)
            assert receiver.delivered == []  # nothing answered yet, yet every event was accepted
            assert herald.outbox.pending == 20


async def test_the_receiver_never_counts_half_a_request_as_delivered():
    """A sender killed mid-request (headers sent, body cut) delivered nothing: the test receiver neither
    records nor answers it, and a complete request after it is delivered as usual."""
    async with Receiver.running() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST /notify HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                              b"idempotency-key: k1\r\ncontent-length: 40\r\n\r\n{\"n\": ")
        await stream.aclose()
        with trio.fail_after(10):
            while not receiver.abandoned:
                await trio.sleep(0.01)
        async with httpx.AsyncClient() as http:
            response = await http.post(receiver.url + "/notify", json={"n": 1}, headers={"Idempotency-Key": "k2"})
        assert response.status_code == 200
        await receiver.wait_for(1)
    assert receiver.abandoned == 1
    assert receiver.keys == ["k2"] and [r["json"] for r in receiver.requests] == [{"n": 1}]

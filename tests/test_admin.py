"""Admin routes (outbox, dead letters, snapshots, journal) and a receiver outage, over HTTP."""

import trio

from engine.testing import Receiver

from .conftest import app_client, free_port


def finished(user: str, minutes: int = 45) -> list[dict]:
    base = {"user_id": user, "training_program_id": "p"}
    return [
        {**base, "type": "training_program_started", "time_stamp": "2021-02-28 10:00:00"},
        {**base, "type": "training_program_finished", "time_stamp": f"2021-02-28 10:{minutes}:00"},
    ]


def retried(herald) -> float:
    return herald.metrics.registry.get_sample_value("herald_effects_retried_total", {"effect": "Notify"}) or 0


async def test_dead_letters_are_listed_and_replayed_with_the_admin_token(tmp_path):
    auth = {"Authorization": "Bearer s3cret-admin-token-0123"}
    async with Receiver.running(statuses=[400, 200]) as receiver:
        async with app_client(durability="batch", data_dir=str(tmp_path), admin_token="s3cret-admin-token-0123",
                              notify_url=receiver.url + "/n") as (herald, client):
            assert (await client.post("/v1/events", json=finished("u1"))).status_code == 202
            assert (await client.get("/v1/outbox?status=dead")).status_code == 401
            assert (await client.get("/v1/outbox?status=dead", headers={"Authorization": "Bearer nope"})).status_code == 401
            with trio.fail_after(5):
                while not (dead := (await client.get("/v1/outbox?status=dead", headers=auth)).json()["effects"]):
                    await trio.sleep(0.01)
            [letter] = dead
            assert letter["attempts"] == 1 and "400" in letter["error"]
            assert letter["effect"]["payload"]["type"] == "congratulate"
            assert (await client.get("/v1/outbox?status=nope", headers=auth)).status_code == 400
            huge = await client.get("/v1/outbox?after=6621690952370529012547584", headers=auth)  # found by schemathesis
            assert huge.status_code == 400 and huge.json()["error"]["field"] == "after"
            assert (await client.post("/v1/outbox/replay", json={"ids": "x"}, headers=auth)).status_code == 400
            r = await client.post("/v1/outbox/replay", json={"ids": [letter["id"]]}, headers=auth)
            assert r.json() == {"replayed": 1}
            with trio.fail_after(5):
                await receiver.wait_for(1)
            snap = (await client.post("/v1/admin/snapshot", headers=auth)).json()
            assert snap["seq"] == 2 and snap["actors"] == 1
            stats = (await client.get("/v1/journal", headers=auth)).json()
            assert stats["snapshot_seq"] == 2 and stats["durability"] == "batch"
    assert [r["status"] for r in receiver.requests] == [400, 200]


async def test_a_receiver_outage_delays_but_loses_and_repeats_nothing(tmp_path):
    port = free_port()  # nothing listens there yet: connections are refused
    async with app_client(durability="batch", data_dir=str(tmp_path), notify_url=f"http://127.0.0.1:{port}/n",
                          outbox_delays=(0.05, 0.1, 0.2, 0.4, 0.8, 1, 1, 1, 1, 1, 1, 1)) as (herald, client):
        for i in range(30):
            assert (await client.post("/v1/events", json=finished(f"u{i}"))).status_code == 202
        with trio.fail_after(10):
            while retried(herald) < 60:  # every notification failed at least twice
                await trio.sleep(0.01)
        async with Receiver.running(port=port) as receiver:
            with trio.fail_after(15):
                await receiver.wait_for(30)
            # Nothing more can arrive once Herald has nothing pending (every delivery acknowledged)
            # and the receiver has answered everything it was sent.
            with trio.fail_after(15):
                while herald.outbox.pending or not all(r["answered"] for r in receiver.requests):
                    await trio.sleep(0.01)
            await herald.journal.commit()  # the deliveries' marks are queued: make them durable before reading
            outbox = (await client.get("/v1/journal")).json()["outbox"]
            assert outbox == {"pending": 0, "delivered": 30, "dead": 0}  # nothing is left to send
    keys = receiver.keys
    assert len(keys) == len(set(keys)) == 30
    assert {r["json"]["user_id"] for r in receiver.delivered} == {f"u{i}" for i in range(30)}

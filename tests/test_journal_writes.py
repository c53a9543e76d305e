"""The journal's write path: small groups written in the trio thread, large ones in the writer
thread, outbox rows with the ids they are given, and the order of groups either way."""

import trio

from engine._journal import INLINE_COST, Durability, Journal


async def _running(tmp_path, reported):
    journal = Journal(tmp_path, Durability.BATCH, on_new_effects=reported.extend)
    await trio.to_thread.run_sync(journal.open)
    return journal


def _rows(journal):
    return journal._db().execute("SELECT id, key, body FROM outbox ORDER BY id").fetchall()


async def test_outbox_rows_new_and_repeated_keys_small_and_large_groups(tmp_path):
    """Whether a group is written here or in the writer thread, only rows whose key is new are
    reported, each once (its first occurrence), with the id the outbox holds it under."""
    reported: list = []
    journal = await _running(tmp_path, reported)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.add_effect("a", "Notify", b'{"n":1}', 1.0, "a1")
        await journal.commit()
        assert reported == [(1, "a1")]
        # Small (inline): one repeat of a committed key, one repeat within the group.
        for key, token in [("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2")]:
            journal.add_effect(key, "Notify", b'{"n":2}', 2.0, token)
        await journal.commit()
        # Large (the writer thread): as many rows as make it cost more than INLINE_COST, with repeats.
        many = [f"k{i}" for i in range(INLINE_COST // 8 + 10)]
        for key in many + ["c", many[0]]:
            journal.add_effect(key, "Notify", b'{"n":3}', 3.0, key)
        await journal.commit()
        nursery.cancel_scope.cancel()
    rows = _rows(journal)
    by_key = {key: id_ for id_, key, _ in rows}
    assert len(by_key) == len(rows) == 3 + len(many)
    assert [token for _, token in reported] == ["a1", "b1", "c1", *many]
    assert all(by_key[token[0] if token in ("a1", "b1", "c1") else token] == id_ for id_, token in reported)
    assert [body for _, key, body in rows if key == "b"] == [b'{"n":2}']  # the first one stays
    assert journal.commits == 3
    journal.close()


async def test_groups_commit_in_order_whichever_thread_writes_them(tmp_path):
    """A large group in the writer thread, then small ones queued meanwhile: every event is in the
    journal, in order, and each commit() returns only once its own events are."""
    from datetime import datetime, timezone

    from engine._event import Event

    journal = await _running(tmp_path, [])
    at = datetime(2021, 3, 1, tzinfo=timezone.utc)
    seq = 0

    def add(n):
        nonlocal seq
        for _ in range(n):
            seq += 1
            journal.add_event(seq, Event(f"id{seq}", "ping", f"u{seq % 7}", at, {"i": seq}, at), float(seq))
        return seq

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        durable_at: list[tuple[int, int]] = []

        async def commit_after(n):
            last = add(n)
            await journal.commit()
            durable_at.append((last, journal.count_events()))

        async with trio.open_nursery() as callers:
            callers.start_soon(commit_after, INLINE_COST * 4)  # one large group
            await trio.sleep(0)
            for _ in range(20):
                callers.start_soon(commit_after, 3)
        nursery.cancel_scope.cancel()
    assert all(count >= last for last, count in durable_at)
    events = journal.read_events(0, limit=10**6)
    assert [s for s, *_ in events] == list(range(1, seq + 1))
    assert [e.data["i"] for _, e, *_ in events] == list(range(1, seq + 1))
    journal.close()

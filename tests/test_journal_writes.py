"""The journal's write path: small groups written in the trio thread, large ones in the writer
thread, outbox rows with the ids they are given, and the order of groups either way."""

from datetime import datetime, timezone

import orjson
import trio

from engine._event import Event
from engine._journal import EAGER_COST, INLINE_COST, OUTBOX_ROWS_PER_STATEMENT, Durability, Journal

AT = datetime(2021, 3, 1, tzinfo=timezone.utc)


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


async def test_a_large_group_is_written_while_the_next_callers_apply_theirs(tmp_path):
    """A caller whose commit makes the group large hands it to the writer thread at once: callers
    ready at the same time queue theirs meanwhile, into the next group (on the old write path all
    of them made one group, written only once every ready caller had queued its events)."""
    journal = await _running(tmp_path, [])
    seq = 0
    started = []

    async def caller(n):
        nonlocal seq
        first = seq + 1
        for _ in range(n):
            seq += 1
            journal.add_event(seq, Event(f"id{seq}", "ping", f"u{seq % 7}", AT, {"i": seq}, AT), float(seq))
        started.append(journal._inflight is not None)
        await journal.commit()
        assert journal.count_events(first - 1) >= n  # durable when commit() returns

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        async with trio.open_nursery() as callers:
            for _ in range(3):
                callers.start_soon(caller, EAGER_COST)
        nursery.cancel_scope.cancel()
    batches = journal._db().execute("SELECT first_seq, last_seq FROM event_batches ORDER BY last_seq").fetchall()
    assert batches[0] == (1, EAGER_COST)  # the first caller's events alone
    assert len(batches) >= 2 and batches[-1][1] == 3 * EAGER_COST
    assert started[1:] == [True, True]  # the others queued theirs while it was being written
    journal.close()


async def test_the_records_of_several_callers_make_one_record_batch_as_one_encoding_would(tmp_path):
    """Each caller's records are encoded at its commit; a group of several is still one JSON array
    of records, byte for byte what encoding them all at once gives (the on-disk format)."""
    journal = await _running(tmp_path, [])
    records = []
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def caller(n):
            for _ in range(n):
                seq = len(records) + 1  # (given as they are applied, as Herald does)
                data = {"i": seq, "nested": [1, [2, {"x": "a,[b"}]]}
                event = Event(f"id{seq}", "ping", "u", AT, data, AT)
                journal.add_event(seq, event, seq + 0.5)
                records.append([seq, event.id, "u", "ping", AT.timestamp(), AT.timestamp(), seq + 0.5, data])
            await journal.commit()

        async with trio.open_nursery() as callers:
            for n in (3, 2, 1):
                callers.start_soon(caller, n)
        nursery.cancel_scope.cancel()
    [(first, last, body)] = journal._db().execute("SELECT first_seq, last_seq, body FROM event_batches").fetchall()
    assert (first, last) == (1, 6)
    assert body == orjson.dumps(records)
    assert [e.data for _, e, *_ in journal.read_events(0)] == [r[-1] for r in records]
    journal.close()


async def test_many_outbox_rows_in_one_group_over_several_statements_and_after_other_writes(tmp_path):
    """More outbox rows than one statement takes, with repeats across statements; then rows copied in
    by another write (ids of their own), then new rows: each new key is reported once, under the id
    the outbox holds it by, and none is lost to an id already taken."""
    from engine._journal import OutboxRow

    reported: list = []
    journal = await _running(tmp_path, reported)
    keys = [f"k{i}" for i in range(3 * OUTBOX_ROWS_PER_STATEMENT + 5)]
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for key in keys + [keys[0], keys[OUTBOX_ROWS_PER_STATEMENT + 1]]:
            journal.add_effect(key, "Notify", b"{}", 1.0, key)
        await journal.commit()
        journal.copy_outbox([OutboxRow(0, f"copied{i}", "Notify", b"{}", "pending", 0, 1.0, 1.0, 1.0, None)
                             for i in range(3)])
        await journal.commit()
        for key in ("n1", "n2", keys[1]):
            journal.add_effect(key, "Notify", b"{}", 2.0, key)
        await journal.commit()
        nursery.cancel_scope.cancel()
    rows = {key: id_ for id_, key, _ in _rows(journal)}
    assert len(rows) == len(keys) + 3 + 2
    assert [token for _, token in reported] == keys + ["n1", "n2"]
    assert all(rows[token] == id_ for id_, token in reported)
    journal.close()


async def test_batch_mode_checkpoints_in_the_periodic_sync_not_where_a_group_commits(tmp_path):
    """Batch mode: no automatic checkpoint on the writer's connection (it ran in the trio thread when
    a small group crossed the mark); the periodic sync checkpoints a WAL past ``checkpoint_bytes``,
    the writer thread truncates it after the next group, and every committed event is still there,
    in order."""
    journal = await _running(tmp_path, [])
    journal.checkpoint_bytes = 64 * 1024
    wal = tmp_path / "herald.db-wal"
    assert journal._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    seq = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        while wal.stat().st_size < 2 * journal.checkpoint_bytes:  # well past the mark: SQLite would have
            seq += 1                                               # checkpointed at 1,000 pages by default
            journal.add_event(seq, Event(f"id{seq}", "ping", "u", AT, {"i": seq}, AT), float(seq))
            await journal.commit()
        await trio.to_thread.run_sync(journal._sync)
        assert journal._checkpointing  # copied; the WAL is truncated by the writer thread after a group
        for _ in range(3):  # and writing goes on
            seq += 1
            journal.add_event(seq, Event(f"id{seq}", "ping", "u", AT, {"i": seq}, AT), float(seq))
            await journal.commit()
            with trio.fail_after(10):
                while journal._checkpointing:  # (a real thread: wait for the condition)
                    await trio.sleep(0.01)
        assert wal.stat().st_size < journal.checkpoint_bytes
        nursery.cancel_scope.cancel()
    events = journal.read_events(0, limit=10**6)
    assert [s for s, *_ in events] == list(range(1, seq + 1))
    journal.close()


async def test_while_a_checkpoint_is_under_way_small_groups_go_to_the_writer_thread(tmp_path, monkeypatch):
    """A small group is written in the trio thread, except while the checkpointer may hold SQLite's
    locks or the WAL is to be truncated: then the writer thread waits for them, not the event loop."""
    import threading

    journal = await _running(tmp_path, [])
    written_in = []
    write = Journal._write

    def recording(self, batch):
        written_in.append(threading.current_thread() is threading.main_thread())
        write(self, batch)

    monkeypatch.setattr(Journal, "_write", recording)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for seq, checkpointing in enumerate([False, True, True, False], 1):
            journal._checkpointing = checkpointing
            journal.add_event(seq, Event(f"id{seq}", "ping", "u", AT, {"i": seq}, AT), float(seq))
            await journal.commit()
            assert journal.count_events() == seq  # durable when commit() returns, either way
        nursery.cancel_scope.cancel()
    assert written_in == [True, False, False, True]
    journal.close()

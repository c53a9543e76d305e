"""The dedupe window: scoped by (key, id), and its bulk restore leaves what adding one by one leaves."""

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given, settings, strategies as st

from engine import Config
from engine.host import Herald, PluginHost
from engine._dedupe import IdWindow, Recent
from engine._journal import DB_NAME


def _one_by_one(window: IdWindow, recent: Recent, now):
    # The restore before it was done in bulk: add each entry, pruning as remember does.
    for at, event_id in recent.unkeyed:
        window._unkeyed[event_id] = at
        window._unkeyed_order.append((at, event_id))
        window._prune(at)
    for at, pair in zip(recent.at, recent.pairs):
        window._ids[pair] = at
        window._at.append(at)
        window._pairs.append(pair)
        window._prune(at)
    window._prune(now)


def _entries(draw_keys):
    return st.lists(st.tuples(st.integers(0, 400).map(float), draw_keys, st.sampled_from("abcdefghij")), max_size=60).map(
        # a repeated entry is repeated at another instant (the journal never holds an id twice in one receipt)
        lambda entries: sorted({(at, k, i): None for at, k, i in entries}))


@settings(max_examples=500, deadline=None)
@given(_entries(st.sampled_from("xyz")), _entries(st.none()), st.integers(1, 20), st.sampled_from([10.0, 100.0, 1000.0]),
       st.integers(0, 500).map(float))
def test_bulk_restore_equals_adding_one_by_one(keyed, unkeyed, limit, retention, later):
    # Unkeyed ids come from a snapshot written before the scoping: older than every keyed one.
    shift = max([at for at, _, _ in unkeyed], default=0.0)
    keyed = [(at + shift, k, i) for at, k, i in keyed]
    recent = Recent([at for at, _, _ in keyed], [(k, i) for _, k, i in keyed], [(at, i) for at, _, i in unkeyed])
    bulk, single = IdWindow(retention, limit), IdWindow(retention, limit)
    now = max([at for at, _, _ in keyed + unkeyed], default=0.0) + later
    bulk.restore(recent, now)
    _one_by_one(single, recent, now)
    assert bulk._ids == single._ids and bulk._unkeyed == single._unkeyed
    assert bulk.items() == single.items()
    assert len(bulk) <= limit


def test_an_id_is_a_repeat_only_for_the_key_that_used_it():
    window = IdWindow(100.0, 10)
    assert window.remember("attacker", "order-1001", 1.0)
    assert window.remember("victim", "order-1001", 2.0)  # another key's id: new
    assert not window.remember("victim", "order-1001", 3.0)  # the same (key, id): a repeat
    assert not window.remember("attacker", "order-1001", 3.0)
    assert window.seen("victim", "order-1001") and not window.seen("third", "order-1001")


def test_ids_from_an_older_snapshot_repeat_for_every_key_until_they_expire():
    window = IdWindow(100.0, 10)
    # Main's snapshots hold ``ids`` only: [accepted at, id], no key.
    window.restore(Recent.of_snapshot({"ids": [[50.0, "old"]]}), 60.0)
    assert window.seen("anyone", "old")
    assert not window.remember("anyone", "old", 100.0)
    assert window.remember("anyone", "new", 149.0)
    assert window.remember("anyone", "newer", 151.0)  # pruning as it goes: "old" (50 + 100 < 151) expired
    assert window.remember("anyone", "old", 152.0)
    assert window.items().unkeyed == []


def test_a_snapshot_keeps_pairs_and_unkeyed_ids_apart():
    window = IdWindow(100.0, 10)
    window.restore(Recent.of_snapshot({"ids": [[1.0, "old"]]}), 2.0)
    window.remember("k", "new", 3.0)
    stored = window.items().to_snapshot()
    assert stored == {"ids": [(1.0, "old")], "keyed_ids": {"at": [3.0], "ids": [("k", "new")]}}
    again = IdWindow(100.0, 10)
    again.restore(Recent.of_snapshot({"ids": [[1.0, "old"]], "keyed_ids": {"at": [3.0], "ids": [["k", "new"]]}}), 4.0)
    assert again.items() == window.items()


# Data written before ids were scoped by key (by main at 60f1492; see tests/data/make_unkeyed_ids.py):
# mallory's order-1001 is in a snapshot without its key, order-2002 in the journal after it.
DATA = Path(__file__).parent / "data"
FIXTURE_NOW = datetime(2021, 3, 1, 8, 0, tzinfo=timezone.utc).timestamp() + 60


def _herald(data_dir: Path, retention: float = 86_400.0) -> Herald:
    config = Config(data_dir=str(data_dir), durability="batch", dedupe_retention=retention)
    return Herald(config, PluginHost.from_objects(config, []), utcnow=lambda: FIXTURE_NOW)


def _ping(herald: Herald, key: str, event_id: str):
    return herald.engine.parse({"id": event_id, "key": key, "type": "ping", "timestamp": "2021-03-01T08:00:30Z"})


async def test_a_data_dir_written_before_the_scoping_opens_with_its_ids(tmp_path):
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.executescript((DATA / "unkeyed_ids.sql").read_text())
    herald = _herald(tmp_path)
    async with herald.running():
        await herald.wait_ready()
        assert herald.progress["replayed"] == 1 and herald.engine.actor("mallory").unknown == {"ping": 2}
        # The journal's rows have their key: order-2002 is mallory's alone.
        assert await herald.accept([_ping(herald, "mallory", "order-2002")]) == [True]
        assert await herald.accept([_ping(herald, "alice", "order-2002")]) == [False]
        # The old snapshot's id has none: a repeat for every key (never applied twice) until it expires.
        assert await herald.accept([_ping(herald, "mallory", "order-1001"), _ping(herald, "alice", "order-1001")]) == [True, True]
        await herald.snapshot()  # written the new way, the unkeyed id kept as it was
    herald = _herald(tmp_path)
    async with herald.running():
        await herald.wait_ready()
        assert await herald.accept([_ping(herald, "bob", "order-1001"), _ping(herald, "bob", "order-2002"),
                                    _ping(herald, "alice", "order-2002")]) == [True, False, True]
    # Once the retention is past (the window was restored 60 s after order-1001), the unkeyed id is gone.
    herald = _herald(tmp_path, retention=30.0)
    async with herald.running():
        await herald.wait_ready()
        assert await herald.accept([_ping(herald, "bob", "order-1001")]) == [False]

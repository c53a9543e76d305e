"""Journal, snapshots and replay, in-process: a recovered Herald equals the one that crashed."""

import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Config
from engine.host import Herald, PluginHost
from engine._journal import DB_NAME
from plugins.fitness import hooks as fitness

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=timezone.utc)
KINDS = ["app_launch", "training_program_started", "training_program_finished", "training_program_cancelled", "ping"]


def crash_image(src: Path, dst: Path) -> None:
    """What the disk holds if the process died now: a consistent copy of the database."""
    dst.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src / DB_NAME) as a, sqlite3.connect(dst / DB_NAME) as b:
        a.backup(b)


REAL0 = time.time()


def virtual_now() -> float:
    """Real time that follows trio's clock, so autojump_clock's time counts as time passed."""
    return REAL0 + trio.current_time()


def build(data_dir: Path, utcnow=time.time, **settings) -> Herald:
    config = Config(data_dir=str(data_dir), durability="batch", notify_url="http://127.0.0.1:9/unreachable",
                    outbox_delays=(3600.0,), **settings)
    return Herald(config, PluginHost.from_objects(config, [fitness]), utcnow=utcnow)


def to_events(steps) -> list[dict]:
    events, t = [], T0
    for i, (user, kind, program, gap, _wall) in enumerate(steps):
        t += timedelta(seconds=gap)
        event = {"id": f"e{i}", "user_id": f"u{user}", "type": kind, "timestamp": t.isoformat()}
        if kind.startswith("training_program"):
            event["training_program_id"] = str(program)
        events.append(event)
    return events


def views(herald: Herald) -> dict:
    """Every actor as the API shows it, with its clock as the offset it keeps (the reading moves with the wall)."""
    engine = herald.engine
    return {key: {**engine.actor_view(key), "clock": engine.actors[key].offset} for key in sorted(engine.actors)}


steps = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from(KINDS), st.integers(0, 1),
              st.sampled_from([0, 1, 300, 599, 600, 601, 1800, 1801, 3600, -1, -601, -1800]),  # < 0: late events
              st.sampled_from([0, 0, 0, 30, 700])),  # wall seconds before sending: timers fire live

    min_size=1, max_size=120,
)


# mock_clock: wall time passes (virtually, by explicit jumps) between events, so the
# timer task fires timers live, and the replay must reproduce exactly when that
# happened. (autojump_clock would also jump while the journal's thread works,
# which would make the crash itself last minutes of virtual time.)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, snapshot_at=st.sets(st.integers(0, 119), max_size=3), tmp=st.uuids())
async def test_recovered_state_equals_the_state_before_the_crash(tmp_path, mock_clock, steps, snapshot_at, tmp):
    events = to_events(steps)
    live_dir, crashed_dir = tmp_path / f"{tmp}-live", tmp_path / f"{tmp}-crashed"
    live = build(live_dir, virtual_now, snapshot_every=10**9)
    async with live.running():
        await live.wait_ready()
        for i, raw in enumerate(events):
            if steps[i][4]:
                mock_clock.jump(steps[i][4])
                await trio.testing.wait_all_tasks_blocked()
            await live.accept([live.engine.parse(raw)])
            if i in snapshot_at:
                await live.snapshot()
        await live.journal.commit()
        before, seq = views(live), live.seq
        crash_image(live_dir, crashed_dir)
    again = build(crashed_dir, virtual_now)
    async with again.running():
        await again.wait_ready()
        assert again.seq == seq
        after = views(again)
        assert after == before, [(k, before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)]
        # Repeats of accepted ids are recognised after the restart.
        assert await again.accept([again.engine.parse(events[-1])]) == [True]


async def test_snapshots_compact_the_journal_and_keep_repeats_recognisable(tmp_path):
    def ping(i):
        return {"id": f"p{i}", "user_id": f"u{i % 7}", "type": "ping", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}

    herald = build(tmp_path, snapshot_every=10**9)
    async with herald.running():
        await herald.wait_ready()
        for i in range(300):
            await herald.accept([herald.engine.parse(ping(i))])
        result = await herald.snapshot()
        assert result["seq"] == 300 and result["actors"] == 7
        stats = await herald.journal.query(lambda j: j.stats())
        assert stats["snapshot_seq"] == 300 and stats["events"] == 0  # the snapshot covers them all
        for i in range(300, 310):
            await herald.accept([herald.engine.parse(ping(i))])
    herald = build(tmp_path)
    async with herald.running():
        await herald.wait_ready()
        # The graceful stop wrote a last snapshot: nothing left to replay.
        assert herald.progress == {"replayed": 0, "to_replay": 0}
        assert herald.engine.actor("u3").unknown == {"ping": 44}
        # Ids from before the compaction are still recognised as repeats.
        assert await herald.accept([herald.engine.parse(ping(3))]) == [True]
        assert await herald.accept([herald.engine.parse(ping(305))]) == [True]
        assert herald.engine.actor("u3").unknown == {"ping": 44}


async def test_a_data_dir_takes_one_herald_at_a_time(tmp_path):
    import pytest

    from engine import JournalError

    first = build(tmp_path)
    async with first.running():
        await first.wait_ready()
        with pytest.raises(JournalError, match="in use by another Herald process"):
            async with build(tmp_path).running():
                pass
    async with build(tmp_path).running() as again:  # released at shutdown
        await again.wait_ready()


async def test_healthz_reports_replay_progress_and_ingestion_waits(tmp_path):
    import httpx

    from server import create_app

    live = build(tmp_path, snapshot_every=10**9)
    async with live.running():
        await live.wait_ready()
        batch = [live.engine.parse({"id": f"r{i}", "user_id": f"u{i % 50}", "type": "ping",
                                    "timestamp": (T0 + timedelta(seconds=i)).isoformat()}) for i in range(30_000)]
        await live.accept(batch)
        live.seq = live.snapshot_seq  # leave the journal to replay
    herald = build(tmp_path)
    async with herald.running():
        transport = httpx.ASGITransport(app=create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            first = await client.get("/healthz")
            assert first.status_code == 503 and first.json()["status"] in ("starting", "replaying")
            refused = await client.post("/v1/event", json={"user_id": "x", "type": "ping", "timestamp": T0.isoformat()})
            assert refused.status_code == 503 and refused.json()["error"]["code"] in ("starting", "replaying")
            await herald.wait_ready()
            health = (await client.get("/healthz")).json()
            assert health["status"] == "ready" and health["journal"]["replayed"] == 30_000
            assert health["journal"]["to_replay"] == 30_000

"""`herald journal stats` and `herald replay --from` on real data dirs."""

import json
import subprocess
import sys
from datetime import timedelta

from .test_durability import T0, build, views


def herald(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True,
                          env={"PATH": "", "COLUMNS": "120", "HERALD_PLUGINS": "fitness"})


async def make_data_dir(path, count=500):
    live = build(path, snapshot_every=200)
    async with live.running():
        await live.wait_ready()
        for i in range(count):
            kind = ["app_launch", "training_program_started", "training_program_finished", "ping"][i % 4]
            raw = {"id": f"e{i}", "user_id": f"u{i % 13}", "type": kind, "training_program_id": "p",
                   "timestamp": (T0 + timedelta(minutes=i)).isoformat()}
            await live.accept([live.engine.parse(raw)])
        await live.snapshot()  # waits for any snapshot in progress, then covers everything
        for i in range(count, count + 20):  # a journal tail behind the last snapshot
            raw = {"id": f"e{i}", "user_id": f"u{i % 13}", "type": "ping", "timestamp": (T0 + timedelta(minutes=i)).isoformat()}
            await live.accept([live.engine.parse(raw)])
        live.seq = live.snapshot_seq  # stop without a final snapshot: keep that tail
        return views(live)


async def test_journal_stats_and_replay_into_a_fresh_dir(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    before = await make_data_dir(source)
    stats = json.loads(herald("journal", "stats", "--data-dir", str(source)).stdout)
    assert stats["snapshot_seq"] == 500 and stats["events"] == 20 and stats["last_seq"] == 520

    result = herald("replay", "--from", str(source), "--data-dir", str(copy))
    assert result.returncode == 0, result.stderr
    assert "replayed 20 events" in result.stdout
    again = build(copy)
    async with again.running():
        await again.wait_ready()
        assert views(again) == before

    refused = herald("replay", "--from", str(source), "--data-dir", str(copy))
    assert refused.returncode == 2 and "fresh data dir" in refused.stderr
    compacted = herald("replay", "--from", str(source), "--data-dir", str(tmp_path / "x"), "--full")
    assert compacted.returncode == 2 and "compacted" in compacted.stderr
    missing = herald("journal", "stats", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no journal" in missing.stderr

"""Upgrades: today's Herald opens every data dir an earlier Herald wrote, with every state,
timer and undelivered effect intact (the golden dirs in tests/golden, made by the old code)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from engine import Config
from engine.host import Herald, PluginHost
from engine import _formats as formats
from engine import _journal, _snapshot
from engine.cli import main as cli
from engine.cli import replay_dir
from plugins.customers import hooks as customers
from plugins.fitness import hooks as fitness

GOLDEN = Path(__file__).parent / "golden"
PLUGINS = {"fitness": fitness, "customers": customers}
#: Data dirs (journal<N>-snapshot<M>); the cluster's recorded topics (changelog<N>-events<M>) are
#: restored by tests/test_cluster_formats.py.
DIRS = sorted(p for p in GOLDEN.iterdir() if (p / "made_by.json").exists() and p.name.startswith("journal"))
TOPICS = sorted(p for p in GOLDEN.iterdir() if (p / "made_by.json").exists() and p.name.startswith("changelog"))
CASES = [(d.name, mode) for d in DIRS for mode in ("clean", "killed")]
#: A golden dir's name: its journal and snapshot formats, and what sets a variant apart (``-keyed``).
NAMED = r"journal(\d+)-snapshot(\d+)(?:-[a-z0-9]+)*"


def golden_copy(name: str, mode: str, tmp_path: Path) -> tuple[Path, dict, dict]:
    """A copy of a golden data dir (the committed one is never opened for writing), its answers
    and how it was made."""
    data = tmp_path / "data"
    shutil.copytree(GOLDEN / name / mode / "data", data)
    answers = json.loads((GOLDEN / name / mode / "answers.json").read_text())
    made = json.loads((GOLDEN / name / "made_by.json").read_text())
    return data, answers, made


def build(data: Path, answers: dict, made: dict) -> Herald:
    config = Config(data_dir=str(data), durability="batch", notify_url="http://127.0.0.1:9/unreachable")
    host = PluginHost.from_objects(config, [PLUGINS[p] for p in made["plugins"].split(",")])
    # The wall starts where the old Herald stopped: its pending timers are still pending.
    return Herald(config, host, utcnow=lambda: answers["recorded_at"])


def same_as_recorded(views: dict, outbox: list, answers: dict) -> None:
    """Every actor's states (each recorded field; a field added since may be there too), timers
    with their due instants, unknown counts, and every undelivered effect, as the old Herald answered."""
    assert set(views) == set(answers["actors"])
    for key, old in answers["actors"].items():
        new = views[key]
        assert new is not None, key
        assert set(new["states"]) == set(old["states"]), key
        for plugin, state in old["states"].items():
            for field, value in state.items():
                assert new["states"][plugin].get(field) == value, (key, plugin, field)
        assert new["timers"] == old["timers"], key
        assert new["unknown"] == old["unknown"], key
    undelivered = [e for e in answers["outbox"]["effects"] if e["status"] != "delivered"]
    assert undelivered, "the golden run left an undelivered notification"
    fields = ("id", "key", "kind", "status", "attempts", "created", "next_at", "effect")
    assert [{f: e[f] for f in fields} for e in outbox] == [{f: e[f] for f in fields} for e in undelivered]


async def served_answers(herald, answers: dict) -> tuple[dict, list]:
    """What ``herald`` answers over HTTP for every recorded actor (None for a 404), and its outbox."""
    from server import create_app

    async with herald.running():
        await herald.wait_ready()
        transport = httpx.ASGITransport(app=create_app(herald))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
            views = {}
            for key in answers["actors"]:
                answer = await client.get(f"/v1/actors/{key}")
                views[key] = answer.json() if answer.status_code == 200 else None
            return views, (await client.get("/v1/outbox")).json()["effects"]


@pytest.mark.parametrize(("name", "mode"), CASES)
async def test_golden_dir_opens_with_everything(name: str, mode: str, tmp_path: Path, caplog) -> None:
    """The old Herald's data dir is migrated on open: a copy of the original beside it, one log
    line, and every actor, timer and pending effect as the old Herald answered before it stopped."""
    data, answers, made = golden_copy(name, mode, tmp_path)
    herald = build(data, answers, made)
    with caplog.at_level(logging.WARNING, logger="herald.journal"):
        views, outbox = await served_answers(herald, answers)
    same_as_recorded(views, [e for e in outbox if e["status"] != "delivered"], answers)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("migrated ")]
    if journal_format(name) == formats.JOURNAL_FORMAT:  # e.g. a snapshot without keyed_ids: read as it is
        assert not lines and not list(data.glob("herald.db.format-*"))
        return
    assert len(lines) == 1, lines
    copies = list(data.glob("herald.db.format-*"))
    assert len(copies) == 1 and copies[0].name in lines[0]
    assert f"from journal format {formats_of(copies[0])} to {formats.JOURNAL_FORMAT}" in lines[0]
    # The copy is the original, untouched: the old format and everything it held.
    assert formats_of(copies[0]) < formats.JOURNAL_FORMAT
    assert formats_of(data / "herald.db") == formats.JOURNAL_FORMAT


def journal_format(name: str) -> int:
    return int(re.fullmatch(NAMED, name).group(1))


def formats_of(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("name", [d.name for d in DIRS])
async def test_migrated_dir_opens_again_without_migrating(name: str, tmp_path: Path, caplog) -> None:
    data, answers, made = golden_copy(name, "killed", tmp_path)
    for _ in range(2):
        async with build(data, answers, made).running() as herald:
            await herald.wait_ready()
            views = {key: herald.engine.actor_view(key) for key in answers["actors"]}
    assert len(list(data.glob("herald.db.format-*"))) == (journal_format(name) < formats.JOURNAL_FORMAT)
    assert views["fit-1"]["timers"] == answers["actors"]["fit-1"]["timers"]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_replay_reads_old_formats(name: str, mode: str, tmp_path: Path, capsys) -> None:
    """``herald replay --from`` an old data dir carries every actor, timer and undelivered effect
    over, and leaves the source as it was."""
    data, answers, made = golden_copy(name, mode, tmp_path)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    config = Config(data_dir=str(tmp_path / "new"), durability="batch", plugins=made["plugins"].split(","),
                    notify_url="http://127.0.0.1:9/unreachable")
    # Replayed at the instant the old Herald stopped: its nudges are still pending (the CLI uses the real time).
    assert replay_dir(str(data), config, utcnow=lambda: answers["recorded_at"]) == 0
    out = capsys.readouterr()
    if journal_format(name) < formats.JOURNAL_FORMAT:
        assert "has journal format" in out.err and "reading a copy" in out.err
    after = {p.name: p.read_bytes() for p in data.iterdir()}
    assert {name: after[name] for name in before} == before  # SQLite may add its -shm (and an empty -wal)
    assert set(after) - set(before) <= {"herald.db-shm", "herald.db-wal"}
    assert "herald.db-wal" in before or not after.get("herald.db-wal")
    import trio

    views, outbox = trio.run(served_answers, build(tmp_path / "new", answers, made), answers)
    same_as_recorded(views, [e for e in outbox if e["status"] != "delivered"], answers)


def test_replay_full_refuses_when_events_are_only_in_the_snapshot(tmp_path: Path, capsys, monkeypatch) -> None:
    """--full ignores the snapshot: when the journal was compacted behind it, that would carry
    nothing over, so it fails saying so (exit 2) and writes nothing."""
    data, answers, made = golden_copy("journal2-snapshot1", "clean", tmp_path)
    monkeypatch.setenv("HERALD_PLUGINS", made["plugins"])
    assert cli(["replay", "--from", str(data), "--data-dir", str(tmp_path / "new"), "--full"]) == 2
    err = capsys.readouterr().err
    assert "only in its snapshot" in err and "leave out --full" in err
    assert not (tmp_path / "new" / _journal.DB_NAME).exists()


async def test_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    data, answers, made = golden_copy(DIRS[-1].name, "clean", tmp_path)
    conn = sqlite3.connect(data / _journal.DB_NAME)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(_journal.JournalError, match="journal format 99; this Herald reads formats 1, 2, 3: a newer"):
        async with build(data, answers, made).running():
            pass
    assert not list(data.glob("herald.db.format-*"))


def test_every_older_format_has_a_golden_dir(tmp_path: Path) -> None:
    """A format number that moves without a golden dir for the one before (made by the old code)
    fails here: add the migration step to engine/_formats.py and run tests/golden/make_golden.py."""
    assert _journal.SCHEMA_VERSION == formats.JOURNAL_FORMAT == max(formats.JOURNAL_FORMATS)
    assert _snapshot.FORMAT == formats.SNAPSHOT_FORMAT == max(formats.SNAPSHOT_FORMATS)
    covered_journal, covered_snapshot = set(), set()
    for d in DIRS:
        found = re.fullmatch(NAMED, d.name)
        assert found, f"{d.name}: golden dirs are named journal<N>-snapshot<M>, with -<what> for a variant"
        journal, snapshot = map(int, found.groups())
        for mode in ("clean", "killed"):
            copy = tmp_path / d.name / mode
            shutil.copytree(GOLDEN / d.name / mode / "data", copy)  # reading it may add SQLite's -shm
            assert formats_of(copy / _journal.DB_NAME) == journal, (d.name, mode)
        covered_journal.add(journal)
        covered_snapshot.add(snapshot)
    assert covered_journal >= set(formats.JOURNAL_FORMATS) - {formats.JOURNAL_FORMAT}
    assert covered_snapshot >= set(formats.SNAPSHOT_FORMATS) - {formats.SNAPSHOT_FORMAT}
    readme = (GOLDEN / "README.md").read_text()
    for d in DIRS:
        assert d.name in readme and json.loads((d / "made_by.json").read_text())["commit"] in readme


def test_every_older_cluster_format_has_recorded_topics() -> None:
    """The same for the cluster's formats: a changelog or event format that moves without records of
    the one before, written by a node of the old code (tests/golden/make_changelog_golden.py), fails."""
    from engine._cluster import EVENT_HEADERS

    assert dict(EVENT_HEADERS)["format"] == str(formats.EVENT_FORMAT).encode()
    assert formats.EVENT_FORMAT == max(formats.EVENT_FORMATS)
    assert formats.CHANGELOG_FORMAT == max(formats.CHANGELOG_FORMATS)
    covered_changelog, covered_events = set(), set()
    readme = (GOLDEN / "README.md").read_text()
    for d in TOPICS:
        found = re.fullmatch(r"changelog(\d+)-events(\d+)", d.name)
        assert found, f"{d.name}: recorded topics are named changelog<N>-events<M>"
        changelog, events = map(int, found.groups())
        records = json.loads((d / "records.json").read_text())
        headers = [dict(r["headers"]) for rs in records["changelog"].values() for r in rs]
        assert headers and all(h.get("format", "MQ==") == "MQ==" for h in headers) == (changelog == 1), d.name
        covered_changelog.add(changelog)
        covered_events.add(events)
        assert d.name in readme and json.loads((d / "made_by.json").read_text())["commit"] in readme
    assert covered_changelog >= set(formats.CHANGELOG_FORMATS) - {formats.CHANGELOG_FORMAT}
    assert covered_events >= set(formats.EVENT_FORMATS) - {formats.EVENT_FORMAT}


def test_the_version_moves_with_the_changelog() -> None:
    """``herald --version`` is the package's version, and the changelog has a section for
    pyproject's version (a release bumps both)."""
    import tomllib
    from importlib.metadata import version

    root = Path(__file__).parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    changelog = (root / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[[^\]]*\].*\b{re.escape(declared)}\b|^## \[{re.escape(declared)}\]", changelog, re.M), declared
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["--version"]) == 0
    # Then which build runs, in brackets (docs/operations/compiled.md): "(pure Python)" or "(compiled with mypyc ...)".
    assert out.getvalue().strip().split(" (", 1)[0] == f"herald {version('herald')}"


def test_journal_stats_reads_an_old_dir_as_it_is(tmp_path: Path, capsys) -> None:
    """``herald journal stats`` opens read-only: it names the old format and migrates nothing."""
    data, answers, made = golden_copy("journal1-snapshot1", "killed", tmp_path)
    assert cli(["journal", "stats", "--data-dir", str(data)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == 1 and stats["events"] == len(answers["events"]) and stats["snapshot_seq"] == 4
    assert not list(data.glob("herald.db.format-*"))

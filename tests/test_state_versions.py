"""Plugin states evolve: versions recorded in snapshots, migrations on restore, the recursive check
of state field types at registration, and a state that cannot be encoded at run time."""

from __future__ import annotations

import enum
import logging
import os
import re
import types
from datetime import date
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import attrs
import orjson
import pytest
import trio

import server
from engine import Config, EventType, PluginError, hookimpl
from engine.host import PluginHost
from engine import _journal
from engine.testing import read_state
from web.testing import app_client

TOKEN = "an-admin-token-of-16+-characters"


def plugin(name: str, state_type: type, handler: Any, *, version: int | None = None, migrate: Any = None,
           type_name: str = "workout_logged") -> tuple[str, Any]:
    """A plugin named ``name`` with one event type, its state class, and optionally a version and a migration."""
    hooks: dict[str, Any] = {
        "herald_state_type": hookimpl(lambda: state_type),
        "herald_event_types": hookimpl(lambda: [EventType(type_name, handler)]),
    }
    if version is not None:
        hooks["herald_state_version"] = hookimpl(lambda: version)
    if migrate is not None:
        hooks["herald_migrate_state"] = hookimpl(lambda state, version: migrate(state, version))
    return name, types.SimpleNamespace(**hooks)


# -- the streaks plugin, release 1 and release 2 ---------------------------------------------------


@attrs.frozen
class StreakV1:
    days: int = 0
    last: str = ""  # the last workout's day, "YYYY-MM-DD"


def workout_v1(state: StreakV1, event):
    return StreakV1(state.days + 1, event.timestamp.date().isoformat()), ()


@attrs.frozen
class StreakV2:
    count: int = 0  # was days
    last: date | None = None  # was a str
    best: int = 0  # new, with a default


def workout_v2(state: StreakV2, event):
    return StreakV2(state.count + 1, event.timestamp.date(), max(state.best, state.count + 1)), ()


def migrate_v1(state: dict, version: int) -> dict:
    if version == 1:
        state = {"count": state["days"], "last": state["last"] or None, "best": state["days"]}
    return state


V1 = plugin("streaks", StreakV1, workout_v1)
V2 = plugin("streaks", StreakV2, workout_v2, version=2, migrate=migrate_v1)


def workout(day: int, key: str = "u1") -> dict:
    return {"type": "workout_logged", "key": key, "timestamp": f"2021-03-0{day}T07:00:00Z"}


async def snapshot_with(plugins: list, data: Path, events: list[dict]) -> None:
    """Run a Herald with ``plugins`` on ``data``, post ``events`` and stop it (its final snapshot)."""
    async with app_client(plugins, durability="batch", data_dir=str(data)) as (herald, client):
        for event in events:
            assert (await client.post("/v1/event", json=event)).status_code == 202
    doc = orjson.loads(_journal_snapshot(data))
    assert doc["actors"], "the final snapshot holds the actors"


def _journal_snapshot(data: Path) -> bytes:
    journal = _journal.Journal(data)
    journal.open()
    try:
        return journal.latest_snapshot().body
    finally:
        journal.close()


async def test_a_state_snapshotted_by_v1_is_served_migrated_by_v2(tmp_path: Path) -> None:
    """v1 writes a snapshot (version 1 recorded); v2 (a renamed field, a changed type, a new field)
    restores it through its migration and serves the migrated state, then applies events on top."""
    await snapshot_with([V1], tmp_path, [workout(1), workout(2), workout(3, "u2")])
    doc = orjson.loads(_journal_snapshot(tmp_path))
    assert doc["state_versions"] == {"streaks": 1}
    async with app_client([V2], durability="batch", data_dir=str(tmp_path)) as (herald, client):
        assert herald.journal.count_events(0) == 0  # compacted away: the states come from the snapshot alone
        body = (await client.get("/v1/actors/u1")).json()
        assert body["states"]["streaks"] == {"count": 2, "last": "2021-03-02", "best": 2}
        assert (await client.get("/v1/actors/u2")).json()["states"]["streaks"]["count"] == 1
        assert (await client.post("/v1/event", json=workout(4))).status_code == 202
        assert (await client.get("/v1/actors/u1")).json()["states"]["streaks"] == {
            "count": 3, "last": "2021-03-04", "best": 3}
    doc = orjson.loads(_journal_snapshot(tmp_path))
    assert doc["state_versions"] == {"streaks": 2}
    assert doc["format"] == 3


@attrs.frozen
class StreakFewer:  # days removed, note added with a default: no migration needed
    last: str = ""
    note: str = "none yet"


async def test_adding_or_removing_a_defaulted_field_needs_no_migration(tmp_path: Path, caplog) -> None:
    await snapshot_with([V1], tmp_path, [workout(1), workout(2)])
    changed = plugin("streaks", StreakFewer, lambda state, event: (state, ()))
    with caplog.at_level(logging.WARNING, logger="herald.snapshot"):
        async with app_client([changed], durability="batch", data_dir=str(tmp_path)) as (herald, client):
            state = (await client.get("/v1/actors/u1")).json()["states"]["streaks"]
    assert state == {"last": "2021-03-02", "note": "none yet"}
    # The removed field is said once, by plugin and name (a rename without a migration would be lost there).
    [line] = [r.getMessage() for r in caplog.records if "no longer has" in r.getMessage()]
    assert "plugin streaks" in line and "without days" in line and "herald_migrate_state" in line


def test_an_unreadable_change_without_a_migration_refuses_to_start_in_one_line(tmp_path: Path, capsys,
                                                                                 monkeypatch) -> None:
    """``herald serve`` on v1's snapshot with a v2 that changed ``days``' type and declares no
    migration: exit 2, one line naming the plugin, the field and the fix, no traceback."""
    data = tmp_path / "data"
    trio.run(snapshot_with, [V1], data, [workout(1)])
    stored = _journal_snapshot(data)
    capsys.readouterr()
    for name in [n for n in os.environ if n.startswith("HERALD_")]:
        monkeypatch.delenv(name)
    # The new release of the plugin, as a module named streaks (the name its states are kept under).
    (tmp_path / "streaks.py").write_text(UNMIGRATED)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = server.main(["serve", "--data-dir", str(data), "--port", "0", "--log-level", "WARNING",
                        "--plugins", "streaks"])
    err = capsys.readouterr().err
    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("herald: ")]
    assert "plugin streaks" in line and "field days" in line and "fix: declare herald_state_version() -> 2" in line
    assert "herald_migrate_state" in line and "Traceback" not in err
    # Nothing was written: the snapshot v1 wrote is there as it was.
    assert _journal_snapshot(data) == stored and orjson.loads(stored)["actors"][0][1]["streaks"]["days"] == 1


UNMIGRATED = """
from datetime import date

import attrs

from engine import hookimpl


@attrs.frozen
class Streak:  # days was a count, now the days themselves: no version, no migration
    days: tuple[date, ...] = ()
    last: str = ""


@hookimpl
def herald_state_type():
    return Streak
"""


async def test_a_version_without_a_migration_and_a_newer_version_refuse_to_start(tmp_path: Path) -> None:
    await snapshot_with([V2], tmp_path, [workout(1)])
    # Version 3 changed a type and declares no migration for version 2 (a bump alone reads what it can).
    bumped = plugin("streaks", StreakDays, lambda state, event: (state, ()), version=3)
    assert re.search(r"^plugin streaks: .*\(version 2\).*field count.*fix: declare herald_migrate_state\(state, "
                     r"version\) turning version-2 states", await refusal([bumped], tmp_path))
    older = plugin("streaks", StreakV2, workout_v2)
    assert "states of version 2, written by a newer streaks; this one declares version 1" in await refusal(
        [older], tmp_path)


async def refusal(plugins: list, data: Path) -> str:
    """The PluginError a Herald with ``plugins`` on ``data`` refuses to start with."""
    try:
        async with app_client(plugins, durability="batch", data_dir=str(data)):
            pass
    except BaseException as exc:  # a nursery's group around it
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        assert isinstance(exc, PluginError), exc
        return str(exc)
    raise AssertionError("Herald started")


@attrs.frozen
class StreakDays:
    count: tuple[date, ...] = ()


def test_read_state_runs_the_migration_a_restart_runs() -> None:
    assert read_state(V2, {"days": 3, "last": "2021-03-01"}, version=1) == StreakV2(3, date(2021, 3, 1), 3)
    assert read_state(V2, {"count": 3, "last": None, "best": 5}, version=2) == StreakV2(3, None, 5)
    broken = plugin("streaks", StreakV2, workout_v2, version=2, migrate=lambda state, version: state["nope"])
    with pytest.raises(PluginError, match="herald_migrate_state failed on .* version 1 .*KeyError"):
        read_state(broken, {"days": 3}, version=1)


def test_versions_and_migrations_are_checked_at_registration() -> None:
    config = Config(durability="memory")
    for bad, message in [
        (plugin("streaks", StreakV1, workout_v1, version=0), "at least 1"),
        (plugin("streaks", StreakV1, workout_v1, migrate=migrate_v1), "herald_migrate_state with state version 1"),
        (("bare", types.SimpleNamespace(herald_state_version=hookimpl(lambda: 2))), "without herald_state_type"),
    ]:
        with pytest.raises(PluginError, match=message):
            PluginHost.from_objects(config, [bad])


# -- registration: every field type, recursively --------------------------------------------------


class Day:  # a plain class: neither cattrs nor JSON knows it
    def __init__(self, day: int = 1) -> None:
        self.day = day


@attrs.frozen
class Inner:
    day: Day | None = None


@attrs.frozen
class A:
    n: int = 0


@attrs.frozen
class Outer:  # nested attrs classes all the way down
    a: A = A()
    many: tuple[A, ...] = ()


@attrs.frozen
class B:
    n: int = 0


class Colour(enum.Enum):
    RED = Day()


def _state(annotation: Any, default: Any = None) -> type:
    return attrs.make_class("Held", {"x": attrs.field(type=annotation, default=default)}, frozen=True)


@pytest.mark.parametrize(("annotation", "field"), [
    (Day | None, "x"),
    (Optional[Day], "x"),
    (tuple[Day, ...], "x"),
    (Mapping[str, Day], "x"),
    (frozenset[Day], "x"),
    (Inner | None, "x.day"),
    (A | B | None, "x"),
    (Colour | None, "x"),
])
def test_a_state_field_type_that_cannot_be_stored_is_refused_naming_plugin_and_field(annotation, field) -> None:
    """Each of these passes the initial state's round trip (None, an empty container) yet could never
    be snapshotted once a handler fills it in."""
    with pytest.raises(PluginError) as refused:
        PluginHost.from_objects(Config(durability="memory"), [plugin("days", _state(annotation, None), workout_v1)])
    message = str(refused.value)
    assert message.startswith(f"days: Held.{field} (typed ") and "cannot be stored" in message
    assert "\n" not in message


@pytest.mark.parametrize(("annotation", "default"), [
    (Optional[date], None), (frozenset[str], frozenset()), (Mapping[str, int], {}), (tuple[A, ...], ()),
    (dict[int, str], {}), (Literal["a", "b"] | None, None), (A | None, None), (Any, None),
    (list[dict[str, tuple[int, float]]] | None, None), (int | str | A | None, None), (Outer, Outer()),
])
def test_state_field_types_cattrs_and_json_hold_pass(annotation, default) -> None:
    PluginHost.from_objects(Config(durability="memory"), [plugin("ok", _state(annotation, default), workout_v1)])


# -- run time: a state that cannot be encoded anyway -------------------------------------------------


@attrs.frozen
class Loose:
    seen: Any = None  # Any: registration cannot tell what a handler will put here


@attrs.frozen
class Count:
    n: int = 0


async def test_an_unencodable_state_at_run_time(tmp_path: Path, caplog) -> None:
    """A handler puts a plain object under ``Any``: the snapshot is skipped naming plugin, field and
    actor (nothing compacted), ``/healthz`` stays 200 but degraded, ingestion goes on, and the actor's
    other states are still served by ``GET /v1/actors/{key}``."""
    loose = plugin("loose", Loose, lambda state, event: (Loose(Day(3)), ()), type_name="seen")
    count = plugin("counter", Count, lambda state, event: (Count(state.n + 1), ()), type_name="counted")
    with caplog.at_level(logging.ERROR, logger="herald"):
        async with app_client([loose, count], durability="batch", data_dir=str(tmp_path)) as (herald, client):
            for type_name in ("counted", "seen"):
                event = {"type": type_name, "key": "u1", "timestamp": "2021-03-01T07:00:00Z"}
                assert (await client.post("/v1/event", json=event)).status_code == 202
            assert (await client.get("/healthz")).json()["status"] == "ready"
            answer = (await client.post("/v1/admin/snapshot")).json()
            assert "plugin loose" in answer["skipped"] and "field seen" in answer["skipped"]
            assert "'u1'" in answer["skipped"] and herald.snapshot_seq == 0
            health = await client.get("/healthz")
            assert health.status_code == 200
            body = health.json()
            assert body["status"] == "degraded" and body["ready"] is True
            [degraded] = body["degraded"]
            assert (degraded["code"], degraded["plugin"], degraded["field"]) == ("unencodable_state", "loose", "seen")
            assert "u1" not in orjson.dumps(degraded).decode()  # /healthz is public: no actor key
            view = await client.get("/v1/actors/u1")
            assert view.status_code == 200
            assert view.json()["states"] == {"counter": {"n": 1}}
            assert view.json()["state_errors"]["loose"]["field"] == "seen"
            event = {"type": "counted", "key": "u2", "timestamp": "2021-03-01T07:00:00Z"}
            assert (await client.post("/v1/event", json=event)).status_code == 202
    lines = [r.getMessage() for r in caplog.records if "cannot be encoded" in r.getMessage()]
    assert lines and all("Traceback" not in line for line in lines)
    assert "plugin loose" in lines[0] and "field seen" in lines[0] and "actor 'u1'" in lines[0]
    assert len(lines) == 1  # said once, not at every try (the final snapshot at the stop tried again)


async def test_health_is_ready_again_once_a_snapshot_can_be_written(tmp_path: Path) -> None:
    loose = plugin("loose", Loose, lambda state, event: (Loose(Day(3) if event.data.get("bad") else 3), ()),
                   type_name="seen")
    async with app_client([loose], durability="batch", data_dir=str(tmp_path)) as (herald, client):
        for bad in (True, False):
            event = {"type": "seen", "key": "u1", "timestamp": "2021-03-01T07:00:00Z", "data": {"bad": bad}}
            assert (await client.post("/v1/event", json=event)).status_code == 202
            await client.post("/v1/admin/snapshot")
            assert (await client.get("/healthz")).json()["status"] == ("degraded" if bad else "ready")


# -- snapshots written before versions were recorded -------------------------------------------------


async def test_a_snapshot_without_versions_holds_every_plugins_first_version(tmp_path: Path) -> None:
    """The golden dir of snapshot format 2 (made by 9360baf, no versions recorded): a fitness that now
    declares version 2 gets each stored state through its migration as version 1, and serves what the
    old Herald answered."""
    from plugins.customers import hooks as customers
    from plugins.fitness import hooks as fitness

    from .test_upgrades import golden_copy, served_answers

    data, answers, made = golden_copy("journal3-snapshot2-keyed", "clean", tmp_path)
    seen: list[tuple[int, frozenset]] = []

    def migrate(state: dict, version: int) -> dict:
        seen.append((version, frozenset(state)))
        return state

    hooks = {name: getattr(fitness, name) for name in dir(fitness) if name.startswith("herald_")}
    fitness_v2 = types.SimpleNamespace(**hooks, herald_state_version=hookimpl(lambda: 2),
                                       herald_migrate_state=hookimpl(migrate))
    config = Config(data_dir=str(data), durability="batch", notify_url="http://127.0.0.1:9/unreachable")
    host = PluginHost.from_objects(config, [("fitness", fitness_v2), customers])
    from engine.host import Herald

    views, _ = await served_answers(Herald(config, host, utcnow=lambda: answers["recorded_at"]), answers)
    fitness_actors = [key for key, view in answers["actors"].items() if "fitness" in (view or {}).get("states", {})]
    assert fitness_actors and len(seen) == len(fitness_actors)
    assert {version for version, _ in seen} == {1}
    for key in fitness_actors:
        assert views[key]["states"]["fitness"] == answers["actors"][key]["states"]["fitness"]


async def test_a_disabled_plugins_states_are_named_not_dropped_silently(tmp_path: Path, caplog) -> None:
    await snapshot_with([V1], tmp_path, [workout(1), workout(2, "u2")])
    other = plugin("counter", Count, lambda state, event: (Count(state.n + 1), ()), type_name="counted")
    with caplog.at_level(logging.WARNING, logger="herald.snapshot"):
        async with app_client([other], durability="batch", data_dir=str(tmp_path)):
            pass
    [line] = [r.getMessage() for r in caplog.records if "is not enabled" in r.getMessage()]
    assert "plugin streaks" in line and "2 actor(s)" in line


# -- cluster checkpoints: the same versions, inside each partition's snapshot -------------------------


def _shard(plugins: list):
    from engine.host import Herald
    from engine._cluster import Shard

    config = Config(cluster="127.0.0.1:9")
    return Shard(Herald(config, PluginHost.from_objects(config, plugins)).cluster, 0)


def test_a_checkpoint_records_state_versions_and_a_new_release_restores_it_migrated() -> None:
    from datetime import datetime, timezone

    from engine import Event
    from engine._cluster import Shard, encode_event
    from engine._states import UnencodableState

    from .test_cluster_parts import _Message

    shard = _shard([V1])
    for day in (1, 2):
        stamp = datetime(2021, 3, day, 7, tzinfo=timezone.utc)
        shard.apply(_Message(encode_event(Event(f"w{day}", "workout_logged", "u1", stamp, {}, stamp)), shard.offset,
                             int(stamp.timestamp() * 1000)))
    doc = orjson.loads(Shard.encode(*shard.capture()))
    # Format 2 with the versions added: a node of the previous version (which reads 2 and ignores
    # members it does not know) restores it during a rolling upgrade.
    assert doc["snapshot"]["format"] == 2 and doc["snapshot"]["state_versions"] == {"streaks": 1}
    again = _shard([V2])
    again.restore(doc)
    assert again.engine.actors["u1"].get("streaks") == StreakV2(2, date(2021, 3, 2), 2)
    # Its own checkpoint says version 2 under format 2: read as version 2 (no migration from 1 again).
    third = _shard([V2])
    third.restore(orjson.loads(Shard.encode(*again.capture())))
    assert third.engine.actors["u1"].get("streaks") == StreakV2(2, date(2021, 3, 2), 2)
    # A state that cannot be encoded is named, not a bare TypeError (the node degrades its health with it).
    loose = _shard([plugin("loose", Loose, lambda state, event: (Loose(Day()), ()), type_name="seen")])
    stamp = datetime(2021, 3, 1, 7, tzinfo=timezone.utc)
    loose.apply(_Message(encode_event(Event("s1", "seen", "u9", stamp, {}, stamp)), 0, int(stamp.timestamp() * 1000)))
    with pytest.raises(UnencodableState, match="plugin loose: the state of actor 'u9' cannot be encoded: field seen"):
        Shard.encode(*loose.capture())


@attrs.frozen
class StreakOfDays:  # release 2 without a version or a migration: days was a count, now the days themselves
    days: tuple[date, ...] = ()
    last: str = ""


async def test_a_cluster_node_whose_plugin_cannot_read_a_checkpoint_fails_in_one_line_and_exits() -> None:
    """A node of the new release takes over a partition checkpointed by the old one: it applies nothing,
    /healthz says cluster_failed, and it ends with one line naming the plugin, the field and the fix."""
    from datetime import datetime, timezone

    from engine import Event
    from engine._cluster import EVENT_HEADERS, encode_event
    from engine.host import Herald

    from .test_cluster_formats import Log, catch_up

    log = Log()

    def node(plugins: list[Any], give_up: Any = None) -> Any:
        config = Config(cluster="127.0.0.1:9", cluster_partitions=1)
        cluster = Herald(config, PluginHost.from_objects(config, plugins), give_up=give_up).cluster
        cluster._changelog = log
        return cluster

    for day in (1, 2):
        at = datetime(2021, 3, day, 7, tzinfo=timezone.utc)
        log.append("herald.events", 0, encode_event(Event(f"w{day}", "workout_logged", "u1", at, {}, at)), b"u1",
                   EVENT_HEADERS, int(at.timestamp() * 1000))
    old = node([V1])
    await old._restore(log, 0, {})
    catch_up(old.shards[0], log)
    await old.checkpoint(old.shards[0])

    lines: list[str] = []
    new = node([plugin("streaks", StreakOfDays, lambda state, event: (state, ()))], give_up=lines.append)
    await new._restore(log, 0, {})
    assert new.shards == {} and new.herald.status == "cluster_failed" and not new.herald.ready
    [line] = lines
    assert "partition 0's checkpoint cannot be restored" in line and "plugin streaks" in line
    assert "field days" in line and "herald_migrate_state" in line and "\n" not in line


async def test_a_cluster_node_is_degraded_while_a_checkpoint_cannot_be_encoded_and_ready_once_it_can() -> None:
    from datetime import datetime, timezone

    from engine import Event
    from engine._cluster import EVENT_HEADERS, encode_event
    from engine.host import Herald

    from .test_cluster_formats import Log, catch_up

    log = Log()
    config = Config(cluster="127.0.0.1:9", cluster_partitions=1)
    loose = plugin("loose", Loose, lambda state, event: (Loose(Day(3) if event.data.get("bad") else 3), ()),
                   type_name="seen")
    cluster = Herald(config, PluginHost.from_objects(config, [loose])).cluster
    cluster._changelog = log
    await cluster._restore(log, 0, {})
    for i, bad in enumerate((True, False)):
        at = datetime(2021, 3, 1, 7, i, tzinfo=timezone.utc)
        log.append("herald.events", 0, encode_event(Event(f"s{i}", "seen", "u1", at, {"bad": bad}, at)), b"u1",
                   EVENT_HEADERS, int(at.timestamp() * 1000))
        catch_up(cluster.shards[0], log)
        await cluster.checkpoint(cluster.shards[0])
        degraded = [d.code for d in cluster.herald.degraded()]
        assert degraded == (["unencodable_state"] if bad else []), degraded

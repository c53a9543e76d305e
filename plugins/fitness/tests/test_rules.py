"""The fitness rules through the simulation harness (autojump_clock: hours in ms)."""

from datetime import datetime, timedelta, timezone

import pytest

from engine import InvalidEvent
from engine.testing import Simulation
from plugins.fitness import hooks as fitness

UTC = timezone.utc
T0 = datetime(2021, 2, 28, 16, 0, tzinfo=UTC)

SNAPSHOT = [
    {"user_id": "foo2", "device_id": "bar2", "type": "app_launch", "time_stamp": "2021-02-28 16:22:52"},
    {"user_id": "foo1", "device_id": "bar1", "type": "training_program_started", "training_program_id": "2352",
     "training_program_title": "7 Minutes of HIIT Training", "time_stamp": "2021-02-28 16:23:25"},
    {"user_id": "foo2", "device_id": "bar2", "type": "training_program_started", "training_program_id": "2352",
     "time_stamp": "2021-02-28 16:52:00"},
    {"user_id": "foo2", "device_id": "bar2", "type": "training_program_cancelled", "training_program_id": "2352",
     "time_stamp": "2021-02-28 16:54:21"},
    {"user_id": "foo1", "device_id": "bar1", "type": "training_program_finished", "training_program_id": "2352",
     "time_stamp": "2021-02-28 16:59:43"},
]


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def ev(type_, seconds, user="u", program="p1", **extra):
    event = {"user_id": user, "type": type_, "timestamp": at(seconds), **extra}
    if type_.startswith("training_program"):
        event["training_program_id"] = program
    return event


def kinds(sim):
    return [(n.payload["type"], n.payload["user_id"]) for n in sim.notifications]


async def test_seed_snapshot_sends_both_notifications(autojump_clock):
    async with Simulation([fitness]) as sim:
        await sim.replay(SNAPSHOT)
        assert kinds(sim) == [("nudge", "foo2"), ("congratulate", "foo1")]
        (nudge_at, nudge), (congrats_at, congrats) = sim.log
        assert nudge_at == datetime(2021, 2, 28, 16, 32, 52, tzinfo=UTC)
        assert nudge.payload["device_id"] == "bar2"
        assert "start a training program" in nudge.payload["message"].lower()
        assert congrats_at == datetime(2021, 2, 28, 16, 59, 43, tzinfo=UTC)
        assert "36 minutes" in congrats.payload["message"]
        assert congrats.payload["minutes"] == 36.3
        assert congrats.payload["training_program_title"] == "7 Minutes of HIIT Training"
        assert nudge.url == congrats.url == "http://127.0.0.1:8000/v1/notify"


async def test_full_speed_replay_equals_living_through_it(autojump_clock):
    async with Simulation([fitness]) as fast:
        await fast.replay(SNAPSHOT)
    async with Simulation([fitness]) as live:
        await live.replay(SNAPSHOT, realtime=True)
    assert fast.log == live.log
    assert [k.idempotency_key for _, k in fast.log] == [k.idempotency_key for _, k in live.log]


@pytest.mark.parametrize(
    "seconds, expected",
    [(30 * 60, None), (30 * 60 - 1, None), (30 * 60 + 1, 30.0), (36 * 60 + 18, 36.3), (95 * 60 + 30, 95.5)],
)
async def test_congratulate_strictly_over_thirty_minutes(autojump_clock, seconds, expected):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("training_program_started", 0))
        sim.apply(ev("training_program_finished", seconds))
        if expected is None:
            assert sim.notifications == []
        else:
            [note] = sim.notifications
            assert note.payload["minutes"] == expected
            assert f"{int(seconds // 60)} minutes" in note.payload["message"]
        assert sim.state("u", "fitness").programs_finished == 1


async def test_cancelled_programs_never_count(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("training_program_started", 0))
        sim.apply(ev("training_program_cancelled", 600))
        sim.apply(ev("training_program_finished", 3600))
        assert sim.notifications == []
        assert sim.state("u", "fitness").programs_finished == 0


async def test_finish_is_matched_to_its_own_program(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("training_program_started", 0, program="a"))
        sim.apply(ev("training_program_started", 1800, program="b"))
        sim.apply(ev("training_program_finished", 3000, program="b"))  # b: 20 min
        sim.apply(ev("training_program_finished", 3600, program="a"))  # a: 60 min
        sim.apply(ev("training_program_finished", 3700, program="zzz"))  # never started
        assert [(n.payload["training_program_id"], n.payload["minutes"]) for n in sim.notifications] == [("a", 60.0)]


async def test_nudge_ten_minutes_after_launch_without_training(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("app_launch", 0))
        await sim.advance(minutes=9, seconds=59)
        assert sim.notifications == []
        await sim.advance(1)
        assert kinds(sim) == [("nudge", "u")]
        assert sim.log[0][0] == T0 + timedelta(minutes=10)
        await sim.advance(hours=5)
        assert len(sim.notifications) == 1


async def test_a_new_launch_restarts_the_ten_minutes(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("app_launch", 0))
        await sim.advance(minutes=6)
        sim.apply(ev("app_launch", 360))
        await sim.advance(minutes=9)
        assert sim.notifications == []
        await sim.advance(minutes=1)
        assert [when for when, _ in sim.log] == [T0 + timedelta(minutes=16)]


@pytest.mark.parametrize("start_after", [1, 599, 600])
async def test_starting_within_ten_minutes_cancels_the_nudge(autojump_clock, start_after):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("app_launch", 0))
        sim.apply(ev("training_program_started", start_after))
        await sim.advance(hours=1)
        assert sim.notifications == []
        assert sim.actor_view("u")["timers"] == []


async def test_starting_after_ten_minutes_is_too_late(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("app_launch", 0))
        sim.apply(ev("training_program_started", 601))  # full speed: the nudge fires first
        assert kinds(sim) == [("nudge", "u")]


async def test_other_events_do_not_cancel_the_nudge(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply(ev("app_launch", 0))
        sim.apply(ev("profile_viewed", 60))
        sim.apply(ev("training_program_cancelled", 120))
        await sim.advance(minutes=10)
        assert kinds(sim) == [("nudge", "u")]


async def test_improved_shape_and_enum_types(autojump_clock):
    async with Simulation([fitness]) as sim:
        sim.apply({"deviceId": "bar9", "type": "TRAINING_PROGRAM_STARTED", "timestamp": "2021-02-28T16:00:00Z",
                  "details": {"programId": 2352, "programTitle": "HIIT"}})
        sim.apply({"deviceId": "bar9", "type": "TRAINING_PROGRAM_FINISHED", "timestamp": "2021-02-28T16:45:00Z",
                  "details": {"programId": "2352"}})
        [note] = sim.notifications
        assert note.payload["user_id"] == "bar9"
        assert note.payload["training_program_id"] == "2352"
        assert note.payload["training_program_title"] == "HIIT"
        assert note.payload["minutes"] == 45.0


@pytest.mark.parametrize(
    "extra, field",
    [({}, "training_program_id"), ({"training_program_id": ""}, "training_program_id"),
     ({"training_program_id": ["x"]}, "training_program_id"),
     ({"training_program_id": "p", "training_program_title": 5}, "training_program_title")],
)
async def test_program_events_need_a_program_id(autojump_clock, extra, field):
    async with Simulation([fitness]) as sim:
        with pytest.raises(InvalidEvent) as info:
            sim.apply({"user_id": "u", "type": "training_program_started", "timestamp": at(0), **extra})
        assert info.value.field == field


async def test_thresholds_are_configurable(autojump_clock):
    env = {"HERALD_FITNESS_CONGRATULATE_MINUTES": "5", "HERALD_FITNESS_NUDGE_MINUTES": "1",
           "HERALD_NOTIFY_URL": "http://127.0.0.1:9/hook"}
    async with Simulation([fitness], env=env) as sim:
        sim.apply(ev("app_launch", 0))
        await sim.advance(60)
        sim.apply(ev("training_program_started", 60))
        sim.apply(ev("training_program_finished", 60 + 301))
        assert kinds(sim) == [("nudge", "u"), ("congratulate", "u")]
        assert "1 minute ago" in sim.notifications[0].payload["message"]
        assert sim.notifications[0].url == "http://127.0.0.1:9/hook"


def test_the_handlers_fast_state_builder_makes_the_same_frozen_state():
    import attrs
    import pytest

    from plugins.fitness.rules import FitnessState, Run, _state

    run = Run("p-1", None, datetime(2021, 2, 28, tzinfo=timezone.utc))
    made = _state((run,), None, "d", 2, 31.5, 1)
    assert made == FitnessState((run,), None, "d", 2, 31.5, 1)
    assert repr(made) == repr(FitnessState((run,), None, "d", 2, 31.5, 1))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.device_id = "e"

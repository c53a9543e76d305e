"""Timers and clocks: set, reset, cancel; a clock per actor, the watermark, event time vs wall time."""

from datetime import datetime, timedelta, timezone

import attrs
import trio
import pytest

from engine import CancelTimer, EventType, Notify, SetTimer, hookimpl

from engine._clock import StreamClock
from engine.testing import Simulation

UTC = timezone.utc
T0 = datetime(2021, 2, 28, 16, 0, tzinfo=UTC)


@attrs.frozen
class Alarm:
    fired: tuple[str, ...] = ()


class AlarmPlugin:
    """Test plugin: 'arm' sets a timer (name/seconds from data), 'disarm' cancels it."""

    name = "alarm"

    @hookimpl
    def herald_state_type(self):
        return Alarm

    @hookimpl
    def herald_event_types(self):
        def arm(state, event):
            at = event.timestamp + timedelta(seconds=event.data["seconds"])
            return state, (SetTimer(event.data.get("name", "a"), at, event.data.get("tag")),)

        def disarm(state, event):
            return state, (CancelTimer(event.data.get("name", "a")),)

        return [EventType("arm", arm), EventType("disarm", disarm)]

    @hookimpl
    def herald_timer_handler(self):
        def fired(state, timer):
            return attrs.evolve(state, fired=state.fired + (timer.name,)), (
                Notify("http://x", {"name": timer.name, "tag": timer.data, "due": timer.due.isoformat()}, timer.name),
            )

        return fired


def ev(type_, at, key="u", **data):
    return {"type": type_, "key": key, "timestamp": (T0 + timedelta(seconds=at)).isoformat(), "data": data}


def fired(sim):
    return [(when, n.payload["name"], n.payload["tag"]) for when, n in sim.log]


async def test_timer_fires_at_engine_time_after_wall_time_passes(autojump_clock):
    async with Simulation([AlarmPlugin()]) as sim:
        sim.apply(ev("arm", 0, seconds=60, tag="x"))
        await sim.advance(59)
        assert sim.log == []
        await sim.advance(1)
        assert fired(sim) == [(T0 + timedelta(seconds=60), "a", "x")]
        assert sim.state("u", "alarm").fired == ("a",)
        assert sim.actor_view("u")["timers"] == []


async def test_reset_replaces_and_cancel_removes(autojump_clock):
    async with Simulation([AlarmPlugin()]) as sim:
        sim.apply(ev("arm", 0, seconds=60, tag="first"))
        sim.apply(ev("arm", 30, seconds=60, tag="second"))  # same name: reset to t=90
        timers = sim.actor_view("u")["timers"]
        assert [(t["name"], t["due"]) for t in timers] == [("a", (T0 + timedelta(seconds=90)).isoformat())]
        await sim.advance(120)
        assert fired(sim) == [(T0 + timedelta(seconds=90), "a", "second")]
        sim.apply(ev("arm", 200, seconds=10, name="b"))
        sim.apply(ev("disarm", 205, name="b"))
        await sim.advance(3600)
        assert len(sim.log) == 1
        assert len(sim.engine.timers) == 0


async def test_timers_due_before_an_event_fire_before_it_at_full_speed(autojump_clock):
    async with Simulation([AlarmPlugin()]) as sim:
        sim.apply(ev("arm", 0, seconds=60, tag="due-60"))
        sim.apply(ev("arm", 0, seconds=120, name="c", tag="due-120"))
        # No wall time passes, but the next event is 100 s later in event time.
        sim.apply(ev("disarm", 100, name="c"))
        assert fired(sim) == [(T0 + timedelta(seconds=60), "a", "due-60")]
        # A timer due exactly at the event's timestamp is not "before" it: the event wins.
        sim.apply(ev("arm", 100, seconds=50, name="d", tag="due-150"))
        sim.apply(ev("disarm", 150, name="d"))
        assert len(sim.log) == 1


async def test_each_actor_keeps_its_own_clock_which_never_goes_back(autojump_clock):
    async with Simulation([AlarmPlugin()]) as sim:
        sim.apply(ev("arm", 1000, seconds=10))
        sim.apply(ev("arm", 0, key="late", seconds=5, name="late"))  # another actor, far behind: its own clock
        assert sim.now() == T0 + timedelta(seconds=1000)  # the stream's newest time
        assert sim.clock("u") == T0 + timedelta(seconds=1000) and sim.clock("late") == T0
        await sim.advance(4.9)
        assert sim.log == []  # u's events did not move the late actor's timer
        await sim.advance(0.1)
        assert [name for _, name, _ in fired(sim)] == ["late"]
        sim.apply(ev("arm", 500, seconds=100, name="old"))  # older than u's clock: no rewind
        assert sim.clock("u") == T0 + timedelta(seconds=1005)
        await sim.advance(0.001)
        assert [name for _, name, _ in fired(sim)] == ["late", "old"]  # due 600: u's clock is past it already
        await sim.advance(5)
        assert [name for _, name, _ in fired(sim)] == ["late", "old", "a"]


async def test_future_timestamps_beyond_skew_are_rejected_and_do_not_move_the_clock(autojump_clock):
    now = T0.timestamp() + 50
    async with Simulation([AlarmPlugin()], env={"HERALD_MAX_SKEW": "60"}, utcnow=lambda: now) as sim:
        sim.apply(ev("arm", 0, seconds=10))
        from engine import InvalidEvent

        with pytest.raises(InvalidEvent) as info:
            sim.apply(ev("arm", 111, seconds=10))
        assert (info.value.field, info.value.code) == ("timestamp", "in_future")
        assert sim.now() == T0
        sim.apply(ev("arm", 110, key="v", seconds=1))  # exactly at the skew limit is fine


def test_the_stream_clock_runs_at_wall_speed_and_the_watermark_trails_it():
    clock = StreamClock(lateness=60.0)
    assert clock.now(100.0) is None and clock.watermark(100.0) is None and clock.offset() == float("-inf")
    assert clock.observe(1000.0, wall=100.0)
    assert clock.now(105.0) == 1005.0 and clock.watermark(105.0) == 945.0
    assert not clock.observe(1002.0, wall=105.0)  # older than the stream's time: no jump back
    assert clock.observe(2000.0, wall=110.0) and clock.now(110.0) == 2000.0
    assert clock.offset() == 2000.0 - 60.0 - 110.0


async def test_many_timers_fire_in_due_order(autojump_clock):
    async with Simulation([AlarmPlugin()]) as sim:
        for i in range(200):
            sim.apply(ev("arm", 0, key=f"u{i}", seconds=(i * 37) % 200 + 1, tag=str(i)))
        await sim.advance(300)
        whens = [when for when, _ in sim.log]
        assert len(whens) == 200 and whens == sorted(whens)


async def test_a_wake_up_brought_forward_and_then_passed_by_events_fires_nothing_early(autojump_clock):
    """The timer task sleeps until a timer an hour away; an event sets one due at once (the wake-up
    comes forward), and the next event fires it. The task then wakes early: it must fire only what
    is due by the wall, not the hour-away timer it first slept for."""
    async with Simulation([AlarmPlugin()]) as sim:
        sim.apply(ev("arm", 0, key="later", seconds=3600, name="hour", tag="hour"))
        sim.apply(ev("arm", 0, key="soon", seconds=1, name="soon", tag="soon"))
        await trio.sleep(2)  # the timer task fires "soon", then sleeps until the hour is up
        sim.apply(ev("arm", 0, key="now", seconds=0, name="now", tag="now"))  # due at once
        sim.apply(ev("disarm", 0, key="other", name="x"))  # fires "now" on the way in
        assert [name for _, name, _ in fired(sim)] == ["soon", "now"]
        await trio.sleep(1)  # the timer task wakes at its brought-forward deadline
        assert [name for _, name, _ in fired(sim)] == ["soon", "now"]
        await sim.advance(3600)
        assert [name for _, name, _ in fired(sim)] == ["soon", "now", "hour"]


async def test_a_timer_set_in_posix_seconds_fires_where_its_datetime_would(autojump_clock):
    class Seconds(AlarmPlugin):
        @hookimpl
        def herald_event_types(self):
            def arm(state, event):
                return state, (SetTimer("a", event.at + event.data["seconds"], event.data.get("tag")),)

            return [EventType("arm", arm)]

    logs = []
    for plugin in (AlarmPlugin(), Seconds()):
        async with Simulation([plugin]) as sim:
            sim.apply(ev("arm", 0, seconds=60, tag="x"))
            sim.apply(ev("arm", 0, key="v", seconds=30.5, tag="y"))
            await sim.advance(120)
            logs.append(fired(sim))
    assert logs[0] == logs[1] == [(T0 + timedelta(seconds=30.5), "a", "y"), (T0 + timedelta(seconds=60), "a", "x")]

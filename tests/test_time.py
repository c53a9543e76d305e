"""Time per actor: late, offline and skewed clients get their timers on their own timeline.

Each case here failed on the single engine clock Herald had before (one user's
events moved every other user's timers). Timestamps are live: "now" is the
simulated real time, so that the skew check applies as it would in production.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import trio
import trio.testing

from engine.testing import Simulation
from plugins.fitness import hooks as fitness

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(offset: timedelta) -> str:
    return (NOW + offset).isoformat()


def launch(user: str, when: timedelta) -> dict:
    return {"user_id": user, "type": "app_launch", "timestamp": at(when)}


def start(user: str, when: timedelta) -> dict:
    return {"user_id": user, "type": "training_program_started", "training_program_id": "p", "timestamp": at(when)}


def nudged(sim: Simulation) -> list[str]:
    return [n.payload["user_id"] for n in sim.notifications if n.payload["type"] == "nudge"]


def live(real_start: float):
    """The real time of a live simulation: it starts at ``real_start`` and runs on trio's clock."""
    origin = trio.current_time()
    return lambda: real_start + (trio.current_time() - origin)


async def test_an_offline_phone_that_syncs_an_hour_late_is_not_nudged(autojump_clock):
    minute = timedelta(minutes=1)
    async with Simulation([fitness], utcnow=live(NOW.timestamp())) as sim:
        sim.apply(launch("a", 0 * minute))  # A launches now
        sim.apply(start("a", 1 * minute))
        # B was offline: it launched at 08:00 and started a training at 08:02, and syncs now.
        sim.apply(launch("b", -60 * minute))
        sim.apply(start("b", -58 * minute))
        await sim.advance(minutes=30)
        assert nudged(sim) == []
        assert sim.clock("b") == NOW - 58 * minute + timedelta(minutes=30)


@pytest.mark.parametrize("skew", [timedelta(minutes=-30), timedelta(minutes=4)])
async def test_a_slow_or_fast_phone_is_nudged_ten_minutes_of_its_own_time_after_its_launch(autojump_clock, skew):
    minute = timedelta(minutes=1)
    async with Simulation([fitness], utcnow=live(NOW.timestamp())) as sim:
        sim.apply(launch("others", 0 * minute))  # other users' events at the true time
        sim.apply(launch("phone", skew))  # this phone's clock is off by ``skew``
        sim.apply(launch("trainer", 0 * minute))
        await sim.advance(minutes=7)
        sim.apply(start("trainer", 7 * minute))  # starts 7 minutes after launching: no nudge for them
        sim.apply(start("others", 7 * minute))
        assert nudged(sim) == []
        await sim.advance(minutes=2.99)
        assert nudged(sim) == []  # not early: 9.99 minutes of the phone's own time
        await sim.advance(minutes=0.02)
        assert nudged(sim) == ["phone"]
        [(when, _)] = [(w, n) for w, n in sim.log]
        assert when == NOW + skew + 10 * minute  # its own launch + 10 minutes


async def test_a_late_users_own_later_event_fires_its_overdue_nudge_first(autojump_clock):
    minute = timedelta(minutes=1)
    async with Simulation([fitness], utcnow=live(NOW.timestamp())) as sim:
        sim.apply(launch("a", 0 * minute))
        sim.apply(launch("late", -45 * minute))  # 45 minutes behind everyone else; its nudge is due at -35
        await sim.advance(minutes=1)
        assert nudged(sim) == []  # neither the others' clocks nor the watermark (1 h behind) passed it
        sim.apply(start("late", -30 * minute))  # its own next event is past the nudge: the nudge fires first
        assert nudged(sim) == ["late"]
        assert sim.state("late", "fitness").running  # then the start is applied


async def test_the_watermark_resolves_idle_actors_in_a_full_speed_replay(autojump_clock):
    day = timedelta(days=1)
    minute = timedelta(minutes=1)
    async with Simulation([fitness]) as sim:
        sim.apply(launch("idle", -2 * day))
        sim.apply(launch("busy", -2 * day + 5 * minute))
        sim.apply(start("busy", -2 * day + 6 * minute))
        assert nudged(sim) == []  # no wall time has passed: the idle actor's clock stands still
        sim.apply(launch("someone", -day))  # a day later: the watermark passes the idle actor's nudge
        assert nudged(sim) == ["idle"]
        assert sim.watermark() == NOW - day - timedelta(hours=1)


# -- replay is exact ------------------------------------------------------------------------------


def scenario() -> list[dict]:
    from plugins.fitness.tests.test_simulation import synthetic_day

    return synthetic_day(users=30, events=1500, seed=13)


def a_day_after(events: list[dict]) -> dict:
    last = max(datetime.fromisoformat(e["time_stamp"]).replace(tzinfo=UTC) for e in events)
    return {"user_id": "tomorrow", "type": "screen_view", "timestamp": (last + timedelta(days=1)).isoformat()}


def notifications(effects) -> list[tuple[str, str]]:
    return sorted((n.idempotency_key, n.payload.get("due_at") or n.payload.get("finished_at")) for n in effects
                  if hasattr(n, "idempotency_key"))


async def lived_through(events: list[dict]) -> list[tuple[str, str]]:
    """The reference: every event arrives when it happened (trio's autojump clock plays the wall)."""
    async with Simulation([fitness]) as sim:
        await sim.replay([*events, a_day_after(events)], realtime=True)
        return notifications(sim.effects)


async def test_a_full_speed_replay_plus_one_event_a_day_later_equals_living_through_it(autojump_clock):
    events = scenario()
    expected = await lived_through(events)
    assert len(expected) > 150 and {k.split(":")[1] for k, _ in expected} == {"nudge", "congratulate"}
    async with Simulation([fitness]) as sim:
        await sim.replay(events)  # no wall time passes at all
        trailing = notifications(sim.effects)
        sim.apply(a_day_after(events))  # the watermark passes every trailing nudge
        assert notifications(sim.effects) == expected
    assert len(trailing) < len(expected)  # some nudges waited for the watermark


async def test_live_then_restarts_then_journal_replay_fire_exactly_the_same_notifications(tmp_path):
    """The same events posted at full speed into a journaled Herald, with a clean stop and a crash in
    between (each restart replays the journal): the notifications are exactly those of living through
    it, each made once, with the same idempotency keys."""
    from engine import Config
    from engine.host import Herald, PluginHost

    from .test_durability import crash_image

    events = scenario()
    expected = await _reference_in_its_own_clock(events)
    made: list = []

    def build(data_dir):
        config = Config(data_dir=str(data_dir), durability="batch")
        return Herald(config, PluginHost.from_objects(config, [fitness]), emit=made.append)

    thirds = [events[:500], events[500:1000], [*events[1000:], a_day_after(events)]]
    first = build(tmp_path / "a")
    async with first.running():
        await first.wait_ready()
        await first.accept([first.engine.parse(e) for e in thirds[0]])
    second = build(tmp_path / "a")  # a clean stop (final snapshot), then a restart
    async with second.running():
        await second.wait_ready()
        await second.accept([second.engine.parse(e) for e in thirds[1]])
        crash_image(tmp_path / "a", tmp_path / "b")  # and a crash: the journal behind the snapshot replays
    third = build(tmp_path / "b")
    async with third.running():
        await third.wait_ready()
        await third.accept([third.engine.parse(e) for e in thirds[2]])
    keys = [k for k, _ in notifications(made)]
    assert len(keys) == len(set(keys))  # nothing made twice across the restarts
    assert notifications(made) == expected


async def _reference_in_its_own_clock(events: list[dict]) -> list[tuple[str, str]]:
    # trio cannot swap clocks inside a run: live through the events in a fresh run with an autojump clock.
    return await trio.to_thread.run_sync(
        lambda: trio.run(lived_through, events, clock=trio.testing.MockClock(autojump_threshold=0)))

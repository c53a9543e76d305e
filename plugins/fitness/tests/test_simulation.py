"""Hours of synthetic traffic against an independent reference model of the rules."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from engine.testing import Simulation
from plugins.fitness import hooks as fitness

UTC = timezone.utc
T0 = datetime(2021, 3, 1, 6, 0, tzinfo=UTC)
NUDGE = timedelta(minutes=10)
LONG = timedelta(minutes=30)


def synthetic_day(users: int, events: int, seed: int) -> list[dict]:
    """Random but plausible sessions, interleaved across users, in timestamp order."""
    rng = random.Random(seed)
    clock = {f"user{i}": T0 + timedelta(seconds=rng.randrange(3600)) for i in range(users)}
    out = []
    for _ in range(events):
        user = rng.choice(list(clock))
        clock[user] += timedelta(seconds=rng.choice([1, 30, 300, 599, 600, 601, 900, 1800, 1801, 2400, 5400]))
        kind = rng.choices(
            ["app_launch", "training_program_started", "training_program_finished",
             "training_program_cancelled", "screen_view"],
            weights=[4, 3, 3, 1, 1],
        )[0]
        event = {"user_id": user, "type": kind, "ts": clock[user]}
        if kind.startswith("training_program"):
            event["training_program_id"] = str(rng.randrange(3))
        out.append(event)
    out.sort(key=lambda e: e["ts"])  # the seed: events arrive in timestamp order
    for e in out:
        e["time_stamp"] = e.pop("ts").strftime("%Y-%m-%d %H:%M:%S")
    return out


def expected_notifications(events: list[dict]) -> list[tuple[datetime, str, str]]:
    """The rules written the naive way: per user, scan forward."""
    parse = lambda e: datetime.strptime(e["time_stamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)  # noqa: E731
    by_user: dict[str, list[dict]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    result = []
    for user, evs in by_user.items():
        running: dict[str, datetime] = {}
        for i, e in enumerate(evs):
            ts = parse(e)
            if e["type"] == "app_launch":
                nxt = next((parse(x) for x in evs[i + 1:] if x["type"] in ("app_launch", "training_program_started")), None)
                if nxt is None or nxt > ts + NUDGE:
                    result.append((ts + NUDGE, "nudge", user))
            elif e["type"] == "training_program_started":
                running[e["training_program_id"]] = ts
            elif e["type"] == "training_program_cancelled":
                running.pop(e["training_program_id"], None)
            elif e["type"] == "training_program_finished":
                started = running.pop(e["training_program_id"], None)
                if started is not None and ts - started > LONG:
                    result.append((ts, "congratulate", user))
    return sorted(result)


@pytest.mark.parametrize("realtime", [False, True])
async def test_hours_of_traffic_match_the_reference_model(autojump_clock, realtime):
    events = synthetic_day(users=40, events=3000, seed=7)
    async with Simulation([fitness]) as sim:
        await sim.replay(events, realtime=realtime)
        await sim.advance(minutes=11)  # let the last launches' nudges fall due
        got = sorted((when, n.payload["type"], n.payload["user_id"]) for when, n in sim.log)
    expected = expected_notifications(events)
    assert len(expected) > 300  # the scenario really exercises both rules
    assert {kind for _, kind, _ in expected} == {"nudge", "congratulate"}
    assert got == expected
    hours = (sim.now() - T0).total_seconds() / 3600
    assert hours > 10

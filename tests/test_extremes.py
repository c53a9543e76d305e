"""Every accepted value renders: events at the ends of what the envelope accepts (year 1, the
future limit ``HERALD_MAX_SKEW`` sets, up to ``datetime.max``) and timers set beyond them keep
every read route answering (the watermark of a year-1 event is an hour before year 1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings, strategies as st

from engine import EventType, SetTimer, hookimpl, iso_utc, utc_datetime
from engine._clock import DATETIME_MAX, DATETIME_MIN
from tests.conftest import app_client

YEAR_1 = "0001-01-01T00:00:00Z"
YEAR_1_PLUS = "0001-01-01T00:00:01Z"
LAST = "9999-12-31T23:59:59.999999Z"
#: A skew that lets the envelope accept ``datetime.max`` (the future limit is now + HERALD_MAX_SKEW).
WIDE_SKEW = 3e11
#: Every route that reads time, for the actor ``key``.
ROUTES = ("/healthz", "/metrics", "/ui", "/ui/overview.json", "/ui/actors", "/ui/actors/{key}",
          "/ui/actor.json?key={key}", "/ui/events", "/v1/actors/{key}")


def _near_limit(skew: float) -> str:
    """The newest timestamp the envelope accepts with ``HERALD_MAX_SKEW=skew`` (a second of margin)."""
    return (datetime.now(UTC) + timedelta(seconds=skew - 1)).isoformat()


async def _post(client, stamps, type_="probe", **data):
    for i, stamp in enumerate(stamps):
        response = await client.post("/v1/event", json={"type": type_, "key": f"k{i % 2}", "timestamp": stamp,
                                                        "data": data})
        assert response.status_code == 202, (stamp, response.text)


async def _all_routes_answer(client, keys=("k0", "k1")):
    for key in keys:
        for route in ROUTES:
            response = await client.get(route.format(key=key))
            assert response.status_code < 500, (route, key, response.status_code, response.text[:200])


@attrs.frozen
class Far:
    fired: int = 0


class FarTimers:
    """Test plugin: ``far`` sets a timer ``seconds`` after the event (a number, or "max" for
    ``datetime.max``); firing renders the due instant both ways a plugin may."""

    name = "far"

    @hookimpl
    def herald_state_type(self):
        return Far

    @hookimpl
    def herald_event_types(self):
        def far(state, event):
            seconds = event.data.get("seconds", 60)
            at = DATETIME_MAX if seconds == "max" else event.at + float(seconds)
            return state, (SetTimer(event.data.get("name", "t"), at),)

        return [EventType("far", far)]

    @hookimpl
    def herald_timer_handler(self):
        def fired(state, timer):
            timer.due.isoformat(), iso_utc(timer.at)
            return attrs.evolve(state, fired=state.fired + 1), ()

        return fired


async def test_year_1_then_the_future_limit_keep_every_route_answering():
    async with app_client() as (_, client):
        for stamps in ([YEAR_1], [YEAR_1_PLUS, YEAR_1], [_near_limit(300.0)], [YEAR_1]):
            await _post(client, stamps)
            await _all_routes_answer(client)
            assert (await client.get("/healthz")).json()["status"] == "ready"


async def test_datetime_max_then_year_1_keep_every_route_answering():
    """With a skew wide enough, the envelope accepts ``datetime.max``: the clocks run past it."""
    async with app_client(max_skew=WIDE_SKEW) as (_, client):
        for stamps in ([LAST], [YEAR_1, LAST, YEAR_1_PLUS]):
            await _post(client, stamps)
            await _all_routes_answer(client)
        health = (await client.get("/healthz")).json()
        assert health["status"] == "ready" and health["clock"] == DATETIME_MAX.isoformat()


async def test_a_year_1_event_still_renders_after_a_restart(tmp_path):
    settings_ = dict(data_dir=str(tmp_path), durability="batch")
    async with app_client(**settings_) as (_, client):
        await _post(client, [YEAR_1_PLUS, YEAR_1])
        await _all_routes_answer(client)
    async with app_client(**settings_) as (_, client):
        await _all_routes_answer(client)
        view = (await client.get("/v1/actors/k0")).json()
        assert view["clock"].startswith("0001-01-01")
        assert (await client.get("/healthz")).json()["watermark"] == DATETIME_MIN.isoformat()


@pytest.mark.parametrize("seconds", [1e300, "inf", "max"])
async def test_a_timer_set_beyond_datetime_max_renders_as_its_last_instant(seconds):
    async with app_client([FarTimers()], max_skew=WIDE_SKEW) as (herald, client):
        await _post(client, ["9999-12-31T23:00:00Z", _near_limit(300.0)], type_="far", seconds=seconds)
        await _all_routes_answer(client)
        view = (await client.get("/v1/actors/k0")).json()
        assert [t["due"] for t in view["timers"]] == [DATETIME_MAX.isoformat()]
        assert view["states"]["far"]["fired"] == 0


async def test_a_timer_near_datetime_max_fires_when_a_later_event_passes_it():
    async with app_client([FarTimers()], max_skew=WIDE_SKEW) as (herald, client):
        await _post(client, ["9999-12-31T23:59:00Z"], type_="far", seconds=30)
        await _post(client, [LAST], type_="far", seconds=1)  # passes the first timer; sets one beyond max
        await _all_routes_answer(client, keys=("k0",))
        view = (await client.get("/v1/actors/k0")).json()
        assert view["states"]["far"]["fired"] >= 1


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=False), st.sampled_from([-62135596800.0, -62135596801.0, 253402300799.0,
                                                               253402300800.0, 0.0])),
       st.integers(0, 10 ** 13))
def test_instants_render_within_datetimes_range(instant, less_micros):
    """Any instant (and any lateness subtracted) renders, clamped at the ends, and ``iso_utc``
    agrees with ``utc_datetime`` wherever the datetime arithmetic itself is in range."""
    moment = utc_datetime(instant)
    assert DATETIME_MIN <= moment <= DATETIME_MAX
    rendered = iso_utc(instant, less_micros)
    assert DATETIME_MIN <= datetime.fromisoformat(rendered) <= DATETIME_MAX
    try:
        exact = datetime.fromtimestamp(instant, UTC) - timedelta(microseconds=less_micros)
    except (ValueError, OverflowError, OSError):
        return
    assert rendered == exact.isoformat()


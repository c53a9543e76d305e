"""The console's parts on their own: the journal's narrow reads, the events tail, the rate sampler, the charts."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
import trio

from engine import InvalidEvent
from engine._event import Event
from engine._journal import Durability, Journal
from web._charts import line_chart, nice_ceiling
from web._rates import Rates
from web._tail import ACCEPTED, DUPLICATE, REJECTED, EventTail

UTC = timezone.utc
AT = datetime(2024, 1, 1, tzinfo=UTC)


def _event(id_: str, key: str, type_: str = "app_launch") -> Event:
    return Event(id_, type_, key, AT, {"user_id": key}, AT)


@pytest.fixture
async def journal(tmp_path):
    journal = Journal(tmp_path, Durability.BATCH)
    await trio.to_thread.run_sync(journal.open)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        yield journal
        nursery.cancel_scope.cancel()
    journal.close()


async def test_events_of_lists_one_actors_newest_events_and_no_one_elses(journal):
    batches = [[_event("e1", "u1")], [_event("e2", "u10"), _event("u1", "other")], [_event("e4", "u1"), _event("e5", "x")]]
    seq = 0
    for batch in batches:  # one group commit each: three record batches
        for event in batch:
            seq += 1
            journal.add_event(seq, event, 0.0)
        await journal.commit()
    found = await journal.query(lambda j: j.events_of("u1", 20))
    assert [(s, e.id, e.key) for s, e in found] == [(4, "e4", "u1"), (1, "e1", "u1")]
    assert [s for s, _ in await journal.query(lambda j: j.events_of("u1", 1))] == [4]
    assert await journal.query(lambda j: j.events_of("nobody", 20)) == []
    assert [e.id for _, e in await journal.query(lambda j: j.events_of('we"ird', 5))] == []


def _notify(url: str, payload: dict) -> bytes:
    return orjson.dumps({"url": url, "payload": payload, "idempotency_key": "k"})


async def _outbox(journal, rows):
    for key, kind, body in rows:
        journal.add_effect(key, kind, body, 1000.0, None)
    await journal.commit()


async def test_effects_naming_finds_effects_with_the_key_as_a_value(journal):
    await _outbox(journal, [
        ("a", "Notify", _notify("http://r.test/hook", {"user_id": "u1", "type": "nudge"})),
        ("b", "Notify", _notify("http://r.test/hook", {"user_id": "u10"})),
        ("c", "Notify", _notify("http://r.test/hook", {"u1": "a member name, not a value"})),
        ("d", "Other", orjson.dumps({"who": ["x", "u1"]})),
    ])
    found = await journal.query(lambda j: j.effects_naming("u1", 20))
    assert [r.key for r in found] == ["d", "a"]  # newest first
    assert [r.key for r in await journal.query(lambda j: j.effects_naming("u1", 1))] == ["d"]


async def test_outbox_page_filters_by_status_and_receiver_newest_first(journal):
    await _outbox(journal, [(f"k{i}", "Notify" if i % 2 else "CrmUpsert",
                             _notify(f"http://{'a' if i < 3 else 'b'}.test/n", {"i": i})) for i in range(1, 6)])
    journal.mark(1, "dead", 3, 0.0, "http://a.test/n answered 400")
    journal.mark(2, "pending", 1, 2000.0, "timed out")
    journal.mark(3, "delivered", 1, 0.0, None)
    await journal.commit()

    def page(*args, **kwargs):
        return journal.query(lambda j: [r.id for r in j.outbox_page(*args, **kwargs)])

    assert await page() == [5, 4, 3, 2, 1]
    assert await page("dead") == [1]
    assert await page("retrying") == [2]
    assert await page("pending") == [5, 4, 2]
    assert await page(None, "a.test") == [2, 1]
    assert await page(None, "Crm") == [4, 2]  # the kind matches too
    assert await page(None, "", before_id=4, limit=2) == [3, 2]
    assert await journal.query(lambda j: j.outbox_counts()) == {"pending": 3, "retrying": 1, "delivered": 1, "dead": 1}
    dead = (await journal.query(lambda j: j.outbox_page("dead")))[0]
    assert dead.error == "http://a.test/n answered 400" and dead.attempts == 3


# -- the tail ----------------------------------------------------------------------------------------------


def test_the_tail_keeps_its_capacity_and_numbers_entries():
    tail = EventTail(capacity=3)
    events = [_event(f"e{i}", f"u{i}") for i in range(5)]
    tail.accepted(events[:4], [False, False, True, False])
    tail.add(events[4], False)
    assert tail.total == 5 and len(tail.entries) == 3
    assert [(n, e[4], e[1]) for n, e in tail.numbered()] == [(5, "e4", ACCEPTED), (4, "e3", ACCEPTED),
                                                             (3, "e2", DUPLICATE)]
    assert [n for n, _ in tail.numbered(after=4)] == [5]


def test_the_tail_records_rejections_with_field_and_reason_and_filters():
    tail = EventTail()
    tail.accepted([_event("e1", "alice"), _event("e2", "bob", "training_program_started")], [False, False])
    tail.rejected({"type": "app_launch", "user_id": "carol" + "x" * 500}, InvalidEvent("timestamp", "missing", "is required"))
    tail.rejected(None, InvalidEvent(None, "invalid_json", "not JSON"))
    (_, rejected), (_, raw) = tail.matching(outcome=REJECTED)[1], tail.matching(outcome=REJECTED)[0]
    assert rejected[1:3] == (REJECTED, "app_launch") and rejected[5:] == ("timestamp", "missing", "is required")
    assert len(rejected[3]) == 201 and rejected[3].startswith("carol")  # a long key is cut, not kept whole
    assert raw[2:5] == (None, None, None)
    assert [e[4] for _, e in tail.matching(type_="training_program_started")] == ["e2"]
    assert [e[3] for _, e in tail.matching(key="li", outcome=ACCEPTED)] == ["alice"]
    assert tail.matching(key="zed") == []
    assert tail.types() == ["app_launch", "training_program_started"]


# -- rates and charts ----------------------------------------------------------------------------------------


def test_rates_are_the_counters_growth_per_second_over_the_window():
    now = [0.0]
    counts = [0.0, 0.0]
    rates = Rates(lambda: counts, interval=10, window=60, clock=lambda: now[0])
    assert rates.recent() is None
    for step in range(10):  # 100 s: 10 events/s, then 0 effects
        rates.sample()
        now[0] += 10
        counts[0] += 100
    rates.sample()
    assert len(rates.samples) == 7  # an hour of samples at most: the window and one
    _now, series = rates.series()
    assert [age for age, _ in series] == [50, 40, 30, 20, 10, 0]
    assert all(r == (10.0, 0.0) for _, r in series)
    counts[1] += 30
    now[0] += 5
    # A reading now joins the samples of the last minute (from t=50 to t=105).
    assert rates.recent(60) == pytest.approx((500 / 55, 30 / 55))


async def test_the_sampler_runs_until_stopped(autojump_clock):
    rates = Rates(lambda: (1.0,), interval=10, window=60, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rates.run)
        await trio.sleep(35)
        rates.stop()
    assert len(rates.samples) == 4


def test_a_chart_draws_the_points_and_says_what_they_show():
    svg = str(line_chart("c", "Events <per> second", "events/s", [(3600, 2.0), (1800, 40.0), (0, 12.5)]))
    assert svg.startswith('<svg id="c"') and 'role="img"' in svg and 'data-points="3"' in svg
    assert "<title id=\"c-title\">Events &lt;per&gt; second</title>" in svg
    assert "Now 12.5 events/s; peak 40.0 events/s over the last 60 minutes." in svg
    line = svg.split('<polyline class="line" points="')[1].split('"')[0].split()
    assert len(line) == 3 and line[0].startswith("56.0,") and line[-1].startswith("628.0,")
    assert 'text-anchor="end">0</text>' in svg  # the axis starts at a plain 0
    assert "No samples yet." in str(line_chart("e", "t", "u", []))
    assert [nice_ceiling(v) for v in (0, 0.3, 1.2, 3, 7, 40, 120, 2600)] == [1, 1, 2, 5, 10, 50, 200, 5000]

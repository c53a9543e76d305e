"""Reading the provider's feed: normalised plans, skipped broken ones, refused bodies."""

from __future__ import annotations

import pytest

from plugins.marketplace.feed import FeedError, PlanValues, Skipped, parse_feed, plan_uuid

from .feeds import RESPONSE_1, RESPONSE_2, RESPONSES, shared_data

DATA = shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="optional: compares the generated feeds with the seed's own "
                                "files in ../shared/data/marketplace, which is not beside the repository")


def feed(*base_events: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><eventList version="1.0"><output>'
            + "".join(base_events) + "</output></eventList>").encode()


def base(inner: str, base_id="1", mode="online", title="T") -> str:
    return f'<base_event base_event_id="{base_id}" sell_mode="{mode}" title="{title}">{inner}</base_event>'


def event(zones: str = '<zone zone_id="1" capacity="1" price="10.00" name="A" numbered="true"/>', plan_id="9",
          start="2021-06-30T21:00:00", end="2021-06-30T22:00:00") -> str:
    return (f'<event event_start_date="{start}" event_end_date="{end}" event_id="{plan_id}" '
            f'sell_from="2020-07-01T00:00:00" sell_to="2021-06-30T20:00:00" sold_out="false">{zones}</event>')


def test_the_providers_responses_normalise():
    plans = list(parse_feed(RESPONSE_1))
    assert [(p.base_id, p.plan_id, p.min_price, p.max_price) for p in plans] == [
        ("291", "291", 15.0, 30.0), ("322", "1642", 55.0, 55.0), ("1591", "1642", 65.0, 75.0)]
    camela = plans[0]
    assert (camela.title, camela.sell_mode, camela.start, camela.end) == (
        "Camela en concierto", "online", "2021-06-30T21:00:00", "2021-06-30T22:00:00")
    second = list(parse_feed(RESPONSE_2))
    skipped = [p for p in second if isinstance(p, Skipped)]
    assert skipped == [Skipped("444", "1642", "event_start_date '2021-09-31T20:00:00' is not a date-time")]
    kept = {p.title: p for p in second if isinstance(p, PlanValues)}
    assert set(kept) == {"Camela en concierto", "Los Morancos"}  # Pantomima Full left the feed
    assert kept["Camela en concierto"] == camela and kept["Los Morancos"].end == "2021-07-31T21:20:00"


@needs_data
@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_the_generated_feeds_are_the_seeds_files(name):
    assert RESPONSES[name] == (DATA / name).read_bytes()


def test_plan_ids_are_not_unique_so_identity_is_base_and_plan():
    assert plan_uuid("322", "1642") != plan_uuid("1591", "1642")
    assert plan_uuid("322", "1642") == plan_uuid("322", "1642")  # stable across runs
    assert PlanValues("322", "1642", "t", "online", "a", "b", 1.0, 1.0).key == "plan:322:1642"


@pytest.mark.parametrize(("body", "reason"), [
    (base(event(start="2021-02-30T10:00:00")), "event_start_date '2021-02-30T10:00:00' is not a date-time"),
    (base(event(end="2021-06-30T20:00:00")), "ends (2021-06-30T20:00:00) before it starts"),
    (base(event(zones='<zone zone_id="1" price="abc"/>')), "price 'abc' is not a number"),
    (base(event(zones='<zone zone_id="1"/>')), "a zone has no price"),
    ('<base_event base_event_id="1" title="T">' + event() + "</base_event>", "sell_mode is missing"),
    (base(event().replace('event_id="9" ', "")), "event_id is missing"),
])
def test_a_broken_plan_is_skipped_and_the_rest_kept(body, reason):
    items = list(parse_feed(feed(body, base(event(plan_id="ok"), base_id="2"))))
    assert isinstance(items[0], Skipped) and reason in items[0].reason
    assert isinstance(items[1], PlanValues) and items[1].plan_id == "ok"


def test_a_plan_without_zones_has_no_prices():
    [plan] = parse_feed(feed(base(event(zones=""))))
    assert plan.min_price is None and plan.max_price is None


@pytest.mark.parametrize("body", [b"", b"not xml at all", b"<eventList><output><base_event", b"<html></html>",
                                  b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd"><eventList/>'])
def test_unusable_bodies_raise(body):
    with pytest.raises(FeedError):
        list(parse_feed(body))


def test_a_billion_laughs_body_is_refused_at_once():
    bomb = ['<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">']
    for n in range(1, 10):
        bomb.append(f'<!ENTITY lol{n} "' + f"&lol{n - 1};" * 10 + '">')
    bomb.append(']><eventList><output><base_event base_event_id="1" sell_mode="online" title="&lol9;">'
                + event() + "</base_event></output></eventList>")
    with pytest.raises(FeedError, match="DTDForbidden"):  # refused before any entity is expanded
        list(parse_feed("".join(bomb).replace("&lol0;", "&lol;").encode()))

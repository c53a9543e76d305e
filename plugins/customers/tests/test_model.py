"""The summary rules and the bulk loader, as pure functions over states."""

from __future__ import annotations

import orjson
import pytest

from engine import Config, InvalidEvent, StateTable
from engine.host import Engine, PluginHost
from plugins.customers import hooks
from plugins.customers.messages import customer_key, fold_lines, parse_message
from plugins.customers.model import Customer, apply_attributes, count_event, merge_attributes


def line(**fields) -> bytes:
    return orjson.dumps(fields)


def attrs_line(user, ts, mid="a", **data) -> bytes:
    return line(id=mid, type="attributes", user_id=user, timestamp=ts, data=data)


def event_line(user, name, mid, ts=100) -> bytes:
    return line(id=mid, type="event", name=name, user_id=user, timestamp=ts, data={"neuralindigo ": "x"})


def engine() -> Engine:
    return Engine(PluginHost.from_objects(Config(), [("customers", hooks)]))


def load(eng: Engine, *lines: bytes, first_line: int = 1):
    return fold_lines(StateTable(eng, "customers"), b"\n".join(lines) + b"\n", first_line)


def state(eng: Engine, key: str) -> Customer:
    return eng.actors[key].states["customers"]


def test_latest_timestamp_wins_per_attribute_whatever_the_order():
    s = apply_attributes(Customer(), {"city": "new", "email": "e@x"}, 200)
    s = apply_attributes(s, {"city": "old", "ip": "1.1.1.1"}, 100)  # older message, arriving later
    assert s.attributes == {"city": "new", "email": "e@x", "ip": "1.1.1.1"}
    assert s.last_updated == 200


def test_same_timestamp_goes_to_the_later_message():
    s = apply_attributes(apply_attributes(Customer(), {"city": "a"}, 100), {"city": "b"}, 100)
    assert s.attributes["city"] == "b"


def test_events_count_once_per_message_id():
    s = Customer()
    for mid in ("1", "2", "1", "3", "2"):
        s = count_event(s, mid, "purchase", 100)
    s = count_event(s, "4", "page", 50)
    assert s.events == {"purchase": 3, "page": 1}


def test_merge_sets_removes_and_outranks_older_messages():
    s = apply_attributes(Customer(), {"city": "a", "ip": "x", "email": "e"}, 100)
    s = merge_attributes(s, {"city": "edited", "ip": None}, 500)
    assert s.attributes == {"city": "edited", "email": "e"}
    # A file message older than the edit neither undoes the change nor brings the removed attribute back.
    s = apply_attributes(s, {"city": "file", "ip": "y"}, 400)
    assert s.attributes == {"city": "edited", "email": "e"}
    s = apply_attributes(s, {"ip": "newer"}, 600)
    assert s.attributes["ip"] == "newer"


def test_bulk_load_matches_the_one_by_one_rules():
    eng = engine()
    lines = [
        attrs_line("7", 300, city="Lake Kilback", **{"aston martinjazmyne": "v1"}),
        attrs_line("7", 100, city="older", email="e@x"),
        event_line("7", "backuplime", "m1"),
        event_line("7", "backuplime", "m1"),
        event_line("7", "backuplime", "m2"),
        event_line("8", "page", "m3"),
    ]
    report = load(eng, *lines)
    assert report.lines == 6 and report.applied == 6 and report.errors == []
    one_by_one = Customer()
    one_by_one = apply_attributes(one_by_one, {"city": "Lake Kilback", "aston martinjazmyne": "v1"}, 300)
    one_by_one = apply_attributes(one_by_one, {"city": "older", "email": "e@x"}, 100)
    for mid in ("m1", "m1", "m2"):
        one_by_one = count_event(one_by_one, mid, "backuplime", 100)
    assert state(eng, "7") == one_by_one
    assert state(eng, "8").events == {"page": 1} and state(eng, "8").attributes == {}


def test_a_second_chunk_and_a_reload_change_nothing_twice():
    eng = engine()
    lines = [attrs_line("1", 100, city="a"), event_line("1", "page", "m1"), event_line("1", "page", "m2")]
    load(eng, *lines)
    before = state(eng, "1")
    load(eng, *lines)  # the same file again: idempotent
    assert state(eng, "1") == before
    load(eng, event_line("1", "page", "m3"), attrs_line("1", 50, city="older"))
    assert state(eng, "1").events == {"page": 3} and state(eng, "1").attributes == {"city": "a"}
    assert before.events == {"page": 2}, "states are values: the earlier one is unchanged"


def test_anonymous_and_malformed_lines_are_counted_and_reported_by_line_number():
    eng = engine()
    report = load(
        eng,
        attrs_line("1", 100, email="a@b"),
        line(id="x", type="event", name="page", timestamp=5, data={}),  # anonymous
        b'{"id": "broken", ',
        b"",
        line(id="y", type="event", name="page", user_id="abc", timestamp=5),
        line(id="z", type="attributes", user_id="2", timestamp=5, data={"n": 3, "ok": True}),
        line(id="w", type="event", user_id="2", timestamp=5),
        line(id="v", type="attributes", user_id="2", timestamp=5, data={"bad": {"nested": 1}}),
        event_line("2", "page", "q"),
        first_line=10,
    )
    assert report.skipped["anonymous"] == 1
    errors = {e["line"]: (e["field"], e["code"]) for e in report.errors}
    assert errors == {
        12: (None, "malformed_json"),
        14: ("user_id", "invalid_id"),
        16: ("name", "missing"),
        17: ("data.bad", "invalid_type"),
    }
    assert report.lines == 8 and report.applied == 3
    # Numbers and booleans in attribute lines are kept as their JSON text; the valid lines loaded.
    assert state(eng, "2").attributes == {"n": "3", "ok": "true"}
    assert state(eng, "2").events == {"page": 1}
    assert state(eng, "1").attributes == {"email": "a@b"}


def test_customer_ids_are_canonical_integers():
    assert customer_key("11") == "11" and customer_key(11) == "11" and customer_key("007") == "7"
    for bad in ("", "-1", "1.5", "١٢", True, 2**63, None, "12345678901234567890"):
        with pytest.raises(InvalidEvent):
            customer_key(bad)


def test_single_messages_parse_to_events_on_the_customer_actor():
    event = parse_message(orjson.loads(event_line("11", "page", "m1", ts=1560073640)), None)
    assert (event.key, event.type, event.id, event.data["name"]) == ("11", "event", "m1", "page")
    assert event.timestamp.timestamp() == 1560073640
    with pytest.raises(InvalidEvent) as exc:
        parse_message({"type": "event", "name": "page", "timestamp": 5, "id": "q"}, None)
    assert exc.value.code == "anonymous"

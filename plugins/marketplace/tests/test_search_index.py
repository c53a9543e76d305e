"""SearchIndex's JSON answer is exactly the encoding of its search, for every window size."""

from types import SimpleNamespace
from zoneinfo import ZoneInfo

import orjson
import pytest

from plugins.marketplace.search import SearchIndex


class _Context:
    def __init__(self, plans):
        self.plans = plans

    def keys(self, plugin):
        return list(range(len(self.plans)))

    def states(self, keys, plugin):
        return [(k, self.plans[k]) for k in keys]


def _plan(n: int, online: bool = True):
    day = 1 + n % 28
    return SimpleNamespace(uuid=f"u{n}", title=f"Plan {n}", start=f"2021-06-{day:02d}T10:00:00",
                           end=f"2021-06-{day:02d}T12:00:00", min_price=1.5, max_price=None, ever_online=online)


@pytest.mark.parametrize("window", [(None, None), ("2021-06-03T00:00:00", None), (None, "2021-06-02T23:00:00"),
                                    ("2021-06-05T00:00:00", "2021-06-05T23:00:00"),
                                    ("2021-06-05T00:00:00", "2021-06-05T11:00:00"),
                                    ("2021-07-01T00:00:00", None)])
def test_the_json_answer_is_the_search_encoded(window):
    index = SearchIndex(_Context([_plan(n, online=n % 7 != 3) for n in range(60)]), ZoneInfo("UTC"))
    head, tail = b'{"data":{"events":', b'},"error":null}'
    found = index.search(*window)
    assert orjson.loads(index.search_json(*window, head, tail)) == {"data": {"events": found}, "error": None}
    assert orjson.loads(index.search_json(*window)) == found


def test_answers_are_kept_until_the_plans_change_within_a_bound(monkeypatch):
    from plugins.marketplace import search

    plans = [_plan(n) for n in range(10)]
    index = SearchIndex(_Context(plans), ZoneInfo("UTC"))
    built = []

    def build(tag: bytes):
        def make() -> bytes:
            built.append(tag)
            return tag + b"x" * 10
        return make

    first = index.answer(b"q=1", build(b"a"))
    assert index.answer(b"q=1", build(b"b")) is first and built == [b"a"]  # asked again: kept
    plans.append(_plan(11))
    index.changed()  # the plans changed: built anew
    assert index.answer(b"q=1", build(b"c")) == b"c" + b"x" * 10 and built == [b"a", b"c"]
    monkeypatch.setattr(search, "ENTRY_OVERHEAD", 0)
    monkeypatch.setattr(search, "ANSWERS_BYTES", 25)
    index.answer(b"q=2", build(b"d"))  # both would be 28 bytes (keys and answers): the oldest (q=1) goes
    assert index.answer(b"q=2", build(b"e")) == b"d" + b"x" * 10
    index.answer(b"q=1", build(b"f"))
    assert built == [b"a", b"c", b"d", b"f"]
    index.answer(b"big", lambda: b"y" * 23)  # 26 bytes with its key, larger than the bound: never kept
    assert index.answer(b"big", lambda: b"z") == b"z"


def test_the_bound_counts_keys_and_entries_not_only_answers(monkeypatch):
    """Long query strings for tiny answers (any client can send them) do not grow the store past its bound."""
    from plugins.marketplace import search

    monkeypatch.setattr(search, "ANSWERS_BYTES", 20_000)
    index = SearchIndex(_Context([_plan(n) for n in range(3)]), ZoneInfo("UTC"))
    for n in range(1_000):
        index.answer(b"q=%d&pad=" % n + b"p" * 500, lambda: b"[]")
        kept = index._answers
        assert index._answers_size == sum(search._entry_bytes(k, v) for k, v in kept.items()) <= 20_000
    assert 0 < len(kept) < 1_000 and b"q=999&pad=" + b"p" * 500 in kept  # the newest are kept


def test_a_failing_build_keeps_nothing():
    index = SearchIndex(_Context([_plan(n) for n in range(3)]), ZoneInfo("UTC"))

    def bad() -> bytes:
        raise ValueError("bad query")

    with pytest.raises(ValueError):
        index.answer(b"starts_at=yesterday", bad)
    assert index._answers == {} and index._answers_size == 0
    assert index.answer(b"starts_at=yesterday", lambda: b"ok") == b"ok"


def test_the_search_is_exactly_containment_whatever_the_durations():
    """Against the definition, plan by plan: random plans of an hour to a month (a long one's end
    is later than many later plans' ends), random windows, bounds on and between the instants."""
    import random

    rng = random.Random(7)
    plans = []
    for n in range(300):
        start = rng.randrange(0, 2_000)
        end = start + rng.choice((1, 2, 3, 5, 40, 700))
        plans.append(SimpleNamespace(uuid=f"u{n}", title=f"Plan {n}", start=_instant(start), end=_instant(end),
                                     min_price=None, max_price=None, ever_online=n % 9 != 4))
    index = SearchIndex(_Context(plans), ZoneInfo("UTC"))
    online = sorted((p for p in plans if p.ever_online), key=lambda p: (p.start, p.end, p.uuid))
    for _ in range(500):
        lo, hi = sorted(rng.randrange(-10, 2_800) for _ in range(2))
        window = (rng.choice((_instant(lo), None)), rng.choice((_instant(hi), None)))
        expected = [p.uuid for p in online if (window[0] is None or p.start >= window[0])
                    and (window[1] is None or p.end <= window[1])]
        assert [v["id"] for v in index.search(*window)] == expected, window
        assert [v["id"] for v in orjson.loads(index.search_json(*window))] == expected


def _instant(hours: int) -> str:
    from datetime import datetime, timedelta

    return (datetime(2021, 1, 1) + timedelta(hours=hours)).isoformat()


def test_a_fraction_of_a_second_bounds_the_window_exactly():
    """Plans' times are whole seconds: a plan starting at 10:00:00 does not start at or after
    10:00:00.5, and one ending at 12:00:00 ends at or before 12:00:00.5."""
    index = SearchIndex(_Context([_plan(4)]), ZoneInfo("UTC"))  # 2021-06-05 10:00 to 12:00
    assert index.local("2021-06-05T10:00:00.5Z", "starts_at") == "2021-06-05T10:00:01"
    assert index.local("2021-06-05T12:00:00.5Z", "ends_at") == "2021-06-05T12:00:00"
    assert index.search(index.local("2021-06-05T10:00:00.5Z", "starts_at"), None) == []
    assert len(index.search(index.local("2021-06-05T10:00:00Z", "starts_at"),
                            index.local("2021-06-05T12:00:00.5Z", "ends_at"))) == 1

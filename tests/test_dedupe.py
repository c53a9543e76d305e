"""The dedupe window's bulk restore leaves what adding the pairs one by one leaves."""

from hypothesis import given, settings, strategies as st

from engine._dedupe import IdWindow


def _one_by_one(window: IdWindow, pairs, now):
    # The restore before it was done in bulk: add each pair, pruning as add does.
    for at, event_id in pairs:
        window._ids[event_id] = at
        window._order.append((at, event_id))
        if len(window._order) > window.limit or window._order[0][0] < at - window.retention:
            window._prune(at)
    window._prune(now)


_pairs = st.lists(st.tuples(st.integers(0, 400).map(float), st.sampled_from("abcdefghij")), max_size=60).map(
    # a repeated id is repeated at another instant (the journal never holds an id twice in one receipt)
    lambda pairs: list({(at, i): None for at, i in pairs}))


@settings(max_examples=500, deadline=None)
@given(_pairs, st.integers(1, 20), st.sampled_from([10.0, 100.0, 1000.0]), st.integers(0, 500).map(float))
def test_bulk_restore_equals_adding_one_by_one(pairs, limit, retention, later):
    bulk, single = IdWindow(retention, limit), IdWindow(retention, limit)
    now = max([at for at, _ in pairs], default=0.0) + later
    bulk.restore(pairs, now)
    _one_by_one(single, pairs, now)
    assert bulk._ids == single._ids
    assert [tuple(p) for p in bulk.items()] == [tuple(p) for p in single.items()]

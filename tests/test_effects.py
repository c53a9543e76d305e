"""Effects as values: the timer effects are light slotted classes with the documented constructors
and attributes, frozen, compared and hashed by class and fields; ``Notify`` is addressed without evolve."""

import pickle

import attrs
import pytest

from engine import CancelTimer, Notify, SetTimer
from engine._effects import addressed


def test_set_timer_keeps_its_constructor_attributes_and_value_semantics():
    timer = SetTimer("nudge", 1_614_470_400.0, {"n": 1})
    assert (timer.name, timer.at, timer.data) == ("nudge", 1_614_470_400.0, {"n": 1})
    assert SetTimer("nudge", 5.0).data is None and SetTimer(name="a", at=1, data=2).data == 2
    assert SetTimer("a", 1.0) == SetTimer("a", 1.0) and hash(SetTimer("a", 1.0)) == hash(SetTimer("a", 1.0))
    assert SetTimer("a", 1.0) != SetTimer("a", 2.0) and SetTimer("a", 1.0) != ("a", 1.0, None)
    assert CancelTimer("a") == CancelTimer("a") and CancelTimer("a") != SetTimer("a", 1.0)
    assert repr(SetTimer("a", 1.0)) == "SetTimer(name='a', at=1.0, data=None)"
    assert repr(CancelTimer("a")) == "CancelTimer(name='a')"
    assert pickle.loads(pickle.dumps(timer)) == timer
    match SetTimer("a", 2.0):
        case SetTimer(name, at):
            assert (name, at) == ("a", 2.0)
        case _:
            pytest.fail("SetTimer does not match positionally")


@pytest.mark.parametrize("effect", [SetTimer("a", 1.0), CancelTimer("a")])
def test_timer_effects_are_frozen(effect):
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        effect.name = "b"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del effect.name
    with pytest.raises(AttributeError):
        effect.other = 1  # slotted: no room for another attribute
    assert effect.name == "a"


def test_notify_without_url_is_addressed_to_the_sink_and_left_unchanged():
    bare = Notify(payload={"a": 1}, idempotency_key="k")
    sent = addressed(bare, "http://127.0.0.1:9/notify")
    assert sent == Notify("http://127.0.0.1:9/notify", {"a": 1}, "k") and bare.url is None
    aimed = Notify("http://127.0.0.1:8/x", {"a": 1}, "k")
    assert addressed(aimed, "http://127.0.0.1:9/notify") is aimed
    with pytest.raises(TypeError):
        Notify("http://127.0.0.1:8/x", {"a": 1})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        bare.url = "http://127.0.0.1:9/notify"

"""engine.SinkThread: a sink's work on a thread of its own (real threads: the real clock, never autojump)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import trio

from engine import SinkThread

NAME = "test-sink-thread"


class Sink:
    """What a sink on a thread records: the items taken, on which thread, and whether a flush was let go."""

    def __init__(self, fail_main: bool = False) -> None:
        self.thread = SinkThread(self.take, name=NAME)
        self.taken: list = []
        self.threads: set[str] = set()
        self.gate = threading.Event()  # flushes wait for it (set: they return at once)
        self.gate.set()
        self.flushed_after: list[int] = []  # how many items were taken when each flush's wait began
        self.fail_main = fail_main
        self.starts = 0

    def take(self, items: list) -> None:
        self.threads.add(threading.current_thread().name)
        if "boom" in items:
            raise ValueError("a sink's bug")
        self.taken.extend(items)

    async def main(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        task_status.started()
        if self.fail_main:
            await trio.sleep(0.01)
            raise RuntimeError("the sink's loop crashed")
        await trio.sleep_forever()

    async def wait(self) -> None:
        self.flushed_after.append(len(self.taken))
        await trio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)


def _alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == NAME]


def _flushing(sink: "Sink") -> tuple[trio.Event, Any]:
    """A flush of ``sink`` to start in a nursery, and the event it sets once acknowledged."""
    acknowledged = trio.Event()

    async def flush() -> None:
        await sink.thread.flush(sink.wait)
        acknowledged.set()

    return acknowledged, flush


async def _wait_for(condition, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


async def test_items_are_taken_in_order_on_the_thread_and_the_thread_is_joined_on_stop():
    sink = Sink()
    sink.thread.put(0)  # before the thread runs: kept, taken first once it does
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        for i in range(1, 20_000):
            sink.thread.put(i)
            if i % 1000 == 0:
                await trio.sleep(0)  # the engine's loop goes on between puts (hand-offs in several batches)
        await sink.thread.flush(sink.wait)
        assert sink.taken == list(range(20_000))
        assert sink.threads == {NAME}  # never on the engine's thread
        assert _alive() == [NAME] and sink.thread.thread is not None
        nursery.cancel_scope.cancel()
    assert sink.thread.thread is None and _alive() == []  # joined before run() returned
    await sink.thread.stopped()


async def test_a_flush_is_acknowledged_only_after_its_wait_returned_on_the_thread():
    sink = Sink()
    sink.gate.clear()
    acknowledged, flush = _flushing(sink)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        for i in range(100):
            sink.thread.put(i)
        nursery.start_soon(flush)
        await _wait_for(lambda: sink.flushed_after)
        assert sink.flushed_after == [100]  # its wait began after every item put before the flush was taken
        await trio.sleep(0.05)
        assert not acknowledged.is_set()  # still waiting there: not acknowledged here
        sink.gate.set()
        with trio.fail_after(10):
            await acknowledged.wait()
        nursery.cancel_scope.cancel()
    assert _alive() == []


async def test_a_flush_put_before_the_thread_runs_is_acknowledged_once_it_does():
    sink = Sink()
    acknowledged, flush = _flushing(sink)

    async with trio.open_nursery() as nursery:
        sink.thread.put("a")
        nursery.start_soon(flush)
        await trio.sleep(0.05)
        assert not acknowledged.is_set()
        nursery.start_soon(sink.thread.run, sink.main)
        with trio.fail_after(10):
            await acknowledged.wait()
        assert sink.taken == ["a"]
        nursery.cancel_scope.cancel()


async def test_a_crash_of_the_sinks_loop_is_raised_to_the_caller_and_a_restart_takes_what_waited():
    sink = Sink(fail_main=True)
    with pytest.raises(RuntimeError, match="the sink's loop crashed"):
        with trio.fail_after(10):
            await sink.thread.run(sink.main)
    assert sink.thread.thread is None and _alive() == []
    sink.thread.put("kept")  # no thread now: it waits
    sink.fail_main = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        await sink.thread.flush(sink.wait)
        nursery.cancel_scope.cancel()
    assert "kept" in sink.taken and sink.starts == 2 and _alive() == []


async def test_a_flush_cut_short_by_a_stop_is_acknowledged_after_the_next_start():
    sink = Sink()
    sink.gate.clear()
    acknowledged, flush = _flushing(sink)

    async with trio.open_nursery() as outer:
        outer.start_soon(flush)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.thread.run, sink.main)
            await _wait_for(lambda: sink.flushed_after)
            nursery.cancel_scope.cancel()  # the thread stops while the flush waits there
        sink.gate.set()
        assert not acknowledged.is_set() and _alive() == []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.thread.run, sink.main)
            with trio.fail_after(10):
                await acknowledged.wait()  # the flush waited again on the new thread, and returned
            nursery.cancel_scope.cancel()
    assert len(sink.flushed_after) == 2


async def test_an_error_taking_items_is_logged_and_the_thread_goes_on(caplog):
    sink = Sink()
    caplog.set_level(logging.ERROR, "herald.sinks")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        sink.thread.put("boom")
        await sink.thread.flush(sink.wait)
        sink.thread.put("after")
        await sink.thread.flush(sink.wait)
        nursery.cancel_scope.cancel()
    assert sink.taken == ["after"]
    assert any("taking 1 item(s) failed" in r.getMessage() for r in caplog.records)


async def test_a_flush_raises_what_its_wait_raised():
    sink = Sink()

    async def broken() -> None:
        raise OSError("the target is away")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        with pytest.raises(OSError, match="the target is away"):
            await sink.thread.flush(broken)
        await sink.thread.flush(sink.wait)  # the thread is still there
        nursery.cancel_scope.cancel()


async def test_running_it_twice_at_once_is_refused():
    sink = Sink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.thread.run, sink.main)
        await _wait_for(lambda: sink.starts)
        with pytest.raises(RuntimeError, match="runs already"):
            await sink.thread.run(sink.main)
        nursery.cancel_scope.cancel()

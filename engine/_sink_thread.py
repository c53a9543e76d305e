"""An effect sink's slow work on a thread of its own, with its own trio loop, fed from the engine's loop.

Herald's event loop consumes, applies, journals and hands effects to the sinks (``herald_effect_sinks``);
a sink that does much per effect (HTTP calls, encryption, a producer) shares that one loop with all of it.
:class:`SinkThread` gives such a sink a trio loop on a thread of its own:

- ``put(item)`` hands an item over from the engine's loop (any thread; never blocks): the thread's
  ``take(items)`` receives them in the order they were put, in batches, on its own loop;
- ``await run(main)`` (from the engine's loop, typically a source of the plugin) starts the thread and runs
  ``main`` there until this call is cancelled, then stops that loop and joins the thread before it returns;
  an exception of ``main`` is raised here (Herald then restarts the source, hence a new thread);
- ``await flush(wait)`` (from the engine's loop) returns once everything put before it was taken *and*
  ``wait()`` returned on the thread (e.g. "every effect taken is delivered"): the acknowledgement comes
  back to the engine's loop, so a snapshot or a checkpoint that awaits it covers only delivered effects.

Items put while no thread runs (before the first start, between a crash and the restart) wait and are
taken, in order, when it runs again; so does a flush (the caller bounds how long it waits).
Whether a thread pays depends on the GIL: it helps when the sink's work waits on I/O or spends time in C
code that releases it, and lets the engine's loop stay responsive while the sink is busy.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Awaitable, Callable

import trio

__all__ = ["SinkThread"]

log = logging.getLogger("herald.sinks")


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested groups of one (what the thread's nurseries wrap main's error in)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Flush:
    __slots__ = ("wait", "token", "done", "error")

    def __init__(self, wait: Callable[[], Awaitable[None]], token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
        self.wait, self.token, self.done = wait, token, done
        self.error: BaseException | None = None


class SinkThread:
    """A trio loop on a thread of its own for a sink; ``take(items)`` runs there with what :meth:`put` handed over.

    A sink that delivers on such a thread::

        import trio
        from engine import SinkThread

        class Printer:
            def __init__(self):
                self.thread = SinkThread(self._take, name="printer")
                self.seen, self._waiting = [], 0

            def put(self, effect):                 # the engine's loop
                self.thread.put(effect)

            async def flush(self):                 # the engine's loop: acknowledged once done there
                await self.thread.flush(self._flushed)

            async def run(self):                   # a source of the plugin: the thread's life
                await self.thread.run(self._main)

            def _take(self, effects):              # the thread's loop, in order
                self.seen.extend(effects)

            async def _main(self, task_status=trio.TASK_STATUS_IGNORED):
                task_status.started()              # ready: take() may be called from now on
                await trio.sleep_forever()

            async def _flushed(self):
                pass                               # e.g. wait until every effect taken is delivered

        printer = Printer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(printer.run)
            printer.put("hello")
            printer.put("world")
            await printer.flush()
            nursery.cancel_scope.cancel()
        assert printer.seen == ["hello", "world"] and printer.thread.thread is None
    """

    def __init__(self, take: Callable[[list[Any]], None], *, name: str = "herald-sink") -> None:
        self.name = name
        self._take = take
        self._items: deque[Any] = deque()
        #: The thread's loop while it takes items (None: items wait).
        self._token: trio.lowlevel.TrioToken | None = None
        self._scheduled = False
        self._nursery: trio.Nursery | None = None
        self._flushing: set[_Flush] = set()  # flushes started on the thread, not acknowledged yet
        self._stopping = False
        self._scope: trio.CancelScope | None = None
        #: The running thread (None when none runs).
        self.thread: threading.Thread | None = None
        self._stopped = trio.Event()
        self._stopped.set()

    # -- from the engine's loop (or any thread) -------------------------------------------------------

    def put(self, item: Any) -> None:
        """Hand ``item`` over to the thread (never blocks); items are taken in the order they were put."""
        self._items.append(item)
        if not self._scheduled:
            self._wake()

    def _wake(self) -> None:
        token = self._token
        if token is None:
            return  # no loop takes items now: they wait for the next start
        self._scheduled = True
        try:
            token.run_sync_soon(self._drain)
        except trio.RunFinishedError:
            self._scheduled = False

    async def flush(self, wait: Callable[[], Awaitable[None]]) -> None:
        """Return once everything put before this call was taken and ``wait()`` returned on the thread.
        Cancelling this call leaves ``wait`` to finish there; an exception of ``wait`` is raised here."""
        flush = _Flush(wait, trio.lowlevel.current_trio_token(), trio.Event())
        self.put(flush)
        await flush.done.wait()
        if flush.error is not None:
            raise flush.error

    async def run(self, main: Callable[..., Awaitable[None]]) -> None:
        """Run ``main`` on a new thread's trio loop (started with ``nursery.start``: items are taken once it
        called ``task_status.started()``) until this call is cancelled or ``main`` ends; the thread is
        joined before this returns. An exception of ``main`` is raised here."""
        if self.thread is not None:
            raise RuntimeError(f"{self.name}: the thread runs already")
        engine = trio.lowlevel.current_trio_token()
        ended = trio.Event()
        failure: list[BaseException] = []
        self._stopping = False
        self._stopped = trio.Event()

        def body() -> None:
            try:
                trio.run(self._inside, main)
            except BaseException as exc:  # main's error, for the engine's loop
                failure.append(_single(exc))
            finally:
                try:
                    engine.run_sync_soon(ended.set)
                except trio.RunFinishedError:
                    pass

        self.thread = threading.Thread(target=body, name=self.name, daemon=True)
        try:
            self.thread.start()
            try:
                await ended.wait()
            finally:
                with trio.CancelScope(shield=True):
                    self._stop()
                    await ended.wait()
                    await trio.to_thread.run_sync(self.thread.join)
        finally:
            self.thread = None
            self._stopped.set()
        if failure:
            raise failure[0]

    async def stopped(self) -> None:
        """Wait until no thread runs (e.g. before closing what the thread uses)."""
        await self._stopped.wait()

    def _stop(self) -> None:
        self._stopping = True
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._cancel)
            except trio.RunFinishedError:
                pass

    # -- on the thread's loop -----------------------------------------------------------------------------

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _inside(self, main: Callable[..., Awaitable[None]]) -> None:
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(self._main, main, nursery)
                    self._scheduled = False
                    self._token = trio.lowlevel.current_trio_token()
                    if self._stopping:
                        nursery.cancel_scope.cancel()
                    self._drain()
        finally:
            self._token = None
            self._nursery = None
            # Flushes cut short wait for the next start (what they wait for is still the sink's to do).
            self._items.extendleft(self._flushing)
            self._flushing.clear()

    @staticmethod
    async def _main(main: Callable[..., Awaitable[None]], nursery: trio.Nursery,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await main(task_status=task_status)
        finally:  # main ended (returned or raised): so does the loop, whatever flushes still wait
            nursery.cancel_scope.cancel()

    def _drain(self) -> None:
        """Give ``take`` what was put (flush requests start their wait after the items before them)."""
        self._scheduled = False  # first: an item put from now on schedules another drain
        items = self._items
        batch = []
        for _ in range(len(items)):
            item = items.popleft()
            if item.__class__ is _Flush:
                self._give(batch)
                batch = []
                self._flushing.add(item)
                assert self._nursery is not None
                self._nursery.start_soon(self._flush, item)
            else:
                batch.append(item)
        self._give(batch)

    def _give(self, batch: list[Any]) -> None:
        if not batch:
            return
        try:
            self._take(batch)
        except Exception:  # a sink's bug: logged; never takes Herald (or the thread) down
            log.exception("%s: taking %d item(s) failed; they are dropped", self.name, len(batch))

    async def _flush(self, flush: _Flush) -> None:
        try:
            await flush.wait()
        except Exception as exc:
            flush.error = exc
        self._flushing.discard(flush)
        try:
            flush.token.run_sync_soon(flush.done.set)
        except trio.RunFinishedError:
            pass

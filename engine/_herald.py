"""A running Herald: engine, journal, outbox, plugins and their background work.

Start-up order: open (and check) the journal, restore the latest snapshot,
replay the journal behind it, restore the engine clock to what it would read
now, fire the timers that fell due meanwhile, then accept events. An accepted
event is applied, journaled with the effects it caused, and acknowledged once
the group commit that holds it is done.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Sequence

import httpx
import orjson
import trio

from . import _snapshot as snapshots
from ._config import Config, ConfigError
from ._engine import LOAD_TYPE, Engine, LoadReport
from ._dedupe import IdWindow
from ._effects import Effect, Notify
from ._event import Event, InvalidEvent, new_event_id
from ._journal import Durability, Journal, JournalError, snapshot_writer
from ._metrics import Metrics
from ._outbox import NotifyExecutor, Outbox, RetrySchedule, Signer
from ._clients import KafkaClients
from ._cluster import Cluster
from ._context import Context
from ._plugins import Origin, PluginError, PluginHost
from ._refusal import Degraded, Refusal
from ._states import UnencodableState
from ._replay import replay

__all__ = ["Herald", "tune_gc"]

log = logging.getLogger("herald")

async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class Herald:
    """Everything one server holds. Build it, then ``async with herald.running():``.

    ``emit`` replaces the outbox (simulations record effects instead of
    delivering them). In a cluster, ``kafka`` makes the Kafka clients and
    ``give_up`` ends the process when they cannot be made to work again
    (by default: one line on stderr, exit status 70). Plugins never see this object: their hooks get its
    :attr:`context`.
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginHost | None = None,
        *,
        emit: Callable[[Effect], None] | None = None,
        utcnow: Callable[[], float] = time.time,
        kafka: KafkaClients | None = None,
        give_up: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.utcnow = utcnow
        self.plugins = plugins or PluginHost.from_config(config)
        self.metrics = Metrics()
        self.http = httpx.AsyncClient(timeout=config.effect_timeout, follow_redirects=False)
        # In a cluster the events topic is the journal and the changelog keeps the actors: no local journal.
        durability = Durability.MEMORY if config.cluster else Durability(config.durability)
        self.journal = Journal(config.data_dir, durability, sync_interval=config.sync_interval,
                               on_new_effects=lambda rows: self.outbox.committed(rows))
        signer = Signer(config.webhook_secret) if config.webhook_secret else None
        self.outbox = Outbox(
            {Notify: NotifyExecutor(self.http, signer, credentials=_own_sink_credentials(config)),
             **self.plugins.executors},
            journal=self.journal,
            metrics=self.metrics,
            schedule=RetrySchedule(tuple(config.outbox_delays), config.outbox_max_age),
            workers=config.effect_workers,
            timeout=config.effect_timeout,
            capacity=config.effect_queue,
            # Only a cluster node follows deliveries (to stop checkpointing them): no call per delivery otherwise.
            on_settled=(lambda effect: self.cluster.settled(effect)) if config.cluster else None,
            claim=(lambda effect: self.cluster.claims(effect)) if config.cluster else None,
            clock=utcnow,
        )
        self._deliver = emit or self.outbox.emit
        self._add_event = self.journal.add_event
        self.engine = Engine(
            self.plugins,
            emit=self._emit,
            record=self._record if self.journal.enabled else None,
            replayed=self._emit_replayed,
            wall=trio.current_time,
            utcnow=utcnow,
            max_skew=config.max_skew,
            lateness=config.allowed_lateness,
            metrics=self.metrics,
            notify_url=config.effective_notify_url,
        )
        self.ids = IdWindow(config.dedupe_retention, config.dedupe_max)
        self.seq = 0  # journal position of the last applied event
        self.snapshot_seq = 0
        self._loaded_lines = 0  # lines bulk-loaded since the last snapshot
        self.status = "starting"
        self._long_lived = False
        self.progress: dict[str, Any] = {"replayed": 0, "to_replay": 0}
        self.ready = False
        self._ready = trio.Event()
        #: True while the journal is replayed into the engine: nothing else may be applied meanwhile.
        self._replaying = False
        self._snapshot_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.metrics.journal_commits.set_function(lambda: self.journal.commits)
        self._parts: dict[str, Any] = {}
        #: What background sources report about themselves (shown in /healthz), by source name.
        self.health: dict[str, dict[str, Any]] = {}
        #: What is wrong while events are still accepted (``/healthz`` says ``degraded``), by code.
        self._degraded: dict[str, Degraded] = {}
        #: What plugins see of this server (their hooks get it as ``context``).
        self.context = Context(self)
        #: Effect class -> in-process sink (see the ``herald_effect_sinks`` hook).
        self.sinks: dict[type, Any] = {}
        #: This node's part in a cluster over Kafka (None: the single embedded process).
        self.cluster: Cluster | None = None
        if config.cluster:
            if config.load:
                raise PluginError("bulk loads at start (HERALD_LOAD) are not supported in a cluster yet")
            self.cluster = Cluster(self, kafka or KafkaClients(), give_up=give_up)
        for name, sinks in self.plugins.each("herald_effect_sinks", context=self.context):
            for effect_type, sink in (sinks or {}).items():
                if effect_type in self.sinks:
                    raise PluginError(f"{name}: a sink for {effect_type.__name__} exists already")
                self.sinks[effect_type] = sink

    def part(self, name: str, make: Callable[[], Any]) -> Any:
        """A plugin's per-server object (a store, a poller, an index), made on first use by ``make()``."""
        found = self._parts.get(name)
        if found is None:
            found = self._parts[name] = make()
        return found

    def refusal(self) -> Refusal | None:
        """Why events are refused now (None: they are accepted). The one truth of readiness: ingestion
        answers 503 with it, ``/healthz`` answers 503 with it, and 200 exactly when it is None."""
        status = self.status
        if status in ("stopping", "failed"):
            return Refusal(status, "Herald is shutting down" if status == "stopping" else "Herald failed to start")
        if self.journal.failed is not None:
            return Refusal("journal_failed", f"not accepted: the journal failed ({self.journal.failed}); "
                                             "Herald retries it in the background")
        if self.cluster is not None:
            found = self.cluster.refusal()
            if found is not None:
                return found
        if self._replaying:
            code = "recovering" if status == "recovering" else "replaying"
            return Refusal(code, "the journal is being replayed (starting or recovering); try again shortly")
        if not self.ready:
            code = status if status in ("starting", "joining", "loading", "recovering") else "starting"
            return Refusal(code, f"Herald is {status}")
        return None

    def degraded(self) -> list[Degraded]:
        """What is wrong while events are still accepted: ``/healthz`` answers 200 with ``degraded``
        and lists them (a refusal, when there is one, comes first)."""
        return list(self._degraded.values())

    def state_unencodable(self, error: UnencodableState) -> None:
        """A plugin's state cannot be encoded (a snapshot, a checkpoint or a view found it): one error
        line naming plugin, field and actor (the first time), and ``/healthz`` degraded until a
        snapshot is written again."""
        known = self._degraded.get("unencodable_state")
        if known is None or (known.plugin, known.field) != (error.plugin, error.field):
            log.error("%s", error, extra={"plugin": error.plugin})
        self._degraded["unencodable_state"] = Degraded(
            "unencodable_state", f"plugin {error.plugin}: a state cannot be encoded (field {error.field}): no "
            f"snapshot or checkpoint is written until it can be; events are still accepted and journaled",
            error.plugin, error.field)

    def state_encodable(self) -> None:
        """Every state could be encoded again (a snapshot, or a checkpoint of every partition that failed,
        was written): ``/healthz`` is no longer degraded for it."""
        self._degraded.pop("unencodable_state", None)

    # -- where actors live -----------------------------------------------------------------

    def engine_for(self, key: str) -> Engine | None:
        """The engine holding ``key``'s actor here (in a cluster: None if another node serves it)."""
        return self.engine if self.cluster is None else self.cluster.engine_for(key)

    def engines(self) -> list[Engine]:
        """Every engine holding actors here (one; in a cluster, one per partition this node owns)."""
        return [self.engine] if self.cluster is None else self.cluster.engines()

    def _emit(self, effect: Effect) -> None:
        sink = self.sinks.get(type(effect)) if self.sinks else None
        if sink is not None:
            sink.put(effect)
        else:
            self._deliver(effect)

    def _emit_replayed(self, effect: Effect) -> None:
        # Replayed events' deliveries are in the outbox already; sinks dedupe what they see again.
        sink = self.sinks.get(type(effect)) if self.sinks else None
        if sink is not None:
            sink.put(effect)

    async def flush_sinks(self, timeout: float = math.inf) -> bool:
        """Make everything put into the sinks durable (before a snapshot, at shutdown);
        False if that took longer than ``timeout`` (e.g. a sink's target is down)."""
        with trio.move_on_after(timeout):
            for sink in {id(s): s for s in self.sinks.values()}.values():
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    await flush()
            return True
        return False

    # -- accepting events ------------------------------------------------------------

    def _record(self, event: Event, arrival: float | None) -> None:
        # (The engine records only when there is a journal.)
        self.seq += 1
        self._add_event(self.seq, event, arrival)

    def _refuse_if_not_writable(self) -> None:
        """Nothing is applied that the journal could not keep: a 503 then means *not applied*."""
        if self.journal.failed is not None:
            raise JournalError(f"the journal failed ({self.journal.failed}); Herald retries it in the background")
        if self._replaying:
            raise JournalError("the journal is being replayed (starting or recovering); try again shortly")

    def _apply(self, events: Sequence[Event]) -> list[bool]:
        """Apply events whose (key, id) is new, in memory; return which were duplicates.

        Raises :class:`JournalError` (nothing applied) while the journal cannot be
        written, and :class:`InvalidEvent` (nothing applied) if an event's data
        cannot be stored.
        """
        self._refuse_if_not_writable()
        if self.journal.enabled:
            # What the journal cannot store is refused before anything is applied. One encoding of
            # all the data, thrown away: the records are encoded together when they are committed
            # (an ``orjson.dumps`` per event, each result kept until then, cost more than the
            # encoding itself: a fresh buffer each, and the heap grown and trimmed again).
            dumps = orjson.dumps
            try:
                dumps([event.data for event in events])
            except orjson.JSONEncodeError:
                for event in events:
                    try:
                        dumps(event.data)
                    except orjson.JSONEncodeError as exc:
                        raise InvalidEvent("data", "unstorable", f"event {event.id!r} cannot be journaled: {exc}") from None
                raise
        remember = self.ids.remember
        apply = self.engine.apply
        now = self.utcnow()
        duplicates = []
        for event in events:
            if not remember(event.key, event.id, now):  # a repeat of (key, id)
                self.metrics.duplicates.inc()
                duplicates.append(True)
                continue
            apply(event)
            duplicates.append(False)
        self._maybe_snapshot()
        return duplicates

    async def accept(self, events: Sequence[Event | dict[str, Any]], *, applied: bool = False) -> list[bool]:
        """Apply events and wait until they are durable (what a 202 means); return which were
        repeats of a (key, id) already accepted. Raw JSON objects are parsed first, as a trusted
        source's (internal types allowed: the public routes parse with their own rule).

        In a cluster, durable means acknowledged by the broker, and the events are applied by
        their partitions' owners afterwards; ``applied`` also waits until this node applied them
        (plugins read their own writes)."""
        parsed = [e if isinstance(e, Event) else self.engine.parse(e, origin=Origin.INTERNAL) for e in events]
        if self.cluster is not None:
            return await self.cluster.accept(parsed, applied=applied)
        duplicates = self._apply(parsed)
        await self.journal.commit()
        return duplicates

    async def load(self, loader: str, body: bytes, *, first_line: int = 1, source: str | None = None,
                   durable: bool = True, snapshot: bool = True) -> LoadReport:
        """Apply a chunk of lines through a plugin's bulk loader; durable on return
        (unless ``durable`` is False: then the caller awaits ``journal.commit()``). With
        ``snapshot=False`` no snapshot is started here (a file's loader starts one after its last chunk).

        The chunk is journaled as one event (its lines verbatim), so a replay
        rebuilds exactly the same states.
        """
        if self.cluster is not None:
            raise InvalidEvent("loader", "unsupported", "bulk loads are not supported in a cluster yet: "
                               "post the lines as events (POST /v1/events)")
        if loader not in self.plugins.loaders:
            known = ", ".join(sorted(self.plugins.loaders)) or "none"
            raise InvalidEvent("loader", "unknown", f"no enabled plugin loads {loader!r} (loaders: {known})")
        if self.journal.failed is not None:  # (loads at start run while replaying is done: no _replaying check)
            raise JournalError(f"the journal failed ({self.journal.failed}); Herald retries it in the background")
        now = self.utcnow()
        stamp = datetime.fromtimestamp(now, timezone.utc)
        data: dict[str, Any] = {"loader": loader, "first_line": first_line, "body": bytes(body)}
        if source:
            data["source"] = source
        event = Event(new_event_id(), LOAD_TYPE, loader, stamp, data, stamp)
        self.ids.remember(event.key, event.id, now)
        report = self.engine.load(event)
        self._loaded_lines += report.lines
        if snapshot:
            self._maybe_snapshot()
        if durable:
            await self.journal.commit()
        else:
            await trio.sleep(0)  # let the journal writer take this chunk while the next one is applied
        return report

    def _maybe_snapshot(self) -> None:
        # A bulk load counts by its lines: a million lines in ten events deserve a snapshot.
        if self.seq - self.snapshot_seq + self._loaded_lines >= self.config.snapshot_every and not self._snapshot_lock.locked():
            if self.nursery is not None and self.journal.enabled:
                self.nursery.start_soon(self._snapshot_in_background)

    # -- lifecycle ---------------------------------------------------------------------

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @asynccontextmanager
    async def running(self, *, long_lived: bool = False) -> AsyncIterator["Herald"]:
        """Open the journal and start the writer and the outbox; recovery and replay
        continue in the background (``/healthz`` shows progress) and ``ready`` is
        set when they are done. ``long_lived`` (a server) tunes the garbage collector
        for a heap of long-lived objects and freezes what recovery loaded."""
        self._long_lived = long_lived
        if long_lived:
            tune_gc()
        await trio.to_thread.run_sync(self.journal.open)
        # The engine's wall reads the real time, then runs on trio's clock: journaled wall readings
        # stay meaningful across restarts (and tests can still move it with autojump_clock).
        self.engine.set_wall(self.utcnow())
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await nursery.start(self.journal.run)
                await nursery.start(self.outbox.run)
                nursery.start_soon(self._start, nursery)
                if self.journal.enabled:
                    nursery.start_soon(self._keep_journal)
                try:
                    yield self
                finally:
                    await self._stop()
                    nursery.cancel_scope.cancel()
        finally:
            self.nursery = None
            await trio.to_thread.run_sync(self.journal.close)

    async def _start(self, nursery: trio.Nursery) -> None:
        try:
            if self.journal.enabled:
                self.status = "replaying"
                await self._recover()
            await nursery.start(self.engine.run_timers)
            if self.cluster is not None:
                self.status = "joining"
                await nursery.start(self.cluster.run)
            for name, result in self.plugins.each("herald_startup", context=self.context):
                await _maybe_await(result)
            for loader, path in self.config.load:
                await self._load_at_start(loader, path)
            sources = [(name, source) for name, found in self.plugins.each("herald_sources", context=self.context)
                       for source in found or ()]
            if self.cluster is not None:
                nursery.start_soon(self._run_singletons, sources)
            else:
                for name, source in sources:
                    nursery.start_soon(self._run_source, name, source)
            if self.journal.enabled:
                nursery.start_soon(self._snapshot_loop)
        except (ConfigError, PluginError):  # a setting that cannot work (e.g. a CA the broker's certificate does
            # not match), a plugin's state that cannot be read back: the command says it in one line
            self.status = "failed"
            raise
        except Exception:
            self.status = "failed"
            log.exception("Herald failed to start")
            raise
        self.status = "ready"
        self.ready = True
        self._ready.set()
        if self._long_lived:
            # What recovery loaded lives as long as the server: keep the collector off it.
            import gc

            gc.collect()
            gc.freeze()
        log.info("ready: %d actors, %d timers, %d effects pending", len(self.engine.actors), len(self.engine.timers), self.outbox.pending)

    async def _keep_journal(self) -> None:
        """When a journal write fails: refuse events (503, not applied), retry the journal with
        backoff, and once it takes writes again rebuild every actor from it (what was applied
        but not made durable is dropped, as its 503 said), then accept events again."""
        while True:
            failure = await self.journal.wait_failed()
            self.ready = False
            self.status = "journal_failed"
            self.progress["journal_failure"] = f"{type(failure).__name__}: {failure}"
            # From here until the rebuild is done nothing is applied, whoever asks (sources too).
            self._replaying = True
            delay = self.config.journal_retry
            while True:
                await trio.sleep(delay)
                try:
                    await trio.to_thread.run_sync(self.journal.reopen)
                except Exception as exc:
                    self.progress["journal_failure"] = f"{type(exc).__name__}: {exc}"
                    log.error("the journal still cannot be written (%s); next try in %g s", exc, delay)
                    delay = min(delay * 2, 60.0)
                    continue
                break
            self.journal.resume()
            log.warning("the journal takes writes again; rebuilding the actors from it")
            self.status = "recovering"
            self.engine.reset()
            self.ids = IdWindow(self.config.dedupe_retention, self.config.dedupe_max)
            self.progress.update(replayed=0, to_replay=0)
            try:
                await self._recover()
            except Exception as exc:  # e.g. the disk is still nearly full: fail again, and retry
                log.exception("rebuilding from the journal failed; retrying")
                self.journal.fail(exc)
                continue
            self.progress.pop("journal_failure", None)
            self.status = "ready"
            self.ready = True
            log.warning("recovered from the journal failure: %d actors", len(self.engine.actors))

    async def _load_at_start(self, loader: str, path: str) -> None:
        from ._bulk import load_file

        self.status = "loading"
        size = os.path.getsize(path)
        self.progress.update({"loading": path, "loaded_bytes": 0, "to_load_bytes": size})

        def advance(n: int) -> None:
            self.progress["loaded_bytes"] += n

        started = time.perf_counter()
        report = await load_file(self, loader, path, progress=advance)
        log.info("loaded %s through %s in %.2f s: %d lines, %d applied, skipped %s%s", path, loader,
                 time.perf_counter() - started, report.lines, report.applied, report.skipped or "none",
                 "".join(f"\n  line {e['line']}: {e['field'] or ''} {e['message']}" for e in report.errors[:20]))

    async def _recover(self) -> None:
        self._replaying = True
        try:
            await self._replay()
        finally:
            self._replaying = False

    async def _replay(self) -> None:
        journal, engine = self.journal, self.engine
        started = time.perf_counter()
        # Pending effects first: those the replay makes anew come after them (larger ids).
        await self.outbox.resume()
        self.progress["to_replay"] = await trio.to_thread.run_sync(journal.count_events, 0)

        def advance(events: int, last_seq: int) -> None:
            self.seq = last_seq
            self.progress["replayed"] += events

        # Replayed events are in the journal already, and so is every effect they (and the
        # timers firing among them) produced: those were committed with them, and batches
        # commit in order. Only timers that fell due after the last journaled event can make
        # effects the journal lacks: the replay fires them as it ends.
        done = await replay(journal, engine, on_chunk=advance)
        self.snapshot_seq = done.snapshot_seq
        self.seq = max(done.last_seq, await trio.to_thread.run_sync(journal.last_seq))
        self.ids.restore(done.ids, self.utcnow())
        await journal.commit()
        log.info(
            "recovered %d actors from snapshot %d and %d journaled events in %.2f s",
            len(engine.actors), self.snapshot_seq, done.events, time.perf_counter() - started,
        )

    async def quiesce(self) -> None:
        """Before the web server stops: finish deliveries in flight (they may go to this very
        server) and close Herald's own kept-alive connections, so nothing waits on them."""
        await self.outbox.drain(self.config.drain_timeout)
        if not self.http.is_closed:
            await self.http.aclose()

    async def _stop(self) -> None:
        self.ready = False
        self.status = "stopping"
        with trio.CancelScope(shield=True):
            if self.cluster is not None:
                try:
                    await self.cluster.stop()  # hand the partitions over (checkpointed) before anything stops
                except Exception:
                    log.exception("leaving the cluster failed; other nodes take over after the session timeout")
            for name, result in self.plugins.each("herald_shutdown", context=self.context):
                try:
                    await _maybe_await(result)
                except Exception:
                    log.exception("shutdown hook of plugin %s failed", name, extra={"plugin": name})
            await self.quiesce()
            try:
                drained = await self.flush_sinks(self.config.drain_timeout)
            except Exception:
                drained = False
                log.exception("flushing the effect sinks failed")
            if not drained:
                log.warning("effect sinks did not drain; no final snapshot, so the next start re-sends their effects")
            if drained and self.journal.enabled and self.journal.failed is None and self.seq > self.snapshot_seq and self._ready.is_set():
                try:
                    await self.snapshot()
                except Exception:
                    log.exception("final snapshot failed")
            await self.journal.commit()

    async def _run_singletons(self, sources: list[tuple[str, Callable[[], Any]]]) -> None:
        """In a cluster, plugins' sources run once: on the node owning partition 0, moving with it."""
        cluster = self.cluster
        assert cluster is not None
        # A source marked ``per_node`` (a local view's writer) runs on every node; the others run once.
        for name, source in sources:
            if getattr(source, "per_node", False):
                self.nursery.start_soon(self._run_source, name, source)
        sources = [(name, source) for name, source in sources if not getattr(source, "per_node", False)]
        while True:
            await cluster.singletons.wait()
            log.info("this node runs the cluster's sources (%d)", len(sources))
            async with trio.open_nursery() as nursery:
                for name, source in sources:
                    nursery.start_soon(self._run_source, name, source)
                while cluster.singletons.is_set():
                    await cluster.singleton_changes()
                nursery.cancel_scope.cancel()
            log.info("the cluster's sources moved to another node")

    async def _run_source(self, plugin: str, source: Callable[[], Any]) -> None:
        """Run a source; if it crashes, log it and start it again (backing off up to a minute)."""
        delay = 1.0
        while True:
            started = trio.current_time()
            try:
                await source()
            except Exception:
                log.exception("source %r of plugin %s crashed; restarting it in %g s", source, plugin, delay,
                              extra={"plugin": plugin})
            else:
                log.warning("source %r of plugin %s returned", source, plugin, extra={"plugin": plugin})
                return
            if trio.current_time() - started > 60:
                delay = 1.0  # it ran well for a while: this is a new failure, not the same one again
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    # -- snapshots ------------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        while True:
            await trio.sleep(self.config.snapshot_interval)
            if self.seq > self.snapshot_seq:
                await self._snapshot_in_background()

    async def _snapshot_in_background(self) -> None:
        # A snapshot that cannot be written is retried at the next interval; it never stops Herald.
        if self.journal.failed is not None or self._replaying:
            return
        try:
            await self.snapshot()
        except JournalError as exc:
            log.error("snapshot failed: %s", exc)

    async def snapshot(self) -> dict[str, Any]:
        """Write a snapshot of every actor and compact the journal behind it."""
        if not self.journal.enabled:
            raise RuntimeError("no journal (durability is memory)")
        async with self._snapshot_lock:
            # Sinks must not lag behind the journal a snapshot compacts: if they cannot catch up,
            # no snapshot now (the journal keeps what they still need; a replay re-sends it).
            if not await self.flush_sinks(self.config.drain_timeout):
                log.warning("snapshot skipped: effect sinks did not drain within %g s", self.config.drain_timeout)
                return {"seq": self.snapshot_seq, "skipped": "effect sinks did not drain"}
            started = time.perf_counter()
            capture = snapshots.capture(self.engine, self.seq, self.ids.items(), self.utcnow())
            try:
                body = await trio.to_thread.run_sync(snapshots.encode, capture)
            except UnencodableState as exc:  # nothing is compacted: the journal keeps every event
                self.state_unencodable(exc)
                return {"seq": self.snapshot_seq, "skipped": str(exc)}
            self.state_encodable()
            now = self.utcnow()
            journal = self.journal
            journal.add_write(snapshot_writer(capture.seq, body, now))
            await journal.commit()
            self.snapshot_seq = capture.seq
            self._loaded_lines = 0
            seconds = time.perf_counter() - started
            # Compaction follows in its own transaction: the snapshot is safe already.
            journal.add_write(
                lambda conn: journal.compact(
                    conn, through_seq=capture.seq, delivered_before=now - self.config.outbox_max_age
                )
            )
            await journal.commit()
            compact_seconds = time.perf_counter() - started - seconds
            self.metrics.snapshots.inc()
            self.metrics.snapshot_seconds.set(seconds)
            log.info("snapshot at seq %d: %d actors, %d bytes, %.2f s", capture.seq, len(capture.actors), len(body), seconds)
            return {"seq": capture.seq, "actors": len(capture.actors), "bytes": len(body),
                    "seconds": round(seconds, 3), "compact_seconds": round(compact_seconds, 3)}


def _own_sink_credentials(config: Config) -> dict[str, dict[str, str]]:
    """With an admin token, Herald's own ``/v1/notify`` asks for it: give it to deliveries there only."""
    if not config.admin_token or config.notify_url is not None:
        return {}
    return {config.effective_notify_url: {"authorization": f"Bearer {config.admin_token}"}}


def tune_gc() -> None:
    """Garbage-collector settings for a server holding many small, long-lived objects.

    Actors, states and timers live long; CPython's default thresholds would
    walk them again and again. Collect the young generation every 50k
    allocations instead of 700, and freeze what exists at start-up.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

"""Replaying a journal into an engine: the latest snapshot, then every event after it.

One function serves recovery at start-up (the journal replays into its own
Herald) and ``herald replay`` (another data dir's journal replays into a fresh
one). Each event is applied at the wall reading it was journaled with, inside
:meth:`engine.host.Engine.replaying`, so that every timer fires exactly where it
fired live; the next chunk of events is read in a worker thread while the
current one is applied.
"""

from __future__ import annotations

from typing import Callable

import gc

import attrs
import trio

from . import _snapshot as snapshots
from ._dedupe import Recent
from ._engine import Engine
from ._journal import Journal

__all__ = ["Replayed", "replay"]

CHUNK = 20_000


@attrs.define
class Replayed:
    """What a replay restored: the snapshot's position, the last event's, and the event ids
    still to be recognised as repeats (the snapshot's, then each replayed event's ``(key, id)``
    at its receipt: events journaled before ids were scoped by key have their key in the journal too)."""

    snapshot_seq: int = 0
    last_seq: int = 0
    events: int = 0
    ids: Recent = attrs.field(factory=Recent)


async def replay(source: Journal, engine: Engine, *, snapshot: bool = True, record: bool = False,
                 on_chunk: Callable[[int, int], None] | None = None) -> Replayed:
    """Restore ``source``'s latest snapshot into ``engine`` (unless ``snapshot`` is False) and apply
    every journaled event after it. ``record`` also records them (a replay into another journal);
    ``on_chunk(events, last_seq)`` is called after each chunk (progress, commits)."""
    result = Replayed()
    snap = await trio.to_thread.run_sync(source.latest_snapshot) if snapshot else None
    doc = None if snap is None else await trio.to_thread.run_sync(snapshots.decode, snap.body)
    send, receive = trio.open_memory_channel[list](1)

    async def read_ahead(position: int) -> None:
        async with send:
            while rows := await trio.to_thread.run_sync(source.read_events, position, CHUNK):
                position = rows[-1][0]
                await send.send(rows)

    ids_at, ids = result.ids.at, result.ids.pairs
    collecting = gc.isenabled()
    # Replaying builds a heap of long-lived objects (actors, states, timers) and no garbage
    # cycles: the collector would only walk them again and again. It runs again after.
    gc.disable()
    try:
        with engine.replaying(record=record):
            if doc is not None:
                result.snapshot_seq, wall = snapshots.restore(engine, doc)
                engine.replayed_up_to(wall)  # the wall goes on from here at least, even with no event after it
                result.ids = Recent.of_snapshot(doc)
                ids_at, ids = result.ids.at, result.ids.pairs
            result.last_seq = result.snapshot_seq
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ahead, result.snapshot_seq)
                async for rows in receive:
                    apply = engine.apply
                    for _seq, event, arrival, _ts, _received in rows:
                        apply(event, arrival)
                    # The dedupe window's entries: each event's (key, id), at its receipt.
                    ids_at.extend([row[4] for row in rows])
                    ids.extend([(row[1].key, row[1].id) for row in rows])
                    result.last_seq = rows[-1][0]
                    result.events += len(rows)
                    if on_chunk is not None:
                        on_chunk(len(rows), result.last_seq)
                    await trio.sleep(0)  # let /healthz answer with the progress
    finally:
        if collecting:
            gc.enable()
    return result

"""Snapshots of the engine: every actor's states, timers and default state (``unknown``).

Capturing is cheap and happens in the trio thread: plugin states are
immutable values, so copying each actor's maps is enough for a consistent
picture. Encoding (cattrs + orjson) then runs in a worker thread while the
engine goes on. A plugin declares its state class with the
``herald_state_type`` hook; that class is all a snapshot needs to read it back.
An actor's default state (what the default handler keeps of events of
unclaimed types: the bundled one's counts by type) sits in its own place,
``unknown``, restored as the enabled default handler's ``state_type`` says.
A snapshot names the plugin that kept them (``default_handler``) only when it is
not the bundled default, so that a default configuration writes what it always
has; default states kept by another default handler are not restored.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import orjson

from ._actor import Actor
from ._dedupe import Recent
from ._engine import Engine
from ._event import converter
from ._formats import SNAPSHOT_FORMAT, upgrade_snapshot
from ._timers import timers_of

__all__ = ["Capture", "capture", "encode", "decode", "restore", "FORMAT"]

#: 2: a clock per actor (its offset) and the stream clock, instead of one engine clock.
#: Within 2, ``keyed_ids`` was added (the dedupe window's ``(key, id)`` pairs): a snapshot
#: without it (older) has only ``ids``, ids without their key, which count for every key
#: (:class:`engine._dedupe.Recent`). Additive: the format and the meaning of ``ids`` stay.
#: Older formats are read through :func:`engine._formats.upgrade_snapshot`.
FORMAT = SNAPSHOT_FORMAT

log = logging.getLogger("herald.snapshot")


@attrs.frozen
class Capture:
    seq: int
    #: The engine's wall reading when the capture was taken, and the stream clock (base, wall base).
    wall: float
    stream: tuple[float | None, float]
    real: float
    #: Per actor: key, states by plugin, timers, default state (None if none), clock offset.
    actors: list[tuple[str, dict[str, Any], list[tuple] | None, Any, float | None]]
    ids: Recent = attrs.field(factory=Recent)
    #: The plugin whose default handler kept the default states; None: Herald's bundled one.
    default_handler: str | None = None


def capture(engine: Engine, seq: int, ids: Recent | None = None, real: float | None = None) -> Capture:
    """A consistent copy of the engine at journal position ``seq`` (with the event
    ids still to be recognised as repeats, which outlive the compacted journal)."""
    actors = [
        (
            actor.key,
            dict(actor.states),
            [(t.plugin, t.name, t.due, t.data) for t in sorted(timers_of(actor), key=lambda t: t.seq)]
            if actor.timers else None,
            actor.unknown or None,  # a value: never changed in place, so no copy
            actor.offset,
        )
        for actor in engine.actors.values()
    ]
    default = engine.plugins.default
    return Capture(seq, engine.wall(), engine.stream.state(), time.time() if real is None else real, actors,
                   ids if ids is not None else Recent(), None if default.bundled else default.plugin)


def encode(snap: Capture) -> bytes:
    """Serialise a capture (blocking; run it in a thread)."""
    unstructure = converter.unstructure
    actors = []
    for key, states, timers, unknown, offset in snap.actors:
        actors.append((key, {p: unstructure(s) for p, s in states.items()}, timers,
                       None if unknown is None else unstructure(unknown), offset))
    return orjson.dumps(
        {"format": FORMAT, "seq": snap.seq, "wall": snap.wall, "stream": snap.stream, "real": snap.real,
         "actors": actors, **snap.ids.to_snapshot(),
         **({} if snap.default_handler is None else {"default_handler": snap.default_handler})}
    )


def decode(body: bytes) -> dict[str, Any]:
    """Parse a snapshot (blocking; run it in a thread)."""
    return orjson.loads(body)


def restore(engine: Engine, doc: dict[str, Any]) -> tuple[int, float]:
    """Load a decoded snapshot into an empty engine (in the engine's thread); return
    ``(seq, wall)``: the journal position and the engine's wall reading it was taken at."""
    doc = upgrade_snapshot(doc)  # an older format as the current one; ValueError for an unknown one
    structure = converter.structure
    types = engine.plugins.state_types
    enabled = set(engine.plugins.names)
    default = engine.plugins.default
    kept_by = doc.get("default_handler")
    # Default states kept by another default handler than the enabled one mean nothing to it.
    same_default = kept_by == (None if default.bundled else default.plugin)
    dropped = 0
    engine.stream.restore(*doc["stream"])
    for key, states, timers, unknown, offset in doc["actors"]:
        actor = engine.actors[key] = Actor(key)
        actor.offset = offset
        for plugin, data in states.items():
            if plugin not in enabled:  # a plugin no longer enabled: its state is dropped
                continue
            state_type = types.get(plugin)
            actor.put(plugin, structure(data, state_type) if state_type is not None else data)
            engine.members[plugin].add(key)
        for plugin, name, due, data in timers or ():
            if plugin in enabled:
                engine.timers.set(actor, plugin, name, due, data, offset if offset is not None else due)
        if unknown:
            if not same_default:
                dropped += 1
            else:
                actor.unknown = unknown if default.state_type is None else structure(unknown, default.state_type)
    if dropped:
        log.warning("the snapshot's default states of %d actors were kept by another default handler (%s), not "
                    "the enabled one (%s): they are not restored", dropped, kept_by or "Herald's bundled counting",
                    "Herald's bundled counting" if default.bundled else f"plugin {default.plugin}")
    for plugin in engine.member_versions:
        engine.member_versions[plugin] += 1
    engine.timers_restored()
    return doc["seq"], doc["wall"]

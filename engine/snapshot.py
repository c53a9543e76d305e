"""Snapshots of the engine: every actor's states, timers and unknown counts.

Capturing is cheap and happens in the trio thread: plugin states are
immutable values, so copying each actor's maps is enough for a consistent
picture. Encoding (cattrs + orjson) then runs in a worker thread while the
engine goes on. A plugin declares its state class with the
``herald_state_type`` hook; that class is all a snapshot needs to read it back.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import orjson

from .actor import Actor
from .core import Engine
from .event import converter
from .timers import timers_of

__all__ = ["Capture", "capture", "encode", "decode", "restore", "FORMAT"]

FORMAT = 1


@attrs.frozen
class Capture:
    seq: int
    clock: float | None
    real: float
    actors: list[tuple[str, dict[str, Any], list[tuple] | None, dict[str, int] | None]]
    ids: list[tuple[str, float]] = attrs.field(factory=list)


def capture(engine: Engine, seq: int, ids: list[tuple[str, float]] | None = None, real: float | None = None) -> Capture:
    """A consistent copy of the engine at journal position ``seq`` (with the event
    ids still to be recognised as repeats, which outlive the compacted journal)."""
    actors = [
        (
            actor.key,
            dict(actor.states),
            [(t.plugin, t.name, t.due, t.data) for t in timers_of(actor)] if actor.timers else None,
            dict(actor.unknown) if actor.unknown else None,
        )
        for actor in engine.actors.values()
    ]
    return Capture(seq, engine.clock.now(), time.time() if real is None else real, actors, list(ids or ()))


def encode(snap: Capture) -> bytes:
    """Serialise a capture (blocking; run it in a thread)."""
    unstructure = converter.unstructure
    actors = []
    for key, states, timers, unknown in snap.actors:
        actors.append((key, {p: unstructure(s) for p, s in states.items()}, timers, unknown))
    return orjson.dumps(
        {"format": FORMAT, "seq": snap.seq, "clock": snap.clock, "real": snap.real, "actors": actors, "ids": snap.ids}
    )


def decode(body: bytes) -> dict[str, Any]:
    """Parse a snapshot (blocking; run it in a thread)."""
    return orjson.loads(body)


def restore(engine: Engine, doc: dict[str, Any]) -> tuple[int, float | None, float]:
    """Load a decoded snapshot into an empty engine (in the engine's thread);
    return ``(seq, clock, real)``."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown snapshot format {doc.get('format')!r}")
    structure = converter.structure
    types = engine.plugins.state_types
    enabled = set(engine.plugins.names)
    for key, states, timers, unknown in doc["actors"]:
        actor = engine.actors[key] = Actor(key)
        for plugin, data in states.items():
            if plugin not in enabled:  # a plugin no longer enabled: its state is dropped
                continue
            state_type = types.get(plugin)
            actor.states[plugin] = structure(data, state_type) if state_type is not None else data
            engine.members[plugin].add(key)
        for plugin, name, due, data in timers or ():
            if plugin in enabled:
                engine.timers.set(actor, plugin, name, due, data)
        if unknown:
            actor.unknown = unknown
    for plugin in engine.member_versions:
        engine.member_versions[plugin] += 1
    if doc["clock"] is not None:
        engine.clock.observe(doc["clock"])
    return doc["seq"], doc["clock"], doc["real"]

"""Snapshots of the engine: every actor's states, timers and default state (``unknown``).

Capturing is cheap and happens in the trio thread: plugin states are
immutable values, so copying each actor's maps is enough for a consistent
picture. Encoding (cattrs + orjson) then runs in a worker thread while the
engine goes on. A plugin declares its state class with the
``herald_state_type`` hook, and its version with ``herald_state_version``: a
snapshot records each plugin's version beside the states, and reads older ones
through the plugin's ``herald_migrate_state`` (:class:`engine._states.StateReader`).
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
from ._states import StateReader, UnencodableState, unencodable_field
from ._timers import timers_of

__all__ = ["Capture", "capture", "encode", "decode", "restore", "FORMAT"]

#: 2: a clock per actor (its offset) and the stream clock, instead of one engine clock.
#: Within 2, ``keyed_ids`` was added (the dedupe window's ``(key, id)`` pairs): a snapshot
#: without it (older) has only ``ids``, ids without their key, which count for every key
#: (:class:`engine._dedupe.Recent`). Additive: the format and the meaning of ``ids`` stay.
#: 3: ``state_versions``, each plugin's state version (absent: 1, the first).
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
    #: Each plugin's state version (plugins with a state).
    versions: dict[str, int] = attrs.field(factory=dict)
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
                   ids if ids is not None else Recent(), dict(engine.plugins.state_versions),
                   None if default.bundled else default.plugin)


def encode(snap: Capture, format: int = FORMAT) -> bytes:
    """Serialise a capture (blocking; run it in a thread). ``format`` 2 is this format under the
    previous number, which a Herald of the previous version reads (a cluster's checkpoints, during
    a rolling upgrade: :data:`engine._formats.CHECKPOINT_SNAPSHOT_FORMAT`)."""
    unstructure = converter.unstructure
    actors = []
    for key, states, timers, unknown, offset in snap.actors:
        actors.append((key, {p: unstructure(s) for p, s in states.items()}, timers,
                       None if unknown is None else unstructure(unknown), offset))
    try:
        return orjson.dumps(
            {"format": format, "seq": snap.seq, "wall": snap.wall, "stream": snap.stream, "real": snap.real,
             "state_versions": snap.versions, "actors": actors, **snap.ids.to_snapshot(),
             **({} if snap.default_handler is None else {"default_handler": snap.default_handler})}
        )
    except orjson.JSONEncodeError:
        raise _unencodable(snap) from None


def _unencodable(snap: Capture) -> Exception:
    """Why a capture could not be encoded: the first state that cannot, by plugin, field and actor
    (a value a field's type let through, e.g. under ``Any``), else what orjson said."""
    first, others = None, 0
    for key, states, *_ in snap.actors:
        for plugin, state in states.items():
            found = unencodable_field(state)
            if found is not None:
                if first is None:
                    first = (plugin, found[0], key, found[1])
                else:
                    others += 1
    if first is None:  # not a state: say what it was
        try:
            orjson.dumps({"actors": [a[2:] for a in snap.actors], **snap.ids.to_snapshot()})
        except orjson.JSONEncodeError as exc:
            return ValueError(f"a snapshot cannot be encoded: {exc}")
        return ValueError("a snapshot cannot be encoded")
    return UnencodableState(*first, others=others)


def decode(body: bytes) -> dict[str, Any]:
    """Parse a snapshot (blocking; run it in a thread)."""
    return orjson.loads(body)


def restore(engine: Engine, doc: dict[str, Any]) -> tuple[int, float]:
    """Load a decoded snapshot into an empty engine (in the engine's thread); return
    ``(seq, wall)``: the journal position and the engine's wall reading it was taken at."""
    doc = upgrade_snapshot(doc)  # an older format as the current one; ValueError for an unknown one
    host = engine.plugins
    enabled = set(host.names)
    recorded = doc["state_versions"]
    # One reader per plugin with a state: it migrates states of an older version and refuses (a
    # PluginError in one line) what cannot be read; a plugin with no state keeps the data as it is.
    readers = {name: StateReader(name, state_type, host.state_versions[name], recorded.get(name, 1),
                                 host.state_migrations.get(name))
               for name, state_type in host.state_types.items() if state_type is not None}
    disabled: dict[str, int] = {}
    structure = converter.structure
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
            if plugin not in enabled:  # a plugin no longer enabled: its state is dropped (and said so below)
                disabled[plugin] = disabled.get(plugin, 0) + 1
                continue
            reader = readers.get(plugin)
            actor.put(plugin, reader.read(key, data) if reader is not None else data)
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
    for plugin, count in disabled.items():
        log.warning("plugin %s is not enabled (enabled: %s): its states of %d actor(s) in the snapshot are not "
                    "restored, and the next snapshot leaves them out", plugin, ", ".join(host.names) or "none", count,
                    extra={"plugin": plugin})
    for reader in readers.values():
        if reader.dropped:  # said once, never silently: a removed field, or a renamed one left without a migration
            log.warning("plugin %s: restored its states without %s, which %s no longer has (dropped; to carry a "
                        "renamed field over, declare herald_state_version and herald_migrate_state)", reader.plugin,
                        ", ".join(sorted(reader.dropped)), reader.state_type.__qualname__,
                        extra={"plugin": reader.plugin})
    return doc["seq"], doc["wall"]

"""Every on-disk format Herald has written, and how each older one is read today.

What is on disk is a contract: a data dir written by any earlier version opens in
this one. The journal database records its format in ``meta.schema_version``; a
snapshot carries ``format``. Reading an older one goes through the functions here,
one step per format, so that a new format adds one step and the old steps stay:

journal 1 -> 2  one row per event (table ``events``) becomes one record batch per row group
journal 2 -> 3  ``arrival`` was the single engine clock (event time); it becomes a wall
                reading: the event's receipt (``received``), never going back
snapshot 1 -> 2 one engine ``clock`` becomes the stream clock (that clock, at the capture's
                real time) and a clock per actor (all at that clock, as they were)
snapshot 2 -> 3 each plugin's state version is recorded (``state_versions``); a snapshot without
                them holds every plugin's states at version 1, the first (read through the
                plugin's ``herald_migrate_state`` when it declares a later version)

Outbox rows have not changed (table, columns and effect bodies are the same in every
format). ``tests/golden`` holds a data dir written by the old code for every older format,
and ``tests/test_upgrades.py`` fails when a format number moves without one.

A cluster keeps its data in Kafka (see :mod:`engine._changelog`), and its nodes upgrade one at a
time, so both topics' formats are read by the previous version too while an upgrade lasts: a
new format only adds what the old code ignores (headers, JSON members), or is written only once
every node reads it. Each record says its format in a ``format`` header (absent: format 1):

events 1        ``[id, type, key, at, data, received]`` as JSON (the header from changelog 2 on)
changelog 1 -> 2  the checkpoint marker gains the owner's epoch (and claims are written on
                takeover); a marker without one is as new as the newest marker or claim before
                it in the log, so format 1 restores as it did (the last checkpoint wins)
"""

from __future__ import annotations

from typing import Any

__all__ = ["JOURNAL_FORMAT", "SNAPSHOT_FORMAT", "CHECKPOINT_SNAPSHOT_FORMAT", "JOURNAL_FORMATS", "SNAPSHOT_FORMATS",
           "EVENT_FORMAT", "EVENT_FORMATS", "CHANGELOG_FORMAT", "CHANGELOG_FORMATS", "NewerFormat",
           "upgrade_snapshot", "upgrade_event_rows", "record_format"]

#: The formats this Herald writes.
JOURNAL_FORMAT = 3
SNAPSHOT_FORMAT = 3
#: The snapshot format inside a cluster checkpoint: 2, with ``state_versions`` added (a member the
#: previous version ignores), so that a node not yet upgraded restores what an upgraded one
#: checkpointed during a rolling upgrade. It becomes 3 once every supported version reads 3.
CHECKPOINT_SNAPSHOT_FORMAT = 2
#: The cluster's: an event message of the events topic, and the changelog's checkpoint records.
EVENT_FORMAT = 1
CHANGELOG_FORMAT = 2

#: Every format ever written, with the commit that introduced it (the golden dirs name them too).
JOURNAL_FORMATS = {
    1: "92335bc: one row per event (table events)",
    2: "6e67019: one record batch per group commit; arrival is the engine clock",
    3: "43f675c: arrival is the engine's wall reading (a clock per actor)",
}
SNAPSHOT_FORMATS = {
    1: "92335bc: one engine clock",
    2: "43f675c: a clock per actor and the stream clock (keyed_ids added within 2, optional)",
    3: "each plugin's state version beside its states (state_versions)",
}
EVENT_FORMATS = {
    1: "41b5221: [id, type, key, at, data, received] as JSON (a format header from 0.2.0 on; absent: 1)",
}
CHANGELOG_FORMATS = {
    1: "41b5221: checkpoint pieces, then a marker {ckpt, first, pieces, offset}; restore takes the last marker",
    2: "0.2.0: a format header on every record; the marker carries the owner's epoch, a claim starts each "
       "ownership; restore takes the highest (epoch, offset) of the changelog's tail",
}


class NewerFormat(ValueError):
    """A record written in a format this Herald does not know (a newer Herald wrote it)."""


def record_format(headers: dict[str, bytes], known: dict[int, str], what: str) -> int:
    """The format of a Kafka record from its ``format`` header (absent: 1, what the first versions
    wrote). Raises :class:`NewerFormat` (a ValueError) for a format not in ``known``."""
    raw = headers.get("format")
    if raw is None:
        return 1
    try:
        version = int(raw)
    except ValueError:
        raise NewerFormat(f"{what} has format {raw!r}: not a format Herald writes") from None
    if version not in known:
        raise NewerFormat(f"{what} has format {version}; this Herald reads formats "
                          f"{', '.join(map(str, known))}: a newer Herald wrote it (upgrade this node)")
    return version


def upgrade_snapshot(doc: dict[str, Any]) -> dict[str, Any]:
    """A decoded snapshot of any known format, as the current format (``doc`` itself if current).

    Raises ValueError for a format this Herald does not know (a newer Herald wrote it)."""
    version = doc.get("format")
    if version == SNAPSHOT_FORMAT:
        return doc
    if version == 2:
        # No versions recorded: every plugin's states are of its first version. (A cluster checkpoint
        # holds format 2 with ``state_versions`` added: see CHECKPOINT_SNAPSHOT_FORMAT.)
        return {**doc, "format": SNAPSHOT_FORMAT, "state_versions": doc.get("state_versions", {})}
    if version == 1:
        # One clock for every actor: the engine clock ``clock`` (event time, None before the first
        # event) at the real time ``real``. The wall is real time, so the stream clock is (clock,
        # real) and each actor's clock, wall + offset, reads that same clock: offset = clock - real.
        clock, real = doc.get("clock"), doc["real"]
        offset = None if clock is None else clock - real
        actors = [(key, states, timers, unknown, offset) for key, states, timers, unknown in doc["actors"]]
        return upgrade_snapshot({**{k: v for k, v in doc.items() if k != "clock"}, "format": 2,
                                 "wall": real, "stream": (clock, real), "actors": actors})
    raise ValueError(f"unknown snapshot format {version!r} (this Herald reads formats "
                     f"{', '.join(map(str, SNAPSHOT_FORMATS))}; a newer Herald wrote it?)")


def upgrade_event_rows(rows: list[list[Any]], version: int, floor: float) -> tuple[list[list[Any]], float]:
    """A record batch's rows ``[seq, id, key, type, ts, received, arrival, data]`` of journal
    ``version``, as the current format; ``floor`` is the previous row's wall reading (the wall
    never goes back), and the last one is returned with the rows."""
    if version >= 3:
        return rows, floor
    out = []
    for seq, id_, key, type_, ts, received, _clock, data in rows:
        floor = received if received > floor else floor
        out.append([seq, id_, key, type_, ts, received, floor, data])
    return out, floor

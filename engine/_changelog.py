"""The changelog's records: checkpoint pieces, markers, claims and tombstones, and which checkpoint
a restore takes (the one of the newest owner, never a stalled node's late one).

A checkpoint is its pieces (``herald: chunk``), then a marker (``herald: end``) naming them and the
input offset they cover. From changelog format 2 each record carries a ``format`` header, and the
marker the *owner epoch* of the node that wrote it: a node that takes a partition over reads the
changelog's tail, takes the highest epoch there plus one, and writes a claim (``herald: claim``)
with it before it applies anything. A node that was paused while it owned the partition (a zombie)
may still land a checkpoint after that; its epoch is lower, so a restore never takes it.

A marker without an epoch (format 1, or a node of the previous version during a rolling upgrade)
is as new as the newest marker or claim before it in the log: among such markers the last one wins,
which is how format 1 was always restored. The new fields are JSON members and headers the previous
version ignores; a claim carries ``last_end`` like a tombstone, so it follows it to the checkpoint.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
import orjson

from ._formats import CHANGELOG_FORMAT, CHANGELOG_FORMATS, record_format

__all__ = ["Marker", "Seen", "seen_of", "ranked", "marker_record", "claim_record", "piece_headers",
           "tombstone_headers", "CLAIM_KEY", "TAIL_SCAN"]

#: How many records at the end of a changelog partition a restore reads to find the newest owner's
#: checkpoint (markers, claims; the pieces' bytes are not kept). The marker the last record names
#: is read too when it lies further back, so a checkpoint of many pieces is still found.
TAIL_SCAN = 200
#: The key of claims: compaction keeps the latest one of each partition.
CLAIM_KEY = b"claim"

_FORMAT = str(CHANGELOG_FORMAT).encode()


@attrs.frozen
class Seen:
    """One record of a changelog partition as a restore keeps it: its offset, headers, and its value
    if it is a marker or a claim (pieces are read again only for the checkpoint taken)."""

    at: int
    headers: dict[str, bytes]
    value: bytes | None


def seen_of(message: Any) -> Seen:
    """What a restore keeps of a changelog record (a confluent-kafka Message, or a test's stand-in)."""
    headers = {k: (v or b"") for k, v in (message.headers() or ())}
    kind = headers.get("herald")
    return Seen(message.offset(), headers, message.value() if kind in (b"end", b"claim") else None)


@attrs.frozen
class Marker:
    """A complete checkpoint's marker: where it is, its pieces, the input offset it covers, and the
    owner epoch that orders it (``epoch`` None: written without one, ``rank`` is then inherited)."""

    at: int
    ckpt: str
    first: int
    pieces: int
    offset: int
    epoch: int | None
    rank: int
    format: int


def _epoch(seen: Seen, doc: dict[str, Any]) -> int | None:
    value = doc.get("epoch")
    if value is None and "epoch" in seen.headers:
        value = seen.headers["epoch"]
    return None if value is None else int(value)


def marker_of(seen: Seen, inherited: int) -> Marker:
    """A marker record (raises ValueError for one this Herald cannot read: a newer format)."""
    version = record_format(seen.headers, CHANGELOG_FORMATS, f"the checkpoint marker at changelog offset {seen.at}")
    doc = orjson.loads(seen.value or b"{}")
    epoch = _epoch(seen, doc)
    return Marker(seen.at, str(doc["ckpt"]), int(doc["first"]), int(doc["pieces"]), int(doc["offset"]), epoch,
                  inherited if epoch is None else epoch, version)


def ranked(tail: Iterable[Seen], named: Seen | None = None) -> tuple[list[Marker], int]:
    """The markers of a changelog's tail, best first (highest epoch, then highest input offset, then
    the later record), and the highest owner epoch seen (markers and claims). ``named`` is the marker
    the last record names when it lies before the tail. Records of other kinds are skipped."""
    records = sorted({s.at: s for s in ([named] if named is not None else []) + list(tail)}.values(),
                     key=lambda s: s.at)
    newest = 0  # the highest epoch before the record at hand: a marker without one inherits it
    markers: list[Marker] = []
    for seen in records:
        kind = seen.headers.get("herald")
        if kind == b"end":
            marker = marker_of(seen, newest)
            markers.append(marker)
            newest = max(newest, marker.rank)
        elif kind == b"claim":
            record_format(seen.headers, CHANGELOG_FORMATS, f"the claim at changelog offset {seen.at}")
            epoch = _epoch(seen, orjson.loads(seen.value or b"{}"))
            newest = max(newest, epoch or 0)
    markers.sort(key=lambda m: (m.rank, m.offset, m.at), reverse=True)
    return markers, newest


def piece_headers(ckpt: str, last_end: int) -> list[tuple[str, bytes]]:
    return [("herald", b"chunk"), ("ckpt", ckpt.encode()), ("last_end", str(last_end).encode()),
            ("format", _FORMAT)]


def marker_record(ckpt: str, first: int, pieces: int, offset: int, epoch: int,
                  last_end: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A marker's value and headers (format 1's members and headers, and the format and epoch)."""
    value = orjson.dumps({"ckpt": ckpt, "first": first, "pieces": pieces, "offset": offset,
                          "format": CHANGELOG_FORMAT, "epoch": epoch})
    return value, [("herald", b"end"), ("ckpt", ckpt.encode()), ("last_end", str(last_end).encode()),
                   ("format", _FORMAT), ("epoch", str(epoch).encode())]


def claim_record(epoch: int, node: str, offset: int, last_end: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A claim: the node that took the partition over at input ``offset``, with its epoch. Its
    ``last_end`` names the checkpoint it restored (a previous version follows it there)."""
    value = orjson.dumps({"format": CHANGELOG_FORMAT, "epoch": epoch, "node": node, "offset": offset})
    return value, [("herald", b"claim"), ("last_end", str(last_end).encode()), ("format", _FORMAT),
                   ("epoch", str(epoch).encode())]


def tombstone_headers(last_end: int) -> list[tuple[str, bytes]]:
    return [("herald", b"tombstone"), ("last_end", str(last_end).encode()), ("format", _FORMAT)]

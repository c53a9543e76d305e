"""Bulk loading of files: cut a file into chunks of whole lines, send each to a loader.

A chunk is applied and journaled as one event (see :meth:`engine.host.Herald.load`),
so files of any size stream through in constant memory. ``herald load`` sends
the chunks to a running server (``POST /v1/load/{loader}``) or applies them to
a data directory in-process; ``herald serve --load`` does the latter at start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ._engine import LoadReport

__all__ = ["CHUNK_BYTES", "iter_chunks", "load_file"]

#: Bytes per chunk: large enough that per-chunk costs vanish, small enough for one request.
CHUNK_BYTES = 32 * 1024 * 1024


def iter_chunks(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(first line number, whole lines)`` of the file, about ``chunk_bytes`` at a time.

    A line longer than a chunk is kept whole (the chunk grows to hold it).
    """
    line = 1
    carry = b""
    with open(path, "rb") as file:
        while True:
            block = file.read(chunk_bytes)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            chunk, carry = data[: cut + 1], data[cut + 1:]
            yield line, chunk
            line += chunk.count(b"\n")
    if carry:
        yield line, carry


async def load_file(
    herald: Any,
    loader: str,
    path: str | os.PathLike[str],
    *,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Load a whole file in-process through ``herald``; durable on return.

    Chunk N is written to the journal while chunk N+1 is applied; ``progress``
    gets the bytes of each chunk applied. No snapshot is taken between chunks
    (one would be stale at once, and encoding every actor in a thread holds the
    GIL the folding needs): if one is due, it starts once the file is in.
    """
    total = LoadReport()
    source = Path(path).name
    for first_line, chunk in iter_chunks(path, chunk_bytes):
        total.merge(await herald.load(loader, chunk, first_line=first_line, source=source, durable=False,
                                      snapshot=False))
        if progress is not None:
            progress(len(chunk))
    await herald.journal.commit()
    herald._maybe_snapshot()
    return total

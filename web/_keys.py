"""Actor keys in URLs: one path segment each, so that every key comes back exactly as it went out.

A key may hold ``/``, ``?``, ``#``, ``%`` or ``..`` (``../../v1/journal`` is a key):
a link that puts it in a path as it is sends the browser elsewhere. A key is
therefore percent-encoded whole (``/`` too) into one segment, and the routes
take it with :class:`ActorKey`, which matches what that segment decodes to,
slashes included (Werkzeug's ``path`` refuses a leading ``/`` and merges
``//``). A segment that is exactly ``.`` or ``..`` is resolved away by every
browser however it is encoded: those two keys go in the query instead
(:func:`actor_url`).
"""

from __future__ import annotations

from urllib.parse import quote

from quart import url_for
from werkzeug.routing import PathConverter

__all__ = ["ACTOR_KEY", "ActorKey", "actor_url", "key_segment"]

#: The converter's name in the app's URL map (``/v1/actors/<actor_key:key>``).
ACTOR_KEY = "actor_key"
#: Keys no path segment can carry (URL parsers remove dot segments, encoded or not).
_DOT_SEGMENTS = frozenset({".", ".."})


def key_segment(key: str) -> str:
    """``key`` as one path segment: every character but letters, digits and ``-._~`` percent-encoded."""
    return quote(key, safe="")


class ActorKey(PathConverter):
    """A route's key: the rest of the path, whatever it holds (a leading ``/`` too); built as one segment.
    Use it on rules with ``merge_slashes=False``."""

    regex = ".+?"
    part_isolating = False

    def to_url(self, value: str) -> str:
        return key_segment(value)


def actor_url(key: str) -> str:
    """The console's page of an actor: ``/ui/actors/<key as one segment>``, or ``/ui/actor?key=``
    for the keys ``.`` and ``..``."""
    if key in _DOT_SEGMENTS:
        return url_for("console.actor_by_query", key=key)
    return url_for("console.actor", key=key)

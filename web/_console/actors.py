"""The console's actors: find one by key, list the keys a plugin holds (paged), show one actor.

An actor's page joins what memory holds (each plugin's state, its clock, its
pending timers) with what the journal keeps (its recent events, and the
effects that name it with their delivery status).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from quart import Blueprint, redirect, render_template, request

from .._keys import ACTOR_KEY, actor_url
from .._pages import instant
from .._views import json_response
from .deliveries import receiver_of
from .pages import Missing, paging

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["KeyOrder", "add_actors"]

_UTC = timezone.utc
#: Recent events and effects shown on an actor's page.
RECENT = 20
#: The parts of an actor's page refreshed whole (``console/_actor_<name>.html``).
ACTOR_REGIONS = ("timers", "states", "events", "effects")


class KeyOrder:
    """The keys each plugin holds, sorted; re-sorted only when a key joins or leaves (``context.version``)."""

    def __init__(self, herald: "Herald") -> None:
        self.context = herald.context
        self._sorted: dict[str, tuple[int, list[str]]] = {}

    def page(self, plugin: str, page: int, per_page: int) -> tuple[list[str], int]:
        version = self.context.version(plugin)
        known = self._sorted.get(plugin)
        if known is None or known[0] != version:
            known = self._sorted[plugin] = (version, sorted(self.context.keys(plugin)))
        keys = known[1]
        start = (page - 1) * per_page
        return keys[start:start + per_page], len(keys)


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def _timers(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The actor's timers with how far each is from its clock ("in 4 min", "due now")."""
    clock = datetime.fromisoformat(view["clock"]) if view["clock"] else None
    rows = []
    for timer in view["timers"]:
        due = datetime.fromisoformat(timer["due"])
        left = None if clock is None else (due - clock).total_seconds()
        rows.append({**timer, "left": None if left is None else ("due now" if left <= 0 else f"in {_span(left)}")})
    return rows


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def add_actors(bp: Blueprint, herald: "Herald") -> None:
    order = KeyOrder(herald)
    plugins = herald.plugins.names

    @bp.get("/actors")
    async def actors() -> Any:
        key = request.args.get("key")
        if key is not None and key.strip():
            return redirect(actor_url(key.strip()), 303)
        plugin = request.args.get("plugin") or (plugins[0] if plugins else "")
        if plugins and plugin not in plugins:
            raise Missing(f"No plugin is called “{plugin}”. Plugins: {', '.join(plugins)}.")
        page, per_page = paging()
        keys, total = order.page(plugin, page, per_page) if plugin else ([], 0)
        pages = max(1, math.ceil(total / per_page))
        return await render_template("console/actors.html", plugins=plugins, plugin=plugin, keys=keys, total=total,
                                     page=page, pages=pages, per_page=per_page, first=(page - 1) * per_page + 1)

    async def _actor(key: str) -> dict[str, Any]:
        """What an actor's page shows (raises :class:`Missing`)."""
        engine = herald.engine_for(key)
        view = None if engine is None else engine.actor_view(key)
        if view is None:
            raise Missing(f"No actor has the key “{key}”.", key=key)
        journal = herald.journal
        events, effects = [], []
        if journal.enabled:
            events, effects = await journal.query(lambda j: (j.events_of(key, RECENT), j.effects_naming(key, RECENT)))
        timers = _timers(view)
        states = [(name, _pretty(state)) for name, state in sorted(view["states"].items())]
        # The default handler's state: the bundled one's counts by type, a replacement's shown as its JSON.
        default = engine.plugins.default
        unknown = view["unknown"] or None
        if unknown is not None and not default.bundled:
            unknown = (default.plugin, _pretty(unknown))
        cluster = herald.cluster
        replica_lag = None if cluster is None or cluster.owns(key) else cluster.replica_lag_of(key)
        return {
            "replica_lag": replica_lag,
            "key": key, "view": view, "timers": timers, "durable": journal.enabled, "states": states,
            "counts": unknown if default.bundled else None, "default_state": None if default.bundled else unknown,
            "events": [(seq, e, _pretty(e.data)) for seq, e in events], "recent": RECENT,
            "effects": [{**row.to_json(), "receiver": receiver_of(row.to_json())} for row in effects],
            "figures": {"clock": instant(view["clock"]) if view["clock"] else "no event yet",
                        "timers": str(len(timers)), "plugins": str(len(states))},
            "now": datetime.now(_UTC),
        }

    # The key is one segment of the link (web._keys): whatever it holds, "/" and "?" included, it comes back whole.
    @bp.get(f"/actors/<{ACTOR_KEY}:key>", merge_slashes=False)
    async def actor(key: str) -> Any:
        if herald.engine_for(key) is None:  # a cluster node that does not serve this key's partition
            owner = herald.cluster.owner_url(key) if herald.cluster is not None else None
            return await render_template("console/elsewhere.html", key=key, owner=owner), 404 if owner is None else 200
        return await render_template("console/actor.html", **await _actor(key))

    @bp.get("/actor")
    async def actor_by_query() -> Any:
        """The same page for the keys "." and "..", which no path segment carries (see web._keys)."""
        key = request.args.get("key")
        if not key:
            raise Missing("Which actor? Give its key.")
        return await actor(key)

    @bp.get("/actor.json")
    async def actor_json() -> Any:
        data = await _actor(request.args.get("key", ""))
        regions = {name: await render_template(f"console/_actor_{name}.html", **data) for name in ACTOR_REGIONS}
        return json_response({"figures": data["figures"], "regions": regions})

"""The console's live tail of ingestion (``web._tail``): accepted and rejected events, filterable by
type, key and outcome; ``/ui/events.json`` gives the rows newer than the page's for ``console.js``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, render_template, request

from .._tail import ACCEPTED, REJECTED, EventTail
from .._views import BadParameter, int_param, json_response

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["add_events"]

_UTC = timezone.utc
OUTCOMES = (ACCEPTED, REJECTED)


def _filters() -> dict[str, str]:
    outcome = request.args.get("outcome", "")
    if outcome and outcome not in OUTCOMES:
        raise BadParameter("outcome", "must be accepted, rejected or empty for both")
    return {"type_": (request.args.get("type") or "").strip(), "key": (request.args.get("key") or "").strip(),
            "outcome": outcome}


def _rows(found: list[tuple[int, tuple]]) -> list[dict[str, Any]]:
    rows = []
    for number, (at, outcome, type_, key, id_, field, code, message) in found:
        when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, _UTC)
        rows.append({"number": number, "at": when, "outcome": outcome, "type": type_, "key": key, "id": id_,
                     "field": field, "code": code, "message": message})
    return rows


def add_events(bp: Blueprint, herald: "Herald") -> None:
    tail = EventTail.of(herald)
    types = sorted({r.name for r in herald.plugins.routes.values()})

    @bp.get("/events")
    async def events() -> str:
        filters = _filters()
        found = tail.matching(**filters, limit=int_param("limit", 100, low=1, high=tail.entries.maxlen or 1000))
        return await render_template(
            "console/events.html", rows=_rows(found), last=tail.total, capacity=tail.entries.maxlen,
            types=sorted(set(types) | set(tail.types())), outcomes=OUTCOMES, type=filters["type_"],
            key=filters["key"], outcome=filters["outcome"])

    @bp.get("/events.json")
    async def events_json() -> Response:
        found = tail.matching(**_filters(), after=int_param("after", 0) or 0)
        rows = await render_template("console/_event_rows.html", rows=_rows(found))
        return json_response({"last": tail.total, "count": len(found), "rows": rows})

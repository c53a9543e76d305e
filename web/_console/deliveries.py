"""The console's deliveries: the outbox, filtered by status and receiver, with each row's last error;
dead letters replayed one at a time or all at once (``Outbox.replay_dead``, as ``POST /v1/outbox/replay``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, redirect, render_template, request, url_for

from engine import redact_url

from .._views import BadParameter, int_param
from .pages import MAX_PER_PAGE

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["STATUSES", "add_deliveries", "receiver_of"]

STATUSES = ("pending", "retrying", "delivered", "dead")


def receiver_of(row: dict[str, Any]) -> str:
    """Where an effect goes: a notification's URL (without credentials), else its kind."""
    effect = row.get("effect")
    url = effect.get("url") if isinstance(effect, dict) else None
    return redact_url(url) if isinstance(url, str) else row["kind"]


def _memory_rows(herald: "Herald", status: str, receiver: str) -> list[dict[str, Any]]:
    """Without a journal the outbox keeps only its dead letters (in memory)."""
    if status not in ("", "dead"):
        return []
    rows = [{**d, "next_at": None, "updated": d.get("created")} for d in reversed(herald.outbox.dead)]
    return [r for r in rows if receiver in receiver_of(r)]


def add_deliveries(bp: Blueprint, herald: "Herald") -> None:
    @bp.get("/deliveries")
    async def deliveries() -> Any:
        status = request.args.get("status", "")
        if status and status not in STATUSES:
            raise BadParameter("status", f"must be one of {', '.join(STATUSES)} (or empty for all)")
        receiver = (request.args.get("receiver") or "").strip()
        before = int_param("before", None, low=1)
        per_page = int_param("per_page", 50, low=1, high=MAX_PER_PAGE)
        journal = herald.journal
        if journal.enabled:
            rows = [row.to_json() for row in await journal.query(
                lambda j: j.outbox_page(status or None, receiver, before_id=before, limit=per_page + 1))]
        else:
            rows = _memory_rows(herald, status, receiver)
            if before is not None:
                rows = [r for r in rows if r["id"] < before]
        more = len(rows) > per_page
        rows = rows[:per_page]
        for row in rows:
            row["receiver"] = receiver_of(row)
            row["retrying"] = row["status"] == "pending" and row["attempts"] > 0
        older = url_for("console.deliveries", status=status or None, receiver=receiver or None, per_page=per_page,
                        before=rows[-1]["id"]) if more else None
        replayed = request.args.get("replayed")
        return await render_template(
            "console/deliveries.html", rows=rows, status=status, receiver=receiver, statuses=STATUSES,
            per_page=per_page, older=older, durable=journal.enabled, paged=before is not None,
            replayed=int(replayed) if replayed and replayed.isdigit() else None)

    @bp.post("/deliveries/replay")
    async def replay() -> Any:
        form = await request.form
        raw = form.get("id")
        if raw is not None and not (raw.isascii() and raw.isdigit()):
            raise BadParameter("id", "must be the number of a dead delivery")
        replayed = await herald.outbox.replay_dead(None if raw is None else [int(raw)])
        return redirect(url_for("console.deliveries", status="dead", replayed=replayed), 303)

"""A plan's actor: its latest known values and whether it was ever on sale online.

Each poll of the provider turns every plan whose values changed into a
``marketplace.plan_seen`` event on the plan's actor (``plan:<base id>:<plan id>``),
so the journal holds each plan's history of values and a restart keeps plans
that have left the feed since.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine import Event

from .feed import PlanValues, plan_uuid

__all__ = ["Plan", "PlanChanged", "SEEN", "on_seen", "seen_data"]

SEEN = "marketplace.plan_seen"


@attrs.frozen(slots=True)
class Plan:
    base_id: str = ""
    plan_id: str = ""
    title: str = ""
    sell_mode: str = ""
    start: str = ""
    end: str = ""
    min_price: float | None = None
    max_price: float | None = None
    sold_out: bool = False
    #: Sold online at least once: only such plans are ever returned by a search.
    ever_online: bool = False
    first_seen: float = 0.0
    last_seen: float = 0.0

    @property
    def uuid(self) -> str:
        return plan_uuid(self.base_id, self.plan_id)

    def same_values(self, values: PlanValues) -> bool:
        return (self.title, self.sell_mode, self.start, self.end, self.min_price, self.max_price, self.sold_out) == (
            values.title, values.sell_mode, values.start, values.end, values.min_price, values.max_price,
            values.sold_out)


@attrs.frozen(slots=True)
class PlanChanged:
    """An effect: the plan of actor ``key`` changed, so searches built before it are stale. The search
    index's sink takes it on every node (a local view), so that a cluster node that does not poll
    rebuilds its index too."""

    key: str


def seen_data(values: PlanValues) -> dict[str, Any]:
    return attrs.asdict(values)


def on_seen(state: Plan, event: Event) -> tuple[Plan, tuple]:
    d = event.data
    at = event.at
    return Plan(
        d["base_id"], d["plan_id"], d["title"], d["sell_mode"], d["start"], d["end"], d["min_price"], d["max_price"],
        d["sold_out"], state.ever_online or d["sell_mode"] == "online", state.first_seen or at, at,
    ), (PlanChanged(event.key),)

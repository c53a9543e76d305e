"""Reading the provider's XML feed, safely and in one pass.

``<eventList><output><base_event base_event_id sell_mode title><event event_id
event_start_date event_end_date ...><zone price .../></event></base_event>``.
The parse streams (``iterparse``, elements cleared as they are used) through
``defusedxml``, which refuses entity declarations and so billion-laughs bodies.
A plan that cannot be read (a missing attribute, an impossible date such as
2021-09-31, a price that is not a number) is reported with its ids and
skipped; the rest of the feed is used. A body that is not XML raises
:class:`FeedError`, and the caller changes nothing.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Iterator

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

__all__ = ["FeedError", "PlanValues", "Skipped", "parse_feed", "plan_uuid", "PLAN_NAMESPACE"]

#: Namespace of the plans' stable UUIDs: uuid5(PLAN_NAMESPACE, "<base_event_id>:<event_id>").
PLAN_NAMESPACE = uuid.UUID("6f9c3a52-8d1e-4f7b-9a2c-4e5d6b7a8c90")


class FeedError(Exception):
    """The feed as a whole cannot be used (not XML, an XML bomb, the wrong root)."""


@attrs.frozen
class PlanValues:
    """One plan as the feed describes it now (identity: base plan id and plan id)."""

    base_id: str
    plan_id: str
    title: str
    sell_mode: str
    start: str  # naive local ISO date-time, "2021-06-30T21:00:00"
    end: str
    min_price: float | None
    max_price: float | None
    sold_out: bool = False

    @property
    def key(self) -> str:
        return f"plan:{self.base_id}:{self.plan_id}"

    @property
    def uuid(self) -> str:
        return plan_uuid(self.base_id, self.plan_id)


@attrs.frozen
class Skipped:
    """A plan that was left out, and why."""

    base_id: str | None
    plan_id: str | None
    reason: str


def plan_uuid(base_id: str, plan_id: str) -> str:
    return str(uuid.uuid5(PLAN_NAMESPACE, f"{base_id}:{plan_id}"))


def _local(value: str | None, what: str) -> str:
    if value is None:
        raise ValueError(f"{what} is missing")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a date-time") from None
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def _price(value: str | None) -> Decimal:
    if value is None:
        raise ValueError("a zone has no price")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"price {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"price {value!r} is not a price")
    return price


def parse_feed(body: bytes) -> Iterator[PlanValues | Skipped]:
    """Every plan of the feed, in order, or why it was skipped. Raises :class:`FeedError`."""
    base: dict[str, str] | None = None
    root_seen = False
    try:
        for action, element in iterparse(io.BytesIO(body), events=("start", "end"), forbid_dtd=True):
            tag = element.tag
            if action == "start":
                if not root_seen:
                    root_seen = True
                    if tag != "eventList":
                        raise FeedError(f"the root element is <{tag}>, not <eventList>")
                elif tag == "base_event":
                    base = dict(element.attrib)
                continue
            if tag == "event":
                yield _plan(base or {}, element)
                element.clear()
            elif tag == "base_event":
                base = None
                element.clear()
    except (DefusedXmlException, SyntaxError) as exc:  # ParseError is a SyntaxError
        raise FeedError(f"the feed is not usable XML: {exc}") from None
    if not root_seen:
        raise FeedError("the feed is empty")


def _plan(base: dict[str, str], event) -> PlanValues | Skipped:
    base_id, plan_id = base.get("base_event_id"), event.get("event_id")
    try:
        if not base_id:
            raise ValueError("base_event_id is missing")
        if not plan_id:
            raise ValueError("event_id is missing")
        sell_mode = base.get("sell_mode")
        if sell_mode is None:
            raise ValueError("sell_mode is missing")
        title = base.get("title")
        if title is None:
            raise ValueError("title is missing")
        start = _local(event.get("event_start_date"), "event_start_date")
        end = _local(event.get("event_end_date"), "event_end_date")
        if end < start:
            raise ValueError(f"it ends ({end}) before it starts ({start})")
        prices = [_price(zone.get("price")) for zone in event.iter("zone")]
        return PlanValues(
            base_id, plan_id, title, sell_mode, start, end,
            float(min(prices)) if prices else None, float(max(prices)) if prices else None,
            event.get("sold_out") == "true",
        )
    except ValueError as exc:
        return Skipped(base_id, plan_id, str(exc))

"""The console's overview: what Herald is doing now, as figures (text) and regions (HTML fragments).

The page renders both at load; ``/ui/overview.json`` gives the same figures and
regions again, and ``console.js`` swaps in what changed without reloading.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, render_template

from engine import redact_text, utc_datetime

from .._charts import line_chart
from .._pages import instant
from .._rates import Rates
from .._views import json_response

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["Overview", "add_overview", "duration"]

_UTC = timezone.utc
#: The regions of the page that are HTML fragments (``console/_<name>.html``), refreshed whole.
REGIONS = ("charts", "sources", "cluster")


def duration(seconds: float) -> str:
    """``3600`` → ``1 h``; ``90`` → ``1.5 min``; ``12`` → ``12 s``."""
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return str(count)  # pragma: no cover


def _total(counter: Any) -> float:
    """A labelled Prometheus counter, summed over its labels."""
    return sum(s.value for family in counter.collect() for s in family.samples if s.name.endswith("_total"))


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}/s"


class Overview:
    """The overview's figures for one server, and the rates it samples (events in, effects out)."""

    def __init__(self, herald: "Herald") -> None:
        self.herald = herald
        self.rates = Rates(self._counters)

    def _counters(self) -> tuple[float, float]:
        metrics = self.herald.metrics
        return float(sum(metrics.hot.accepted.values())), _total(metrics.effects_sent)

    async def _journal(self) -> dict[str, Any] | None:
        journal = self.herald.journal
        if not journal.enabled or journal.failed is not None:
            return None
        return await journal.query(lambda j: {**j.stats(), "outbox": j.outbox_counts()})

    async def figures(self) -> dict[str, str]:
        """Every live figure of the page, as the text it shows (``data-figure`` names them)."""
        herald = self.herald
        engines = herald.engines()
        dues = [d for d in (e.timers.min_due() for e in engines) if d is not None]
        watermarks = [w for w in (e.watermark() for e in engines) if w is not None]
        clocks = [c for c in (e.now() for e in engines) if c is not None]
        recent = self.rates.recent()
        metrics = herald.metrics
        figures = {
            "status": herald.status,
            "actors": f"{sum(len(e.actors) for e in engines):,}",
            "timers": f"{sum(len(e.timers) for e in engines):,}",
            "next_due": instant(utc_datetime(min(dues))) if dues else "none pending",
            "clock": instant(max(clocks)) if clocks else "no event yet",
            "watermark": instant(min(watermarks)) if watermarks else "no event yet",
            "lateness": duration(herald.config.allowed_lateness),
            "late_events": f"{sum(e.late_events for e in engines):,}",
            "events_rate": _rate(recent[0] if recent else None),
            "effects_rate": _rate(recent[1] if recent else None),
            "events_total": f"{sum(metrics.hot.accepted.values()):,}",
            "rejected_total": f"{_total(metrics.rejected):,.0f}",
            "effects_total": f"{_total(metrics.effects_sent):,.0f}",
            "outbox_queued": f"{herald.outbox.pending:,}",
        }
        stats = await self._journal()
        if stats is None:
            durable = herald.journal.enabled
            figures.update({
                "journal_size": "journal failed" if durable else "no journal (memory)",
                "journal_events": "—",
                "snapshot": "—",
                "outbox_pending": f"{herald.outbox.pending:,}",
                "outbox_retrying": "—",
                "outbox_dead": f"{len(herald.outbox.dead):,}" if not durable else "—",
            })
        else:
            outbox = stats["outbox"]
            figures.update({
                "journal_size": size(stats["bytes"]),
                "journal_events": f"{stats['events']:,}",
                "snapshot": (f"seq {stats['snapshot_seq']:,} at {instant(stats['snapshot_created'])}"
                             if stats["snapshot_seq"] is not None else "none yet"),
                "outbox_pending": f"{outbox['pending']:,}",
                "outbox_retrying": f"{outbox['retrying']:,}",
                "outbox_dead": f"{outbox['dead']:,}",
            })
        return figures

    def charts(self) -> dict[str, Any]:
        _now, series = self.rates.series()
        window = self.rates.window
        return {
            "events": line_chart("chart-events", "Events accepted per second, last hour", "events/s",
                                 [(age, rates[0]) for age, rates in series], window=window),
            "effects": line_chart("chart-effects", "Effects delivered per second, last hour", "effects/s",
                                  [(age, rates[1]) for age, rates in series], window=window),
        }

    def sources(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Each source's health section (``/healthz`` ``sources``), as text without credentials."""
        return [(name, [(field, redact_text(str(value))) for field, value in sorted(section.items())])
                for name, section in sorted(self.herald.health.items())]

    def cluster(self) -> dict[str, Any] | None:
        cluster = self.herald.cluster
        return None if cluster is None else cluster.health()

    def plugins(self) -> list[tuple[str, list[str], list[str]]]:
        """``(plugin, its event types, its loaders)`` for every enabled plugin."""
        host = self.herald.plugins
        return [(name, sorted({r.name for r in host.routes.values() if r.plugin == name}),
                 sorted(loader.name for loader in host.loaders.values() if loader.plugin == name))
                for name in host.names]

    async def page(self) -> dict[str, Any]:
        """Everything the page's templates read."""
        return {"figures": await self.figures(), "charts": self.charts(), "sources": self.sources(),
                "cluster": self.cluster(), "plugins": self.plugins(), "now": datetime.now(_UTC)}


def add_overview(bp: Blueprint, overview: Overview) -> None:
    @bp.get("/")
    @bp.get("")  # registered first: url_for gives /ui
    async def index() -> str:
        return await render_template("console/overview.html", **await overview.page())

    @bp.get("/overview.json")
    async def overview_json() -> Response:
        data = await overview.page()
        regions = {name: await render_template(f"console/_{name}.html", **data) for name in REGIONS}
        return json_response({"figures": data["figures"], "regions": regions})

    @bp.before_app_serving
    async def start_sampling() -> None:
        from quart import current_app

        current_app.nursery.start_soon(overview.rates.run)  # type: ignore[attr-defined]

    @bp.after_app_serving
    async def stop_sampling() -> None:
        overview.rates.stop()

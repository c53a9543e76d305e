"""Prometheus metrics of one Herald instance (its own registry, so that several
instances, as in tests, never share counters)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "UNKNOWN_TYPE", "LATENCY_SAMPLE"]

#: Label used for every event type no plugin claims (bounded cardinality).
UNKNOWN_TYPE = "_unknown"

_LATENCY_BUCKETS = (1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2, 0.1)


#: The handler latency histogram observes one event in this many (timing every
#: event would cost more than the fitness handlers themselves).
LATENCY_SAMPLE = 32


class _HotCounters(Collector):
    """Per-event counters as plain ints, turned into Prometheus counters at scrape
    time: no lock and no label lookup on the hot path."""

    def __init__(self) -> None:
        self.accepted: defaultdict[str, int] = defaultdict(int)
        self.timers_fired: defaultdict[str, int] = defaultdict(int)
        #: Returns the count of events that arrived older than the watermark (set by the engine).
        self.late = lambda: 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc, label, values in (
            ("herald_events_accepted", "Events accepted, by type", "type", self.accepted),
            ("herald_timers_fired", "Timers fired, by plugin", "plugin", self.timers_fired),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily("herald_events_late", "Events older than the watermark when they arrived "
                                  "(applied on their actor's own clock all the same)", value=self.late())

    def describe(self) -> list:
        return []


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.hot = _HotCounters()
        r.register(self.hot)
        self.rejected = Counter(
            "herald_events_rejected", "Events rejected, by type and error code", ["type", "code"], registry=r
        )
        self.handler_seconds = Histogram(
            "herald_handler_seconds", f"Time spent in event handlers (one event in {LATENCY_SAMPLE} is timed)", ["type"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.handler_errors = Counter(
            "herald_handler_errors", "Handlers that raised (state left unchanged)", ["type"], registry=r
        )
        self.timers_pending = Gauge("herald_timers_pending", "Timers waiting to fire", registry=r)
        self.watermark = Gauge("herald_watermark_seconds",
                               "The watermark: the newest event timestamp seen minus the allowed lateness (Unix time)",
                               registry=r)
        self.actors = Gauge("herald_actors", "Actors in memory", registry=r)
        self.effects_queued = Gauge("herald_effects_queued", "Effects waiting for delivery", registry=r)
        self.effects_sent = Counter("herald_effects_sent", "Effects delivered", ["effect"], registry=r)
        self.effects_failed = Counter("herald_effects_failed", "Effects given up on", ["effect", "reason"], registry=r)
        self.effects_retried = Counter("herald_effects_retried", "Delivery retries", ["effect"], registry=r)
        self.effects_spilled = Counter(
            "herald_effects_spilled", "Effects left in the journal while the in-memory queue was full", registry=r
        )
        self.snapshots = Counter("herald_snapshots", "Snapshots written", registry=r)
        self.snapshot_seconds = Gauge("herald_snapshot_seconds", "Duration of the last snapshot", registry=r)
        self.journal_commits = Gauge("herald_journal_commits", "Group commits so far", registry=r)
        self.duplicates = Counter("herald_events_duplicate", "Events whose id was already accepted", registry=r)
        self.effects_dropped = Counter(
            "herald_effects_dropped", "Effects dropped before delivery", ["effect", "reason"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""`GET /metrics` in Prometheus text format.

Event, decision and latency figures are read from the store, so they are right whether the worker
runs in this process or another one, and survive restarts. Reading them scans tables that grow with
history, so one reading serves every scrape for CACHE_SECONDS: however often anyone scrapes, the
database does that work at most once per interval per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from connector.models import EventState
from connector.store import Store

CACHE_SECONDS = 5.0
# Seconds from a webhook's arrival to its event's final state.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class StoreCollector:
    """Counters and a histogram computed from the events and tickets tables."""

    def __init__(self, store: Store, *, accuracy_hours: float = 48.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 auth_failing: Callable[[], dict[str, bool]] = dict):
        self.store = store
        self.auth_failing = auth_failing  # per configured helpdesk: whether it refuses our credentials now
        self.accuracy_hours = accuracy_hours
        self.clock = clock
        self.monotonic = monotonic
        self._cached: tuple[float, list[Metric]] | None = None
        self._lock = threading.Lock()  # concurrent scrapes wait for one reading instead of each making one

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or self.monotonic() - self._cached[0] >= CACHE_SECONDS:
                self._cached = (self.monotonic(), list(self._read()))
            return iter(self._cached[1])

    def _read(self) -> Iterator[Metric]:
        received = CounterMetricFamily("deskroute_events_received", "Webhook events accepted into the queue.",
                                       labels=["platform", "kind"])
        finished = CounterMetricFamily("deskroute_events_finished", "Events that reached a final state.",
                                       labels=["platform", "kind", "state", "outcome"])
        waiting = GaugeMetricFamily("deskroute_queue_events", "Events not yet finished.", labels=["state"])
        dead = GaugeMetricFamily("deskroute_events_dead", "Dead-lettered events now, waiting for a person "
                                 "(`deskroute tickets list --state dead`); alert when above 0.", labels=["platform"])
        received_totals: dict[tuple[str, str], int] = {}
        waiting_totals: dict[str, int] = {"pending": 0, "running": 0}
        dead_totals: dict[str, int] = {}
        for row in self.store.stats.event_counts():
            key = (row.platform, row.kind)
            received_totals[key] = received_totals.get(key, 0) + row.n
            if EventState(row.state).final:
                finished.add_metric([row.platform, row.kind, row.state, row.outcome or ""], row.n)
                if row.state == EventState.DEAD:
                    dead_totals[row.platform] = dead_totals.get(row.platform, 0) + row.n
            else:
                waiting_totals[row.state] = waiting_totals.get(row.state, 0) + row.n
        auth = GaugeMetricFamily("deskroute_helpdesk_auth_failing", "1 while the helpdesk refuses our credentials "
                                 "(any process of the install saw it last); alert when 1.", labels=["platform"])
        for platform, failing in sorted(self.auth_failing().items()):
            auth.add_metric([platform], int(failing))
            dead_totals.setdefault(platform, 0)
        for platform, n in sorted(dead_totals.items()):
            dead.add_metric([platform], n)
        yield from (dead, auth)
        for (platform, kind), n in sorted(received_totals.items()):
            received.add_metric([platform, kind], n)
        for state, n in sorted(waiting_totals.items()):
            waiting.add_metric([state], n)

        decisions = CounterMetricFamily("deskroute_decisions", "Tickets classified, by the tier that decided.",
                                        labels=["platform", "tier"])
        for count in self.store.stats.decision_counts():
            decisions.add_metric([count.platform, count.tier], count.n)

        calls = CounterMetricFamily("deskroute_llm_calls", "Claude requests, by model and outcome.",
                                    labels=["model", "outcome"])
        tokens = CounterMetricFamily("deskroute_llm_tokens", "Claude tokens, by model and kind.",
                                     labels=["model", "kind"])
        cost = CounterMetricFamily("deskroute_llm_cost_usd", "Estimated Claude cost in USD (price table in settings).",
                                   labels=["model"])
        cost_by_model: dict[str, float] = {}
        for usage in self.store.stats.llm_usage():
            calls.add_metric([usage.model, usage.outcome], usage.calls)
            for kind in ("input", "output", "cache_read", "cache_write"):
                tokens.add_metric([usage.model, kind], getattr(usage, f"{kind}_tokens"))
            cost_by_model[usage.model] = cost_by_model.get(usage.model, 0.0) + usage.cost_usd
        for model, usd in sorted(cost_by_model.items()):
            cost.add_metric([model], usd)
        yield from (calls, tokens, cost)

        accuracy = GaugeMetricFamily(
            "deskroute_category_accuracy",
            f"Share of tickets routed to a category that no agent moved within {self.accuracy_hours:g} hours.",
            labels=["platform", "category", "window"])
        judged = GaugeMetricFamily("deskroute_category_routed", "Routed tickets old enough to judge, per category.",
                                   labels=["platform", "category", "window"])
        for window, days in (("7d", 7), ("30d", 30)):
            for judged_row in self.store.stats.accuracy(now=self.clock(), within_hours=self.accuracy_hours, days=days):
                labels = [judged_row["platform"], judged_row["category"], window]
                accuracy.add_metric(labels, judged_row["accuracy"])
                judged.add_metric(labels, judged_row["routed"])
        yield from (accuracy, judged)

        counts, total, n = self.store.stats.latency_histogram(LATENCY_BUCKETS)
        buckets = [(str(b), c) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)] + [("+Inf", n)]
        latency = HistogramMetricFamily("deskroute_processing_seconds",
                                        "Seconds from webhook arrival to the event's final state.",
                                        buckets=buckets, sum_value=total)
        yield from (received, finished, waiting, decisions, latency)


def make_registry(store: Store, *, accuracy_hours: float = 48.0, clock: Callable[[], float] = time.time,
                  auth_failing: Callable[[], dict[str, bool]] = dict) -> tuple[CollectorRegistry, Counter]:
    """A registry for one app, and its per-process counter of webhook responses."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, accuracy_hours=accuracy_hours, clock=clock, auth_failing=auth_failing))
    requests = Counter("deskroute_webhook_requests", "Webhook requests answered by this process, by status.",
                       ["platform", "status"], registry=registry)
    return registry, requests

"""Prometheus metrics of the service (requests and latencies come from Litestar's middleware)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _DecisionRates(Collector):
    """Acceptance and edit rates over all stored decisions (shared by every worker via the database)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        c = self.counts()
        total = sum(c.values())
        accepted = c.get("approve", 0) + c.get("edit", 0)
        yield GaugeMetricFamily(
            "kefu_decisions_stored", "Decisions stored in the database", value=float(total)
        )
        yield GaugeMetricFamily(
            "kefu_acceptance_rate",
            "Share of decisions that approved or edited a draft",
            value=accepted / total if total else float("nan"),
        )
        yield GaugeMetricFamily(
            "kefu_edit_rate",
            "Share of decisions that edited a draft",
            value=c.get("edit", 0) / total if total else float("nan"),
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.suggestions = Counter(
            "kefu_suggestions", "Suggestions made, by intent", ["intent"], registry=self.registry
        )
        self.drafts = Counter("kefu_drafts", "Drafts returned, by kind", ["kind"], registry=self.registry)
        self.fallbacks = Counter(
            "kefu_llm_fallbacks",
            "Times the template drafter stood in for the LLM",
            ["reason"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "kefu_decisions", "Agent decisions, by action", ["action"], registry=self.registry
        )
        self.http_requests = Counter(
            "kefu_http_requests", "HTTP requests", ["method", "path", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "kefu_http_request_seconds",
            "HTTP request latency",
            ["method", "path"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def track_decision_rates(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_DecisionRates(counts))

    def suggestion(self, intent: str, kinds: list[str]) -> None:
        self.suggestions.labels(intent).inc()
        for k in kinds:
            self.drafts.labels(k).inc()

    def fallback(self, reason: str) -> None:
        kind = reason.split(":", 1)[0].strip()[:40] or "error"
        self.fallbacks.labels(kind).inc()

    def decision(self, action: str) -> None:
        self.decisions.labels(action).inc()

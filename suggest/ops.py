"""Operations endpoints: /health (liveness and readiness) and /metrics (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from litestar import MediaType, Response, get
from litestar.di import NamedDependency
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from knowledge.service import KnowledgeBase
from suggest.metrics import Metrics


@get("/health", tags=["ops"], sync_to_thread=True)
def health(kb: NamedDependency[KnowledgeBase]) -> Response[dict[str, Any]]:
    """Liveness and readiness: the database answers and the index follows the KB revision."""
    checks: dict[str, Any] = {}
    ok = True
    try:
        db_rev = kb.store.revision()
        checks["database"] = {"ok": True, "dialect": kb.store.dialect, "kb_revision": db_rev}
    except Exception as e:  # the database is down: not ready
        ok = False
        db_rev = None
        checks["database"] = {"ok": False, "error": str(e)[:200]}
    idx = kb.index
    checks["index"] = {
        "ok": idx.kb_revision >= 0,
        "kb_revision": idx.kb_revision,
        "snippets": len(idx.snippets),
        "texts": len(idx.texts),
        "dense": idx.dense.kind,
        "model": kb.embedder.model_id,
        "behind": None if db_rev is None else max(0, db_rev - idx.kb_revision),
    }
    ok = ok and idx.kb_revision >= 0
    return Response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@get("/metrics", tags=["ops"], sync_to_thread=True, media_type=MediaType.TEXT)
def metrics(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    """Prometheus text format: requests, latencies, drafts by kind, fallbacks, decisions and rates."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI middleware: count requests and time them by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        # Litestar builds the middleware stack once per route: the metrics themselves live in Metrics.
        self.app = app
        self.requests = metrics.http_requests
        self.latency = metrics.http_latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            handler = scope.get("route_handler")
            path = next(iter(handler.paths), scope["path"]) if handler is not None else "unmatched"
            method = str(scope.get("method", "GET"))
            self.requests.labels(method, path, str(status)).inc()
            self.latency.labels(method, path).observe(time.perf_counter() - started)

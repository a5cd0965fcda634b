"""Operations endpoints: /health (liveness and readiness) and /metrics (Prometheus)."""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import MediaType, Response, get
from litestar.di import NamedDependency
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from knowledge.service import KnowledgeBase
from suggest.metrics import Metrics

access = logging.getLogger("kefu.access")


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
            # the route's template (/v1/suggestions/{suggestion_id:str}/decision), not the raw path
            path = str(scope.get("path_template") or "unmatched")
            method = str(scope.get("method", "GET"))
            elapsed = time.perf_counter() - started
            self.requests.labels(method, path, str(status)).inc()
            self.latency.labels(method, path).observe(elapsed)
            access.info(
                "%s %s %s %.1f ms",
                method,
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "method": method,
                    "route": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "key": getattr(scope.get("user"), "name", None),
                },
            )

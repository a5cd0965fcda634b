"""The Litestar application factory.

Heavy resources (embedding model, indexes) are created once in the lifespan and handed to
handlers by dependency injection; domain errors are mapped to HTTP in one place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig

from knowledge.errors import ConflictError, ImportFailed, KefuError, NotFoundError, ValidationError
from knowledge.service import KnowledgeBase
from suggest.knowledge_api import KnowledgeController
from suggest.settings import Settings

log = logging.getLogger("kefu")

_STATUS = {
    NotFoundError: 404,
    ConflictError: 409,
    ValidationError: 422,
    ImportFailed: 422,
}


def _kefu_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, KefuError)
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    if status == 500:
        log.exception("unexpected domain error", exc_info=exc)
    return Response({"error": exc.to_dict()}, status_code=status)


def _validation_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ValidationException)
    return Response(
        {
            "error": {
                "code": "bad_request",
                "message_zh": "请求内容不正确，请检查字段",
                "message_en": "the request is invalid; check the fields",
                "details": exc.extra,
            }
        },
        status_code=400,
    )


def _http_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    return Response(
        {"error": {"code": "http_error", "message_zh": str(exc.detail), "message_en": str(exc.detail)}},
        status_code=exc.status_code,
    )


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


def create_app(settings: Settings | None = None, *, kb: KnowledgeBase | None = None) -> Litestar:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for noisy in ("bm25s", "alembic.runtime.migration", "sentence_transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        knowledge = kb or KnowledgeBase(settings.knowledge)
        knowledge.open_index()
        app.state.kb = knowledge
        try:
            yield
        finally:
            if kb is None:
                knowledge.close()

    def provide_kb(request: Request[Any, Any, Any]) -> KnowledgeBase:
        kb: KnowledgeBase = request.app.state.kb
        return kb

    return Litestar(
        route_handlers=[health, KnowledgeController],
        dependencies={"kb": Provide(provide_kb, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers={
            KefuError: _kefu_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        openapi_config=OpenAPIConfig(title="kefu-assist", version="0.1.0", path="/schema"),
        debug=False,
    )

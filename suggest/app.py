"""The Litestar application factory.

Heavy resources (embedding model, indexes, norms, LLM client) are created once in the lifespan and
handed to handlers by dependency injection; domain errors are mapped to HTTP in one place.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from knowledge.errors import ConflictError, ImportFailed, KefuError, NotFoundError, ValidationError
from knowledge.service import KnowledgeBase, general_encoder
from prompts import NormsError, load_norms
from prompts.intents import default_intents, load_intents, semantic_intents
from suggest.auth import KeyCache, auth_middleware
from suggest.clock import Clock, SystemClock
from suggest.drafting import Drafter
from suggest.errors import (
    AlreadyDecided,
    Forbidden,
    NormsRefused,
    PreconditionFailed,
    PreconditionRequired,
    Unauthorized,
)
from suggest.knowledge_api import KnowledgeController
from suggest.learning_api import LearningController
from suggest.metrics import Metrics
from suggest.norms_api import check_norms
from suggest.ops import RequestMetrics, health, metrics
from suggest.pipeline import SuggestionPipeline
from suggest.settings import Settings
from suggest.storage import SuggestStore
from suggest.stream_api import stream_suggestion
from suggest.suggest_api import SuggestionController
from suggest.web import template_config, web_router
from suggest.workflow import Workflow
from suggest.workflow_api import WorkflowController
from suggest.workflow_store import WorkflowStore

log = logging.getLogger("kefu")

#: Domain errors to HTTP status codes, most specific first.
_STATUS: list[tuple[type[Exception], int]] = [
    (PreconditionRequired, 428),
    (PreconditionFailed, 412),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFoundError, 404),
    (AlreadyDecided, 409),
    (ConflictError, 409),
    (NormsRefused, 422),
    (ValidationError, 422),
    (ImportFailed, 422),
]


def status_of(exc: Exception) -> int:
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


def _kefu_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, KefuError | NormsError)
    status = status_of(exc)
    if status == 500:
        log.error("unexpected domain error: %s", exc, exc_info=exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response({"error": exc.to_dict()}, status_code=status, headers=headers)


def _validation_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ValidationException)
    return Response(
        {
            "error": {
                "code": "bad_request",
                "message_zh": "请求内容不正确，请检查字段和 JSON 格式",
                "message_en": "the request is invalid; check the fields and the JSON",
                "details": exc.extra,
            }
        },
        status_code=400,
    )


def _http_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    zh = {404: "没有这个地址", 405: "不支持这个请求方法", 413: "请求太大"}.get(
        exc.status_code, str(exc.detail)
    )
    return Response(
        {"error": {"code": "http_error", "message_zh": zh, "message_en": str(exc.detail)}},
        status_code=exc.status_code,
    )


def _internal_error(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unhandled error: %s", exc, exc_info=exc)
    return Response(
        {
            "error": {
                "code": "internal_error",
                "message_zh": "服务内部错误，已记录日志；请稍后重试",
                "message_en": "internal error (logged); please try again later",
            }
        },
        status_code=500,
    )


def make_drafter(settings: Settings) -> Drafter | None:
    if not settings.llm.enabled:
        return None
    from suggest.openai_drafter import OpenAIDrafter

    return OpenAIDrafter(settings.llm)


def create_app(
    settings: Settings | None = None, *, kb: KnowledgeBase | None = None, clock: Clock | None = None
) -> Litestar:
    """The service; ``kb`` and ``clock`` may be given (tests, tools), else they are made from settings."""
    settings = settings or Settings()
    clock_ = clock or SystemClock()
    metrics_ = Metrics()
    norms = load_norms(settings.norms.norms)
    intents = (
        default_intents(settings.norms.intents)
        if settings.norms.intents in ("zh", "en")
        else load_intents(settings.norms.intents)
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for noisy in ("bm25s", "alembic.runtime.migration", "sentence_transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        knowledge = kb or KnowledgeBase(settings.knowledge)
        knowledge.open_index()
        store = SuggestStore(knowledge.store.engine)
        metrics_.track_decision_rates(store.decision_counts)
        app.state.kb = knowledge
        app.state.key_cache = KeyCache(store, settings.app.key_cache_s)
        workflow = Workflow(
            knowledge, WorkflowStore(knowledge.store.engine), norms, clock_, settings.workflow
        )
        app.state.workflow = workflow
        # the intent classifier reads meaning through the shared e5 encoder (rules alone without it)
        encoder = general_encoder(settings.knowledge)
        app.state.intents = (
            intents
            if encoder is None
            else semantic_intents(
                intents,
                encoder.encode_documents,
                encode_one=encoder.encode_query,
                encoder_id=encoder.model_id,
                cache_dir=settings.knowledge.models_dir / "intents",
            )
        )
        app.state.pipeline = SuggestionPipeline(
            knowledge,
            store,
            norms,
            app.state.intents,
            settings.suggest,
            drafter=make_drafter(settings),
            metrics=metrics_,
            clock=clock_,
            workflow=workflow,
        )
        # Everything loaded so far (model, indexes, modules) lives as long as the process: move it out
        # of the cyclic garbage collector's sight, or every full collection walks millions of index
        # objects while requests wait (about a second at 100,000 snippets; docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app made and closed in a longer process (tests, tools) leaves nothing pinned
            if kb is None:
                knowledge.close()

    def provide_kb(request: Request[Any, Any, Any]) -> KnowledgeBase:
        kb_: KnowledgeBase = request.app.state.kb
        return kb_

    def provide_pipeline(request: Request[Any, Any, Any]) -> SuggestionPipeline:
        p: SuggestionPipeline = request.app.state.pipeline
        return p

    def provide_metrics() -> Metrics:
        return metrics_

    def provide_workflow(request: Request[Any, Any, Any]) -> Workflow:
        w: Workflow = request.app.state.workflow
        return w

    return Litestar(
        route_handlers=[
            health,
            metrics,
            KnowledgeController,
            LearningController,
            SuggestionController,
            stream_suggestion,
            WorkflowController,
            check_norms,
            web_router(status_of),
        ],
        template_config=template_config(),
        dependencies={
            "kb": Provide(provide_kb, sync_to_thread=False),
            "pipeline": Provide(provide_pipeline, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
            "workflow": Provide(provide_workflow, sync_to_thread=False),
        },
        middleware=[
            DefineMiddleware(RequestMetrics, metrics=metrics_),
            auth_middleware(settings.app.require_keys, lambda app: app.state.key_cache),
        ],
        lifespan=[lifespan],
        exception_handlers={
            KefuError: _kefu_error,
            NormsError: _kefu_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(title="kefu-assist", version="0.1.0", path="/schema"),
        logging_config=None,  # the service's own configuration (suggest.logs) applies
        debug=False,
    )

"""``POST /v1/suggestions/stream``: the LLM's drafts as server-sent events while it writes them.

Events, in order:

- ``meta``: ``{id, conversation_id, intent, route, escalate, plan, retrieval: {confidence, kb_revision},
  drafter, streaming}`` as soon as the request is prepared (``streaming`` false: no deltas will come);
- ``delta`` (LLM only, any number): ``{index, text}``, the next characters of draft ``index`` as the
  model writes it (unguarded: show it as a preview);
- ``suggestion``: exactly the JSON of ``POST /v1/suggestions`` (guarded, ranked, stored); when the LLM
  failed it carries the template drafts with ``fallback: true`` and the reason;
- ``error`` (only if the suggestion could not be finished): ``{"error": {code, message_zh, message_en}}``.

The request is validated before the stream starts, so bad input gets the ordinary 4xx JSON answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from suggest.auth import AGENTS, allow
from suggest.drafting import DraftCandidate, DrafterError
from suggest.pipeline import Prepared, SuggestionPipeline
from suggest.suggest_api import SuggestionBody

log = logging.getLogger(__name__)


def _event(name: str, data: dict[str, Any]) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=name, data=json.dumps(data, ensure_ascii=False))


def _meta(pipeline: SuggestionPipeline, prep: Prepared, streaming: bool) -> dict[str, Any]:
    label, confidence = prep.intent
    return {
        "id": prep.id,
        "conversation_id": prep.request.conversation_id,
        "intent": {"label": label, "confidence": confidence},
        "route": prep.route,
        "escalate": prep.escalate,
        "plan": {"kind": prep.job.plan.kind, "reason": prep.job.plan.reason},
        "retrieval": {"confidence": prep.retrieval.confidence, "kb_revision": prep.retrieval.kb_revision},
        "drafter": pipeline.drafter.name,
        "streaming": streaming,
    }


async def suggestion_events(
    pipeline: SuggestionPipeline, prep: Prepared
) -> AsyncIterator[ServerSentEventMessage]:
    """The events of one prepared suggestion (see the module docstring)."""
    stream = getattr(pipeline.drafter, "stream", None)
    yield _event("meta", _meta(pipeline, prep, stream is not None))
    cands: list[DraftCandidate] | None
    reason: str | None
    try:
        if stream is None:
            # No streaming drafter (the template drafter, when no LLM is configured): the ordinary
            # drafting, with its own fallback handling, so the result equals POST /v1/suggestions.
            cands, reason = await anyio.to_thread.run_sync(pipeline.draft, prep)
        else:
            cands = None
            reason = None
            t0 = time.perf_counter()
            events = stream(prep.job)
            try:
                async for ev in events:
                    if ev.get("type") == "delta":
                        yield _event("delta", {"index": ev["index"], "text": ev["text"]})
                    elif ev.get("type") == "drafts":
                        cands = list(ev["drafts"])
                if not cands:
                    raise DrafterError("malformed output: the LLM returned no drafts")
            except DrafterError as e:
                reason = str(e) or type(e).__name__
            except Exception as e:  # a bug or an unexpected error: the agent still gets drafts
                log.exception("LLM stream failed unexpectedly")
                reason = f"error: {type(e).__name__}"
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()  # releases the HTTP stream if we stopped early
            if reason is not None:
                log.warning("LLM stream failed, using templates: %s", reason)
                pipeline.metrics.fallback(reason)
                cands = await anyio.to_thread.run_sync(pipeline.template.draft, prep.job)
            prep.timings["draft"] = (time.perf_counter() - t0) * 1000
        assert cands is not None
        drafter = pipeline.template.name if reason is not None else pipeline.drafter.name
        response = await anyio.to_thread.run_sync(pipeline.finish, prep, cands, reason, drafter)
    except Exception:
        log.exception("streamed suggestion %s could not be finished", prep.id)
        yield _event(
            "error",
            {
                "error": {
                    "code": "internal_error",
                    "message_zh": "服务内部错误，已记录日志；请稍后重试",
                    "message_en": "internal error (logged); please try again later",
                }
            },
        )
        return
    yield _event("suggestion", response)


@post("/v1/suggestions/stream", guards=[allow(*AGENTS)], tags=["suggestions"], status_code=200)
async def stream_suggestion(
    data: JSONBody[SuggestionBody], pipeline: NamedDependency[SuggestionPipeline]
) -> ServerSentEvent:
    """Drafts as server-sent events while the LLM writes them: ``meta``, ``delta``..., then ``suggestion``
    (the same JSON as POST /v1/suggestions, guarded and stored)."""
    prep = await anyio.to_thread.run_sync(pipeline.prepare, data.to_request())
    return ServerSentEvent(suggestion_events(pipeline, prep))

"""What the knowledge base learns from the service: candidate similar questions and knowledge gaps.

Editors review the candidates (customer messages whose approved reply cited a snippet) and turn
gaps (escalated and low-confidence questions, grouped) into snippets. The logic lives in
knowledge/candidates.py and knowledge/gaps.py; this controller is HTTP only.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from knowledge.errors import ValidationError
from knowledge.gaps import find_gaps, gap_to_snippet, meaning_embedder
from knowledge.service import KnowledgeBase
from suggest.auth import EDITORS, allow
from suggest.http import caller

#: Who may read candidates and gaps (agents may not: this is content work).
LEARNING_READERS = ("editor", "evaluator", "admin")


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} 必须是整数", f"{name} must be an integer")
    return value


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationError(f"{name} 必须是非空字符串", f"{name} must be a non-empty string")
    return value.strip()


class LearningController(Controller):
    path = "/v1/knowledge"
    tags = ["knowledge"]  # noqa: RUF012 - Litestar reads a plain list

    @get("/candidates", sync_to_thread=True, guards=[allow(*LEARNING_READERS)])
    def list_candidates(
        self,
        kb: NamedDependency[KnowledgeBase],
        status: FromQuery[str] = "pending",
        limit: FromQuery[int] = 50,
    ) -> dict[str, Any]:
        """Candidate similar questions (pending: oldest first; decided: newest first)."""
        items, total = kb.candidates().list(status, limit=limit)
        return {"items": [c.to_dict() for c in items], "total": total}

    @post("/candidates", sync_to_thread=True, status_code=200, guards=[allow(*EDITORS)])
    def decide_candidate(
        self,
        data: JSONBody[dict[str, Any]],
        kb: NamedDependency[KnowledgeBase],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """``{"id", "action": "accept"|"reject", "reason"?}`` decides a candidate; ``{"snippet_id", "text"}``
        adds a similar question directly. Accepting appends it to the snippet, indexed at once."""
        actor = f"key:{caller(request)}"
        cands = kb.candidates()
        if "id" not in data:
            unknown = sorted(set(data) - {"snippet_id", "text"})
            if unknown or "snippet_id" not in data:
                raise ValidationError(
                    "请给出 id 和 action（处理候选问法），或 snippet_id 和 text（直接添加相似问法）",
                    'send {"id", "action"} to decide a candidate, or {"snippet_id", "text"} to add one',
                    details={"unknown_fields": unknown} if unknown else None,
                )
            snippet_id = _text(data.get("snippet_id"), "snippet_id")
            text = _text(data.get("text"), "text")
            assert snippet_id is not None and text is not None
            return cands.add_accepted(snippet_id, text, actor=actor).to_dict()
        unknown = sorted(set(data) - {"id", "action", "reason"})
        if unknown:
            raise ValidationError(f"未知字段：{unknown}", f"unknown fields: {unknown}")
        cid = _int(data.get("id"), "id")
        action = data.get("action")
        reason = _text(data.get("reason"), "reason", required=False)
        if action == "accept":
            return cands.accept(cid, actor=actor, reason=reason).to_dict()
        if action == "reject":
            return cands.reject(cid, actor=actor, reason=reason).to_dict()
        raise ValidationError("action 必须是 accept 或 reject", "action must be accept or reject")

    @get("/gaps", sync_to_thread=True, guards=[allow(*LEARNING_READERS)])
    def list_gaps(
        self,
        kb: NamedDependency[KnowledgeBase],
        limit: FromQuery[int] = 20,
        days: FromQuery[float] = 30,
    ) -> dict[str, Any]:
        """Escalated and low-confidence questions grouped by meaning, biggest first."""
        gaps = find_gaps(
            kb.store, kb.analyzer, meaning_embedder(kb.embedder), days=days, limit=limit, index=kb.index
        )
        return {"items": [g.to_dict() for g in gaps]}

    @post("/gaps/{gap_id:str}/snippet", sync_to_thread=True, guards=[allow(*EDITORS)])
    def gap_snippet(
        self,
        gap_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        kb: NamedDependency[KnowledgeBase],
        request: Request[Any, Any, Any],
        days: FromQuery[float] = 30,
    ) -> Response[dict[str, Any]]:
        """A new snippet that answers the gap (similar questions default to its messages; published
        unless ``status`` says otherwise); the gap's questions are resolved."""
        s = gap_to_snippet(
            kb.store,
            kb.analyzer,
            meaning_embedder(kb.embedder),
            gap_id,
            data,
            actor=f"key:{caller(request)}",
            days=days,
            index=kb.index,
        )
        return Response(s.to_dict(), status_code=201, headers={"ETag": f'"v{s.version}"'})

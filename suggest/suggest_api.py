"""Suggestion endpoints: what the agent console calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import Connection

from knowledge.errors import NotFoundError, ValidationError
from prompts import CheckContext
from suggest.auth import AGENTS, allow
from suggest.drafting import Turn
from suggest.errors import NormsRefused
from suggest.pipeline import SuggestionPipeline, SuggestionRequest


@dataclass
class HistoryTurn:
    role: Literal["customer", "agent"]
    text: str
    at: str | None = None


@dataclass
class Customer:
    id: str | None = None
    name: str | None = None


@dataclass
class SuggestionBody:
    conversation_id: str
    customer_message: str
    history: list[HistoryTurn] = field(default_factory=list)
    customer_waited_s: float | None = None
    n: int | None = None
    channel: str | None = None
    customer: Customer | None = None

    def to_request(self) -> SuggestionRequest:
        return SuggestionRequest(
            conversation_id=self.conversation_id,
            customer_message=self.customer_message,
            history=[Turn(t.role, t.text, t.at) for t in self.history],
            customer_waited_s=self.customer_waited_s,
            n=self.n,
            channel=self.channel,
            customer={"id": self.customer.id, "name": self.customer.name} if self.customer else None,
        )


@dataclass
class DecisionBody:
    action: Literal["approve", "edit", "reject", "write"]
    agent_id: str
    draft_id: str | None = None
    #: edit: the changed draft; write: the agent's own reply (no draft needed)
    final_text: str | None = None
    reason: str | None = None
    #: send although the customer wrote again after this suggestion (else 409 stale_suggestion)
    confirm_stale: bool = False
    #: answer a conversation another agent claimed, taking it over (else 409 claimed_by_other)
    take_over: bool = False
    #: open an escalation with this reply (None: if the sent draft is an escalate draft)
    escalate: bool | None = None
    #: the department the message goes to with this reply ("" none; None: the sent draft's routing)
    route_to: str | None = None


class SuggestionController(Controller):
    path = "/v1/suggestions"
    tags = ["suggestions"]  # noqa: RUF012 - Litestar reads a plain list
    guards = [allow(*AGENTS)]  # noqa: RUF012

    @post("/", status_code=201)
    async def suggest(
        self, data: JSONBody[SuggestionBody], pipeline: NamedDependency[SuggestionPipeline]
    ) -> dict[str, Any]:
        """Drafts for the customer's message: retrieved snippets, norms-guarded replies, intent and route."""
        req = data.to_request()
        if pipeline.offline:
            # The template drafter only computes (a few ms of CPU, no waiting on the network): run it on
            # the event loop. A hop to a worker thread costs more than it saves, and several threads of
            # one process only take turns with the interpreter lock (docs/benchmarks.md).
            return pipeline.suggest(req)
        return await anyio.to_thread.run_sync(pipeline.suggest, req)  # waits for the LLM

    @get("/{suggestion_id:str}", sync_to_thread=True)
    def show(
        self, suggestion_id: FromPath[str], pipeline: NamedDependency[SuggestionPipeline]
    ) -> dict[str, Any]:
        """A stored suggestion with its drafts (e.g. the draft an escalation's answer brought back)."""
        return pipeline.store.suggestion(suggestion_id)

    @post("/{suggestion_id:str}/decision", sync_to_thread=True, status_code=201)
    def decide(
        self,
        suggestion_id: FromPath[str],
        data: JSONBody[DecisionBody],
        pipeline: NamedDependency[SuggestionPipeline],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """The agent approves, edits or rejects a draft, or writes a reply of their own (``write``); the
        reply sent is checked against the norms. 409 ``stale_suggestion`` when the customer wrote again
        since (with the newer messages; ``confirm_stale`` sends anyway), ``claimed_by_other`` when another
        agent holds the conversation (``take_over``), ``already_decided``."""
        return record_decision(pipeline, suggestion_id, data)


def record_decision(pipeline: SuggestionPipeline, suggestion_id: str, data: DecisionBody) -> dict[str, Any]:
    """Check and store a decision (see DecisionBody); queue items and escalations follow what is sent."""
    agent = data.agent_id.strip()
    if not agent or len(data.agent_id) > 128:
        raise ValidationError("agent_id 必须是 1 到 128 个字符", "agent_id must be 1 to 128 characters")
    sug = pipeline.store.suggestion(suggestion_id)
    drafts = {d["id"]: d for d in sug["drafts"]}
    if data.draft_id is not None and data.draft_id not in drafts:
        known = ", ".join(drafts)
        raise NotFoundError(
            f"建议 {suggestion_id} 中没有草稿 {data.draft_id}（它的草稿：{known}）",
            f"suggestion has no draft {data.draft_id!r} (its drafts: {known})",
        )
    final_text = _final_text(pipeline, data, drafts)
    workflow = pipeline.workflow
    route_to = _route_to(pipeline, data.route_to)
    violations: list[dict[str, Any]] = []
    if final_text is not None:
        ctx = CheckContext(
            first_reply=bool(sug.get("first_reply")),
            customer_waited_s=sug.get("customer_waited_s"),
            greeted=not sug.get("first_reply", True),  # a later reply must not greet again (issue 19)
        )
        # checked by the norms of the customer's language (an English conversation: norms_en)
        norms = pipeline.norms_by_language.get(sug.get("language") or "", pipeline.norms)
        found = norms.check(final_text, ctx)
        violations = [v.to_dict() for v in found]
        errors = [v for v in found if v.severity == "error"]
        if errors and pipeline.settings.refuse_error_level:
            raise NormsRefused(
                "回复违反了服务规范：" + "；".join(v.message for v in errors) + "。请修改后再发送",
                "the reply breaks the service norms ("
                + ", ".join(v.rule_id for v in errors)
                + "); fix it and send again",
                details=violations,
            )
    at = pipeline.clock.now()
    conv = pipeline.store.conversation(sug["conversation_id"])
    draft_kind = drafts[data.draft_id]["kind"] if data.draft_id is not None else None
    opened: dict[str, Any] = {}

    def also(conn: Connection, settles: bool) -> None:
        if workflow is not None:
            opened.update(
                workflow.on_decision(
                    conn,
                    suggestion={**sug, "id": suggestion_id},
                    action=data.action,
                    final_text=final_text,
                    agent_id=agent,
                    draft_kind=draft_kind if data.action != "write" else None,
                    escalate=data.escalate,
                    route_to=route_to,
                    started_at=conv.created_at if conv else None,
                    at=at,
                )
            )

    out = pipeline.store.record_decision(
        suggestion_id=suggestion_id,
        conversation_id=sug["conversation_id"],
        action=data.action,
        draft_id=data.draft_id,
        final_text=final_text,
        agent_id=agent,
        reason=data.reason,
        violations=violations,
        at=at,
        suggestion_at=_parse_iso(sug.get("customer_at")),
        confirm_stale=data.confirm_stale,
        take_over=data.take_over,
        also=also,
    )
    pipeline.metrics.decision(data.action)
    out.update({"final_text": final_text, "violations": violations, "draft_id": data.draft_id, **opened})
    return out


def _final_text(pipeline: SuggestionPipeline, data: DecisionBody, drafts: dict[str, Any]) -> str | None:
    if data.action == "approve":
        if data.draft_id is None:
            raise ValidationError("批准时必须给出 draft_id", "approve needs draft_id")
        return str(drafts[data.draft_id]["text"])
    if data.action == "reject":
        if not (data.reason or "").strip():
            raise ValidationError("拒绝时请写明原因（reason）", "reject needs a reason")
        return None
    text = (data.final_text or "").strip()
    if not text:
        raise ValidationError(
            "请给出 final_text（发送给客户的文字）", f"{data.action} needs final_text (the reply sent)"
        )
    if len(text) > pipeline.settings.max_message_chars:
        raise ValidationError("final_text 太长", "final_text is too long")
    return text


def _route_to(pipeline: SuggestionPipeline, value: str | None) -> str | None:
    """``route_to`` checked against the norms' departments ("" stays "": route nowhere)."""
    if value is None or value == "" or pipeline.workflow is None:
        return value
    known = pipeline.workflow.departments()
    if value not in known:
        raise ValidationError(
            f"route_to 必须是 {'、'.join(known)} 之一（或空）",
            f"route_to must be one of {', '.join(known)} (or empty)",
        )
    return value


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None

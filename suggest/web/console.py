"""Fragments of the agent console: the conversation list, one conversation with its drafts and its
lifecycle (claim, take over, transfer, close), the decision or the agent's own reply, the live norms
check while editing, the auto-reply state and the escalations/queues tab.

They call the same services as the JSON API (pipeline, workflow, ``record_decision``), so a decision
made in the browser is stored, checked and counted exactly like one made over the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Template

from knowledge.errors import NotFoundError, ValidationError
from prompts import CheckContext
from suggest.auth import allow
from suggest.errors import StaleSuggestion
from suggest.http import caller
from suggest.norms_api import check_text, suggestion_context
from suggest.pipeline import SuggestionPipeline, SuggestionRequest
from suggest.suggest_api import DecisionBody, record_decision
from suggest.web.common import CONSOLE_ROLES, QUEUE_ROLES, lang_of, render, role_of
from suggest.web.queries import conversation_list, conversation_stamp, conversation_view, workflow_labels
from suggest.workflow import Workflow

FORM = Body(media_type=RequestEncodingType.URL_ENCODED)


@dataclass
class MessageForm:
    message: str
    conversation_id: str = ""
    customer_name: str = ""


@dataclass
class DecisionForm:
    suggestion_id: str
    action: str
    draft_id: str = ""
    final_text: str = ""
    reason: str = ""
    escalate: str = ""  # "1": the own reply passes the question to the responsible colleague
    route_to: str = ""  # a department for the own reply ("": none)


@dataclass
class TransferForm:
    to: str = ""


@dataclass
class CloseForm:
    survey: str = "1"


@dataclass
class CheckForm:
    final_text: str = ""
    suggestion_id: str = ""


@dataclass
class ResolveForm:
    answer: str = ""


@dataclass
class DoneForm:
    note: str = ""


class ConsoleFragments(Controller):
    path = "/ui/console"
    include_in_schema = False

    @get("/status", sync_to_thread=True, guards=[allow(*QUEUE_ROLES)])
    def status(self, request: Request[Any, Any, Any], workflow: NamedDependency[Workflow]) -> Template:
        """Working hours, waiting customers and whether the automatic reply answers now."""
        return render(
            request,
            "fragments/status.html",
            state=workflow.auto_reply(),
            hours=workflow.norms.hours.describe(),
            wait_limit_s=workflow.norms.wait_limit_s,
        )

    @get("/conversations", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)])
    def conversations(self, request: Request[Any, Any, Any], workflow: NamedDependency[Workflow]) -> Template:
        rows = conversation_list(workflow.kb.store.engine, workflow.clock.now(), workflow.norms.wait_limit_s)
        return render(
            request,
            "fragments/conversations.html",
            rows=rows,
            wait_limit_s=workflow.norms.wait_limit_s,
            me=caller(request),
            **workflow_labels(lang_of(request)),
        )

    @get("/conversations/{conversation_id:str}", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)])
    def conversation(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        return self._view(request, workflow, conversation_id)

    @post("/messages", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)], status_code=200)
    def message(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[MessageForm, FORM],
        pipeline: NamedDependency[SuggestionPipeline],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        """A customer's message (typed here for a demo or a phone call): drafts are made at once."""
        conversation_id = data.conversation_id.strip() or f"web-{uuid.uuid4().hex[:8]}"
        name = data.customer_name.strip() or None
        pipeline.suggest(
            SuggestionRequest(
                conversation_id=conversation_id,
                customer_message=data.message.strip(),
                channel="web-console",
                customer={"id": None, "name": name} if name else None,
            )
        )
        return self._view(request, workflow, conversation_id, trigger="kefu:changed")

    @post("/decide", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)], status_code=200)
    def decide(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[DecisionForm, FORM],
        pipeline: NamedDependency[SuggestionPipeline],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        """Approve, edit or reject a draft; the agent is the signed-in key."""
        if data.action not in ("approve", "edit", "reject", "write"):
            raise ValidationError(
                "操作必须是批准、修改、拒绝或自己撰写", "action must be approve, edit, reject or write"
            )
        writes = data.action == "write"
        body = DecisionBody(
            action=data.action,  # type: ignore[arg-type]
            agent_id=caller(request),
            draft_id=(data.draft_id or None) if not writes else None,
            final_text=data.final_text if data.action in ("edit", "write") else None,
            reason=data.reason if data.action == "reject" else None,
            escalate=True if writes and data.escalate else None,
            route_to=(data.route_to or None) if writes else None,
        )
        conversation_id = pipeline.store.suggestion(data.suggestion_id)["conversation_id"]
        try:
            out = record_decision(pipeline, data.suggestion_id, body)
        except StaleSuggestion as e:
            # Never send a draft written for an older message: show the newer one and its drafts, and
            # keep what the agent typed so that nothing is lost.
            return self._view(
                request,
                workflow,
                conversation_id,
                trigger="kefu:changed",
                stale={"newer": (e.details or {}).get("newer_messages", []), "text": body.final_text or ""},
            )
        return self._view(request, workflow, conversation_id, trigger="kefu:changed", decided=out)

    @get("/conversations/{conversation_id:str}/stamp", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)])
    def stamp(self, conversation_id: FromPath[str], workflow: NamedDependency[Workflow]) -> Response[str]:
        """Polled by the open conversation every few seconds: a new value means "fetch the view again"."""
        return Response(
            conversation_stamp(workflow.kb.store.engine, conversation_id),
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )

    @post(
        "/conversations/{conversation_id:str}/claim",
        sync_to_thread=True,
        guards=[allow(*CONSOLE_ROLES)],
        status_code=200,
    )
    def claim(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        workflow.desk.claim(conversation_id, caller(request), workflow.clock.now())
        return self._view(request, workflow, conversation_id, trigger="kefu:changed")

    @post(
        "/conversations/{conversation_id:str}/take-over",
        sync_to_thread=True,
        guards=[allow(*CONSOLE_ROLES)],
        status_code=200,
    )
    def take_over(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        """After the warning: the agent takes over a conversation a colleague claimed."""
        me = caller(request)
        workflow.desk.transfer(
            conversation_id, by=me, to=me, at=workflow.clock.now(), may_override=True, note="take over"
        )
        return self._view(request, workflow, conversation_id, trigger="kefu:changed")

    @post(
        "/conversations/{conversation_id:str}/transfer",
        sync_to_thread=True,
        guards=[allow(*CONSOLE_ROLES)],
        status_code=200,
    )
    def transfer(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        data: Annotated[TransferForm, FORM],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        workflow.desk.transfer(
            conversation_id,
            by=caller(request),
            to=data.to.strip(),
            at=workflow.clock.now(),
            may_override=role_of(request) == "admin",
            note=None,
        )
        return self._view(request, workflow, conversation_id, trigger="kefu:changed")

    @post(
        "/conversations/{conversation_id:str}/close",
        sync_to_thread=True,
        guards=[allow(*CONSOLE_ROLES)],
        status_code=200,
    )
    def close(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        data: Annotated[CloseForm, FORM],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        """End the conversation with the satisfaction survey (the norms' closing) and complete the record."""
        workflow.close(
            conversation_id,
            by=caller(request),
            survey=data.survey == "1",
            may_override=role_of(request) == "admin",
            note=None,
        )
        return self._view(request, workflow, conversation_id, trigger="kefu:changed")

    @post("/check", sync_to_thread=True, guards=[allow(*CONSOLE_ROLES)], status_code=200)
    def check(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[CheckForm, FORM],
        pipeline: NamedDependency[SuggestionPipeline],
    ) -> Template:
        """The norms badge of the text being edited (called as the agent types)."""
        ctx = suggestion_context(pipeline, data.suggestion_id) if data.suggestion_id else CheckContext()
        return render(request, "fragments/norm_badge.html", result=check_text(pipeline, data.final_text, ctx))

    @get("/queues", sync_to_thread=True, guards=[allow(*QUEUE_ROLES)])
    def queues(self, request: Request[Any, Any, Any], workflow: NamedDependency[Workflow]) -> Template:
        """Open escalations and the departments' routed complaints, suggestions and customer information."""
        return self._queues(request, workflow)

    @post("/escalations/{escalation_id:str}/resolve", sync_to_thread=True, guards=[allow(*QUEUE_ROLES)])
    def resolve(
        self,
        request: Request[Any, Any, Any],
        escalation_id: FromPath[str],
        data: Annotated[ResolveForm, FORM],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        workflow.resolve(escalation_id, answer=data.answer, by=caller(request))
        return self._queues(request, workflow, done=escalation_id)

    @post("/queues/{item_id:str}/done", sync_to_thread=True, guards=[allow(*QUEUE_ROLES)])
    def queue_done(
        self,
        request: Request[Any, Any, Any],
        item_id: FromPath[str],
        data: Annotated[DoneForm, FORM],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        for department in workflow.departments():
            if any(i["id"] == item_id for i in workflow.store.queue(department, "open")):
                workflow.store.queue_done(
                    department,
                    item_id,
                    by=caller(request),
                    at=workflow.clock.now(),
                    note=data.note.strip() or None,
                )
                return self._queues(request, workflow, done=item_id)
        raise NotFoundError(f"没有待办 {item_id}（或已处理）", f"no open item {item_id!r}")

    # -- helpers ---------------------------------------------------------------------------------

    def _queues(
        self, request: Request[Any, Any, Any], workflow: Workflow, done: str | None = None
    ) -> Template:
        return render(
            request,
            "fragments/queues.html",
            escalations=workflow.escalations("open"),
            queues=[(d, workflow.store.queue(d, "open")) for d in workflow.departments()],
            zone=workflow.norms.hours.zone,
            done=done,
            **workflow_labels(lang_of(request)),
        )

    def _view(
        self,
        request: Request[Any, Any, Any],
        workflow: Workflow,
        conversation_id: str,
        *,
        trigger: str | None = None,
        decided: dict[str, Any] | None = None,
        stale: dict[str, Any] | None = None,
    ) -> Template:
        view = conversation_view(workflow.kb.store.engine, conversation_id, workflow.clock.now())
        if view is None:
            raise NotFoundError(
                f"会话 {conversation_id} 不存在", f"conversation {conversation_id!r} does not exist"
            )
        return render(
            request,
            "fragments/conversation.html",
            headers={"HX-Trigger": trigger} if trigger else None,
            view=view,
            decided=decided,
            stale=stale,
            me=caller(request),
            departments=workflow.departments(),
            **workflow_labels(lang_of(request)),
            zone=workflow.norms.hours.zone,
            wait_limit_s=workflow.norms.wait_limit_s,
        )

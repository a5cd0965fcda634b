"""Workflow endpoints: waiting customers, auto-reply, offline messages, escalations, department queues,
outage recovery, service records and satisfaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from knowledge.errors import ValidationError
from suggest.auth import AGENTS, READERS, allow
from suggest.http import caller, if_match, stale_is_412
from suggest.pipeline import SuggestionPipeline
from suggest.records_export import to_csv, to_xlsx
from suggest.workflow import Workflow

EDIT_ROLES = ("agent", "editor", "admin")
RECORD_READERS = ("agent", "evaluator", "admin")


def role_of(request: Request[Any, Any, Any]) -> str | None:
    """The role of the API key that made the request (admins may transfer and close any conversation)."""
    return getattr(request.scope.get("user"), "role", None)


def _parse_at(value: str | None, field_name: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValidationError(
            f"{field_name} 不是有效的 ISO 8601 时间（例如 2026-11-26T09:30:00+08:00）",
            f"{field_name} is not an ISO 8601 time (e.g. 2026-11-26T09:30:00+08:00)",
        ) from e
    return at


def _day_bounds(
    workflow: Workflow, start: str | None, end: str | None
) -> tuple[datetime | None, datetime | None]:
    """``from``/``to`` are dates (service time zone, both inclusive) or ISO times."""
    zone = workflow.norms.hours.zone

    def parse(value: str | None, name: str, end_of_day: bool) -> datetime | None:
        if value is None:
            return None
        try:
            d = date.fromisoformat(value)
        except ValueError:
            at = _parse_at(value, name)
            return at if at is None or at.tzinfo else at.replace(tzinfo=zone)
        moment = datetime.combine(d + timedelta(days=1) if end_of_day else d, time(0), tzinfo=zone)
        return moment

    lo, hi = parse(start, "from", False), parse(end, "to", True)
    if lo and hi and lo >= hi:
        raise ValidationError("from 必须早于 to", "from must be before to")
    return lo, hi


@dataclass
class SatisfactionBody:
    score: int
    comment: str | None = None


@dataclass
class TransferBody:
    #: the colleague's name (their API key's name, as the console shows it)
    to: str
    note: str | None = None


@dataclass
class CloseBody:
    #: send the norms' closing with the satisfaction survey as the last message
    survey: bool = True
    note: str | None = None


@dataclass
class EscalationBody:
    conversation_id: str
    question: str
    responsible: str | None = None


@dataclass
class ResolveBody:
    answer: str


@dataclass
class DoneBody:
    note: str | None = None


@dataclass
class RecoveryBody:
    #: What happened, in the customer's words (e.g. 系统故障, 网络中断, 停电).
    cause: str = "系统故障"
    conversation_ids: list[str] = field(default_factory=list)


class WorkflowController(Controller):
    path = "/v1"
    tags = ["workflow"]  # noqa: RUF012 - Litestar reads a plain list

    @get("/conversations", sync_to_thread=True, guards=[allow(*AGENTS)])
    def conversations(
        self, workflow: NamedDependency[Workflow], status: FromQuery[Literal["waiting"]] = "waiting"
    ) -> dict[str, Any]:
        """Conversations whose customers wait for an answer, longest-waiting first, with the waiting time."""
        items = workflow.waiting()
        return {
            "status": status,
            "count": len(items),
            "items": items,
            "wait_limit_s": workflow.norms.wait_limit_s,
        }

    @get("/conversations/{conversation_id:str}", sync_to_thread=True, guards=[allow(*AGENTS)])
    def conversation(
        self, conversation_id: FromPath[str], workflow: NamedDependency[Workflow]
    ) -> dict[str, Any]:
        """A conversation's lifecycle: status (open, claimed, closed), owner, and who did what when."""
        return workflow.desk.lifecycle(conversation_id)

    @post(
        "/conversations/{conversation_id:str}/claim",
        sync_to_thread=True,
        guards=[allow(*AGENTS)],
        status_code=200,
    )
    def claim(
        self,
        conversation_id: FromPath[str],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """The caller takes the conversation; 409 ``claimed_by_other`` if a colleague has it."""
        return workflow.desk.claim(conversation_id, caller(request), workflow.clock.now())

    @post(
        "/conversations/{conversation_id:str}/transfer",
        sync_to_thread=True,
        guards=[allow(*AGENTS)],
        status_code=200,
    )
    def transfer(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[TransferBody],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """Hand the conversation to a colleague (its owner, or an admin)."""
        return workflow.desk.transfer(
            conversation_id,
            by=caller(request),
            to=data.to.strip(),
            at=workflow.clock.now(),
            may_override=role_of(request) == "admin",
            note=(data.note or "").strip() or None,
        )

    @post(
        "/conversations/{conversation_id:str}/close",
        sync_to_thread=True,
        guards=[allow(*AGENTS)],
        status_code=200,
    )
    def close(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[CloseBody],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """End the conversation: the closing with the satisfaction survey is sent, the record completed."""
        return workflow.close(
            conversation_id,
            by=caller(request),
            survey=data.survey,
            may_override=role_of(request) == "admin",
            note=(data.note or "").strip() or None,
        )

    @post(
        "/conversations/{conversation_id:str}/satisfaction",
        sync_to_thread=True,
        guards=[allow(*AGENTS)],
        status_code=200,
    )
    def satisfaction(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[SatisfactionBody],
        workflow: NamedDependency[Workflow],
    ) -> dict[str, Any]:
        """The customer's rating (1-5) of the conversation, stored in its service record."""
        comment = (data.comment or "").strip() or None
        return workflow.store.set_satisfaction(conversation_id, data.score, comment, workflow.clock.now())

    @get("/auto-reply", sync_to_thread=True, guards=[allow(*READERS)])
    def auto_reply(
        self, workflow: NamedDependency[Workflow], at: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        """Whether an automatic reply is due (outside working hours, or agents busy) and its text."""
        return workflow.auto_reply(_parse_at(at, "at"))

    @get("/offline-messages", sync_to_thread=True, guards=[allow(*AGENTS)])
    def offline_messages(
        self, pipeline: NamedDependency[SuggestionPipeline], include_done: FromQuery[bool] = False
    ) -> dict[str, Any]:
        """Messages left while the service was closed, oldest first, with their drafts ready."""
        items = pipeline.store.offline_suggestions(include_decided=include_done)
        return {"count": len(items), "items": items}

    @get("/escalations", sync_to_thread=True, guards=[allow(*EDIT_ROLES)])
    def escalations(
        self,
        workflow: NamedDependency[Workflow],
        status: FromQuery[Literal["open", "resolved", "all"]] = "open",
    ) -> dict[str, Any]:
        """Questions passed to the responsible colleague; open ones older than the limit are ``overdue``."""
        items = workflow.escalations(None if status == "all" else status)
        return {"count": len(items), "overdue": sum(1 for e in items if e["overdue"]), "items": items}

    @post("/escalations", sync_to_thread=True, guards=[allow(*AGENTS)], status_code=201)
    def escalate(
        self,
        data: JSONBody[EscalationBody],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """An agent passes a question to the responsible colleague by hand."""
        question = data.question.strip()
        if not question or len(question) > 4000:
            raise ValidationError("问题必须是 1 到 4000 个字符", "question must be 1 to 4000 characters")
        if not data.conversation_id.strip() or len(data.conversation_id) > 128:
            raise ValidationError(
                "conversation_id 必须是 1 到 128 个字符", "conversation_id must be 1 to 128 characters"
            )
        eid = workflow.store.add_escalation(
            None,
            conversation_id=data.conversation_id,
            question=question,
            responsible=(data.responsible or "").strip() or workflow.norms.routing.escalation_responsible,
            at=workflow.clock.now(),
            created_by=caller(request),
        )
        return workflow.store.escalation(eid)

    @post(
        "/escalations/{escalation_id:str}/resolve",
        sync_to_thread=True,
        guards=[allow(*EDIT_ROLES)],
        status_code=200,
    )
    def resolve(
        self,
        escalation_id: FromPath[str],
        data: JSONBody[ResolveBody],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """The answer is recorded and offered to content staff as a draft snippet."""
        return workflow.resolve(escalation_id, answer=data.answer, by=caller(request))

    @get("/queues/{department:str}", sync_to_thread=True, guards=[allow(*EDIT_ROLES)])
    def queue(
        self,
        department: FromPath[str],
        workflow: NamedDependency[Workflow],
        status: FromQuery[Literal["open", "done", "all"]] = "open",
    ) -> dict[str, Any]:
        """A department's items (complaints to after-sales, suggestions and customer information to sales)."""
        items = workflow.store.queue(department, None if status == "all" else status)
        return {"department": department, "count": len(items), "items": items}

    @post(
        "/queues/{department:str}/{item_id:str}/done",
        sync_to_thread=True,
        guards=[allow(*EDIT_ROLES)],
        status_code=200,
    )
    def queue_done(
        self,
        department: FromPath[str],
        item_id: FromPath[str],
        data: JSONBody[DoneBody],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        return workflow.store.queue_done(
            department,
            item_id,
            by=caller(request),
            at=workflow.clock.now(),
            note=(data.note or "").strip() or None,
        )

    @post("/recovery", sync_to_thread=True, guards=[allow(*AGENTS)], status_code=201)
    def recovery(
        self,
        data: JSONBody[RecoveryBody],
        pipeline: NamedDependency[SuggestionPipeline],
        workflow: NamedDependency[Workflow],
    ) -> dict[str, Any]:
        """After a crash, power cut or disconnection: for every conversation left waiting, drafts that
        explain and apologise before answering the customer's last message."""
        cause = data.cause.strip()
        if not cause or len(cause) > 50:
            raise ValidationError("cause 必须是 1 到 50 个字符", "cause must be 1 to 50 characters")
        waiting = workflow.waiting()
        if data.conversation_ids:
            wanted = set(data.conversation_ids)
            waiting = [w for w in waiting if w["conversation_id"] in wanted]
        out = [pipeline.recover(w["conversation_id"], cause=cause) for w in waiting]
        return {"count": len(out), "cause": cause, "items": out}

    @get("/records", sync_to_thread=True, guards=[allow(*RECORD_READERS)])
    def records(
        self,
        workflow: NamedDependency[Workflow],
        start: Annotated[str | None, QueryParameter(name="from")] = None,
        end: Annotated[str | None, QueryParameter(name="to")] = None,
        agent: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Service records (在线客服受理记录) of the conversations started in [from, to], optionally of one
        agent and one status; ``turns`` lists every customer message with its intent and final answer."""
        lo, hi = _day_bounds(workflow, start, end)
        items = workflow.store.records(lo, hi, agent=agent or None, status=status or None)
        return {"from": start, "to": end, "count": len(items), "items": items}

    @get("/records/export", sync_to_thread=True, guards=[allow(*RECORD_READERS)])
    def export(
        self,
        workflow: NamedDependency[Workflow],
        format: FromQuery[Literal["csv", "xlsx"]] = "xlsx",
        start: Annotated[str | None, QueryParameter(name="from")] = None,
        end: Annotated[str | None, QueryParameter(name="to")] = None,
        agent: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The records as CSV or XLSX (Chinese headers; XLSX: a summary sheet and one sheet per day)."""
        lo, hi = _day_bounds(workflow, start, end)
        items = workflow.store.records(lo, hi, agent=agent or None, status=status or None)
        zone = workflow.norms.hours.zone
        name = f"kefu-records-{start or 'all'}-{end or 'all'}.{format}"
        if format == "csv":
            body, media = to_csv(items, zone), "text/csv; charset=utf-8"
        else:
            title = f"{workflow.norms.routing.record_form}（{start or '…'} ~ {end or '…'}）"
            body = to_xlsx(items, zone, title=title)
            media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        return Response(
            body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @get("/records/{conversation_id:str}", sync_to_thread=True, guards=[allow(*RECORD_READERS)])
    def record(
        self, conversation_id: FromPath[str], workflow: NamedDependency[Workflow]
    ) -> Response[dict[str, Any]]:
        rec = workflow.store.record(conversation_id)
        return Response(rec, headers={"ETag": f'"v{rec["version"]}"'})

    @patch("/records/{conversation_id:str}", sync_to_thread=True, guards=[allow(*AGENTS)])
    def edit_record(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        workflow: NamedDependency[Workflow],
        request: Request[Any, Any, Any],
    ) -> Response[dict[str, Any]]:
        """An agent corrects or completes the record; If-Match must carry the ETag read."""
        version = if_match(request)
        with stale_is_412():
            rec = workflow.store.edit_record(
                conversation_id, data, expected_version=version, at=workflow.clock.now()
            )
        return Response(rec, headers={"ETag": f'"v{rec["version"]}"'})

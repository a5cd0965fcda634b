"""Storage of the seed's workflow: escalations, department queues and service records (受理记录)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, or_, select

from knowledge import schema as kt
from knowledge.direct import DirectStatement
from knowledge.errors import ConflictError, NotFoundError, ValidationError
from knowledge.store import writing
from suggest import schema as t

#: Record fields an agent may edit by hand (then automatic updates leave them alone).
EDITABLE_RECORD_FIELDS = (
    "customer_name",
    "intent",
    "summary",
    "final_reply",
    "agent_id",
    "routed_to",
    "escalated",
    "status",
    "satisfaction",
    "satisfaction_comment",
    "notes",
)
RECORD_STATUSES = ("open", "waiting", "answer_ready", "answered", "closed")
SUMMARY_CHARS = 300
#: Intents of messages that are no question (在吗, 谢谢): they count only while nothing else was asked.
NOT_QUESTIONS = ("chit_chat", "closing")


def aware(dt: datetime | None) -> datetime | None:
    """Times read back from SQLite have no zone: they were stored in UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def iso(dt: datetime | None) -> str | None:
    dt = aware(dt)
    return dt.isoformat() if dt else None


@dataclass(frozen=True)
class RecordEvent:
    """What happened in a conversation that the record should reflect (None: unchanged)."""

    at: datetime
    customer_id: str | None = None
    customer_name: str | None = None
    channel: str | None = None
    intent: str | None = None
    summary: str | None = None
    final_reply: str | None = None
    agent_id: str | None = None
    routed_to: str | None = None
    escalated: bool | None = None
    first_response_s: float | None = None
    status: str | None = None
    satisfaction: int | None = None
    satisfaction_comment: str | None = None
    closed_at: datetime | None = None
    #: A new customer message: (suggestion id, the message, its intent) becomes a turn of the record.
    question: tuple[str, str, str] | None = None
    #: The suggestion a reply answers, and the reply (its turn's final answer; the last one sent wins).
    answer_to: str | None = None
    answer: str | None = None
    #: The turn of ``answer_to`` was escalated / routed (set when the agent sent it).
    turn_escalated: bool | None = None
    turn_routed_to: str | None = None
    #: The responsible colleague's answer to the turn's escalation (a draft ready to send).
    escalation_answer: str | None = None


#: RecordEvent fields that describe a turn, not a column.
_TURN_FIELDS = ("question", "answer_to", "answer", "turn_escalated", "turn_routed_to", "escalation_answer")


# The writes of every suggestion's transaction (knowledge.direct).
_INSERT_ESCALATION = DirectStatement.insert(t.escalations)
_INSERT_QUEUE_ITEM = DirectStatement.insert(t.queue_items)
_INSERT_RECORD = DirectStatement.insert(t.service_records)
_RECORD_STATE = DirectStatement.select_by(
    t.service_records, "conversation_id", ["edited_fields", "first_response_s", "turns"]
)


class WorkflowStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the tables are created by SuggestStore's migrations

    # -- escalations ----------------------------------------------------------------------------

    def add_escalation(
        self,
        conn: Connection | None,
        *,
        conversation_id: str,
        question: str,
        responsible: str,
        at: datetime,
        created_by: str,
        suggestion_id: str | None = None,
    ) -> str:
        eid = uuid.uuid4().hex[:16]
        values = {
            "id": eid,
            "conversation_id": conversation_id,
            "suggestion_id": suggestion_id,
            "question": question,
            "responsible": responsible,
            "status": "open",
            "created_at": at,
            "created_by": created_by,
        }
        if conn is not None:
            _INSERT_ESCALATION.execute(conn, values)
        else:
            with writing(self.engine) as c:
                _INSERT_ESCALATION.execute(c, values)
        return eid

    def escalations(self, status: str | None = None) -> list[dict[str, Any]]:
        stmt = (
            select(t.escalations, t.conversations.c.customer_name)
            .select_from(_with_customer(t.escalations))
            .order_by(t.escalations.c.created_at)
        )
        if status:
            stmt = stmt.where(t.escalations.c.status == status)
        with self.engine.connect() as conn:
            return [_escalation(r) for r in conn.execute(stmt)]

    def escalation(self, escalation_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.escalations, t.conversations.c.customer_name)
                .select_from(_with_customer(t.escalations))
                .where(t.escalations.c.id == escalation_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"转交记录 {escalation_id} 不存在", f"escalation {escalation_id!r} does not exist"
            )
        return _escalation(row)

    def open_escalation_for(self, conn: Connection, suggestion_id: str) -> bool:
        e = t.escalations.c
        return (
            conn.execute(
                select(e.id).where(e.suggestion_id == suggestion_id, e.status == "open").limit(1)
            ).first()
            is not None
        )

    def conversation_exists(self, conn: Connection, conversation_id: str) -> bool:
        c = t.conversations.c
        return conn.execute(select(c.id).where(c.id == conversation_id)).first() is not None

    def add_ready_suggestion(
        self, conn: Connection, response: dict[str, Any], *, question: str, at: datetime
    ) -> None:
        """A suggestion made without a customer message (an escalation's answer): the conversation shows
        its draft next, opens again if it was closed, and counts as waiting for that answer."""
        c = t.conversations.c
        conn.execute(
            t.suggestions.insert().values(
                id=response["id"],
                conversation_id=response["conversation_id"],
                customer_message=question,
                created_at=at,
                intent=response["intent"]["label"],
                intent_confidence=response["intent"]["confidence"],
                route=None,
                escalate=False,
                fallback=False,
                drafter=response["drafter"],
                kb_revision=0,
                response=json.dumps(response, ensure_ascii=False),
                offline=False,
                customer_at=at,
            )
        )
        conn.execute(
            t.conversations.update()
            .where(c.id == response["conversation_id"])
            .values(
                updated_at=at,
                waiting_since=func.coalesce(c.waiting_since, at),
                status=case((c.status == "closed", "open"), else_=c.status),
                owner=case((c.status == "closed", None), else_=c.owner),
            )
        )

    def resolve_escalation(
        self,
        escalation_id: str,
        *,
        answer: str,
        by: str,
        at: datetime,
        snippet_id: str | None,
        also: Callable[[Connection], None] | None = None,
    ) -> dict[str, Any]:
        with writing(self.engine) as conn:
            n = conn.execute(
                t.escalations.update()
                .where(t.escalations.c.id == escalation_id, t.escalations.c.status == "open")
                .values(
                    status="resolved", resolved_at=at, resolved_by=by, answer=answer, snippet_id=snippet_id
                )
            ).rowcount
            if n and also is not None:
                also(conn)
        if not n:
            current = self.escalation(escalation_id)  # raises NotFound
            raise ConflictError(
                f"转交记录 {escalation_id} 已于 {current['resolved_at']} 处理",
                f"escalation {escalation_id!r} was already resolved at {current['resolved_at']}",
            )
        return self.escalation(escalation_id)

    # -- department queues ----------------------------------------------------------------------

    def add_queue_item(
        self,
        conn: Connection,
        *,
        department: str,
        kind: str,
        conversation_id: str,
        message: str,
        at: datetime,
        suggestion_id: str | None,
    ) -> str:
        qid = uuid.uuid4().hex[:16]
        _INSERT_QUEUE_ITEM.execute(
            conn,
            dict(
                id=qid,
                department=department,
                kind=kind,
                conversation_id=conversation_id,
                suggestion_id=suggestion_id,
                message=message,
                status="open",
                created_at=at,
            ),
        )
        return qid

    def queue(self, department: str, status: str | None = "open") -> list[dict[str, Any]]:
        stmt = (
            select(t.queue_items, t.conversations.c.customer_name)
            .select_from(_with_customer(t.queue_items))
            .where(t.queue_items.c.department == department)
            .order_by(t.queue_items.c.created_at)
        )
        if status:
            stmt = stmt.where(t.queue_items.c.status == status)
        with self.engine.connect() as conn:
            return [_queue_item(r) for r in conn.execute(stmt)]

    def queue_done(
        self, department: str, item_id: str, *, by: str, at: datetime, note: str | None
    ) -> dict[str, Any]:
        with writing(self.engine) as conn:
            row = conn.execute(
                select(t.queue_items).where(
                    t.queue_items.c.id == item_id, t.queue_items.c.department == department
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"{department} 的待办中没有 {item_id}",
                    f"no item {item_id!r} in the queue of {department}",
                )
            if row.status == "done":
                raise ConflictError(f"待办 {item_id} 已经处理完", f"item {item_id!r} is already done")
            conn.execute(
                t.queue_items.update()
                .where(t.queue_items.c.id == item_id)
                .values(status="done", done_at=at, done_by=by, note=note)
            )
        return next(i for i in self.queue(department, None) if i["id"] == item_id)

    # -- service records --------------------------------------------------------------------------

    def touch_record(self, conn: Connection, conversation_id: str, event: RecordEvent) -> None:
        """Create or update the record from an event; fields an agent edited by hand stay as they are."""
        row = _RECORD_STATE.first(conn, {"conversation_id": conversation_id})
        values = {
            k: v for k, v in event.__dict__.items() if k != "at" and k not in _TURN_FIELDS and v is not None
        }
        turns: list[dict[str, Any]] = json.loads(row["turns"] or "[]") if row is not None else []
        if _apply_turn(turns, event):
            values.update(_from_turns(turns))
            values["turns"] = json.dumps(turns, ensure_ascii=False, default=str)
        if row is None:
            _INSERT_RECORD.execute(
                conn,
                dict(
                    conversation_id=conversation_id,
                    started_at=event.at,
                    status=values.pop("status", "open"),
                    updated_at=event.at,
                    edited_fields="[]",
                    version=1,
                    escalated=values.pop("escalated", False),
                    turns=values.pop("turns", "[]"),
                    **values,
                ),
            )
            return
        locked = set(json.loads(row["edited_fields"] or "[]"))
        values = {k: v for k, v in values.items() if k not in locked}
        if row["first_response_s"] is not None:
            values.pop("first_response_s", None)
        if values:
            conn.execute(
                t.service_records.update()
                .where(t.service_records.c.conversation_id == conversation_id)
                .values(updated_at=event.at, version=t.service_records.c.version + 1, **values)
            )

    def edit_record(
        self, conversation_id: str, changes: dict[str, Any], *, expected_version: int, at: datetime
    ) -> dict[str, Any]:
        bad = sorted(set(changes) - set(EDITABLE_RECORD_FIELDS))
        if bad:
            raise ValidationError(
                f"这些字段不能修改：{bad}；可以修改 {', '.join(EDITABLE_RECORD_FIELDS)}",
                f"these fields cannot be edited: {bad}; editable: {', '.join(EDITABLE_RECORD_FIELDS)}",
            )
        _check_record_values(changes)
        with writing(self.engine) as conn:
            row = conn.execute(
                select(t.service_records).where(t.service_records.c.conversation_id == conversation_id)
            ).first()
            if row is None:
                raise NotFoundError(
                    f"对话 {conversation_id} 没有受理记录", f"no record for conversation {conversation_id!r}"
                )
            if row.version != expected_version:
                raise ConflictError(
                    f"受理记录已被修改（当前版本 {row.version}，你读取的是 {expected_version}）；请重新读取",
                    f"the record was changed (now version {row.version}, you read {expected_version}); reload it",
                    details={"current_version": row.version},
                )
            locked = sorted(set(json.loads(row.edited_fields or "[]")) | set(changes))
            conn.execute(
                t.service_records.update()
                .where(
                    t.service_records.c.conversation_id == conversation_id,
                    t.service_records.c.version == row.version,
                )
                .values(updated_at=at, version=row.version + 1, edited_fields=json.dumps(locked), **changes)
            )
        return self.record(conversation_id)

    def set_satisfaction(
        self, conversation_id: str, score: int, comment: str | None, at: datetime
    ) -> dict[str, Any]:
        _check_record_values({"satisfaction": score})
        with writing(self.engine) as conn:
            n = conn.execute(
                t.service_records.update()
                .where(t.service_records.c.conversation_id == conversation_id)
                .values(
                    satisfaction=score,
                    satisfaction_comment=comment,
                    updated_at=at,
                    version=t.service_records.c.version + 1,
                )
            ).rowcount
        if not n:
            raise NotFoundError(
                f"对话 {conversation_id} 不存在", f"conversation {conversation_id!r} does not exist"
            )
        return self.record(conversation_id)

    def record(self, conversation_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.service_records).where(t.service_records.c.conversation_id == conversation_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"对话 {conversation_id} 没有受理记录", f"no record for conversation {conversation_id!r}"
            )
        return _record(row)

    def records(
        self,
        start: datetime | None,
        end: datetime | None,
        *,
        agent: str | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        if status is not None and status not in RECORD_STATUSES:
            raise ValidationError(
                f"状态必须是 {RECORD_STATUSES} 之一", f"status must be one of {RECORD_STATUSES}"
            )
        stmt = select(t.service_records).order_by(t.service_records.c.started_at)
        if agent:
            stmt = stmt.where(t.service_records.c.agent_id == agent)
        if status:
            stmt = stmt.where(t.service_records.c.status == status)
        # Times are stored in UTC, and SQLite compares them as text: compare in UTC.
        if start is not None:
            stmt = stmt.where(t.service_records.c.started_at >= start.astimezone(UTC))
        if end is not None:
            stmt = stmt.where(t.service_records.c.started_at < end.astimezone(UTC))
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(stmt)]


def close_gap_questions(conn: Connection, suggestion_id: str, question: str, snippet_id: str) -> int:
    """The escalated question was answered: its knowledge-gap questions (this one, and the same words
    asked elsewhere) are resolved by the snippet made from the answer, so the gap leaves the list
    (knowledge/gaps.py lists only questions without ``resolved_snippet_id``)."""
    g = kt.gap_questions.c
    return int(
        conn.execute(
            kt.gap_questions.update()
            .where(
                or_(g.suggestion_id == suggestion_id, g.text == question),
                g.resolved_snippet_id.is_(None),
            )
            .values(resolved_snippet_id=snippet_id)
        ).rowcount
    )


def _apply_turn(turns: list[dict[str, Any]], event: RecordEvent) -> bool:
    """Add the event's new question to ``turns`` or fill in the turn it answers; False: nothing to do."""
    changed = False
    if event.question is not None:
        sid, text, intent = event.question
        turns.append({"suggestion_id": sid, "at": event.at.isoformat(), "question": text, "intent": intent})
        changed = True
    if event.answer_to is not None:
        turn = next((x for x in reversed(turns) if x.get("suggestion_id") == event.answer_to), None)
        if turn is None and turns:
            turn = turns[-1]
        if turn is not None:
            if event.answer is not None:
                turn.update(answer=event.answer, answered_by=event.agent_id, answered_at=event.at.isoformat())
            if event.turn_escalated:
                turn["escalated"] = True
            if event.turn_routed_to:
                turn["routed_to"] = event.turn_routed_to
            if event.escalation_answer is not None:
                turn["escalation_answer"] = event.escalation_answer
            changed = True
    return changed


def _from_turns(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's question summary and intent: every question asked, in order, and the first one's
    intent. Greetings (在吗) and thanks count only while the customer has asked nothing else, so a
    conversation of 在吗 alone is recorded as a greeting with that message as its question."""
    asked = [x for x in turns if x.get("intent") not in NOT_QUESTIONS] or turns
    if not asked:
        return {}
    return {
        "summary": _summary(" / ".join(x["question"] for x in asked)),
        "intent": asked[0].get("intent"),
    }


def record_intents(record: dict[str, Any]) -> list[str]:
    """The distinct intents of a record's questions, in the order asked (greetings only if nothing else)."""
    turns = record.get("turns") or []
    asked = [x for x in turns if x.get("intent") not in NOT_QUESTIONS] or turns
    found = [x.get("intent") for x in asked if x.get("intent")]
    if record.get("intent") and record["intent"] not in found:
        found.insert(0, record["intent"])  # set by hand
    return list(dict.fromkeys(found))


def _summary(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= SUMMARY_CHARS else one_line[: SUMMARY_CHARS - 1] + "…"


def _check_record_values(changes: dict[str, Any]) -> None:
    sat = changes.get("satisfaction")
    if sat is not None and (not isinstance(sat, int) or isinstance(sat, bool) or not 1 <= sat <= 5):
        raise ValidationError("满意度必须是 1 到 5 的整数", "satisfaction must be an integer from 1 to 5")
    if "status" in changes and changes["status"] not in RECORD_STATUSES:
        raise ValidationError(
            f"状态必须是 {RECORD_STATUSES} 之一", f"status must be one of {RECORD_STATUSES}"
        )
    if "escalated" in changes and not isinstance(changes["escalated"], bool):
        raise ValidationError("escalated 必须是 true 或 false", "escalated must be true or false")
    for k, v in changes.items():
        if (
            k not in ("satisfaction", "escalated")
            and v is not None
            and (not isinstance(v, str) or len(v) > 4000)
        ):
            raise ValidationError(
                f"{k} 必须是不超过 4000 字的文字", f"{k} must be text of at most 4000 characters"
            )


def _with_customer(table: Any) -> Any:
    """``table`` joined to its conversation, for the customer's name (lists show who, not an id)."""
    return table.outerjoin(t.conversations, t.conversations.c.id == table.c.conversation_id)


def _escalation(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "conversation_id": r.conversation_id,
        "customer_name": r.customer_name,
        "suggestion_id": r.suggestion_id,
        "question": r.question,
        "responsible": r.responsible,
        "status": r.status,
        "created_at": iso(r.created_at),
        "created_by": r.created_by,
        "resolved_at": iso(r.resolved_at),
        "resolved_by": r.resolved_by,
        "answer": r.answer,
        "snippet_id": r.snippet_id,
    }


def _queue_item(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "department": r.department,
        "kind": r.kind,
        "conversation_id": r.conversation_id,
        "customer_name": r.customer_name,
        "suggestion_id": r.suggestion_id,
        "message": r.message,
        "status": r.status,
        "created_at": iso(r.created_at),
        "done_at": iso(r.done_at),
        "done_by": r.done_by,
        "note": r.note,
    }


def _record(r: Any) -> dict[str, Any]:
    return {
        "conversation_id": r.conversation_id,
        "started_at": iso(r.started_at),
        "customer_id": r.customer_id,
        "customer_name": r.customer_name,
        "channel": r.channel,
        "intent": r.intent,
        "summary": r.summary,
        "final_reply": r.final_reply,
        "agent_id": r.agent_id,
        "routed_to": r.routed_to,
        "escalated": bool(r.escalated),
        "first_response_s": r.first_response_s,
        "status": r.status,
        "satisfaction": r.satisfaction,
        "satisfaction_comment": r.satisfaction_comment,
        "notes": r.notes,
        "edited_fields": json.loads(r.edited_fields or "[]"),
        "updated_at": iso(r.updated_at),
        "version": r.version,
        "turns": json.loads(r.turns or "[]"),
        "closed_at": iso(r.closed_at),
    }

"""Storage of the seed's workflow: escalations, department queues and service records (受理记录)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

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
RECORD_STATUSES = ("open", "waiting", "answered", "closed")
SUMMARY_CHARS = 120


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _iso(dt: datetime | None) -> str | None:
    dt = _aware(dt)
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


# The writes of every suggestion's transaction (knowledge.direct).
_INSERT_ESCALATION = DirectStatement.insert(t.escalations)
_INSERT_QUEUE_ITEM = DirectStatement.insert(t.queue_items)
_INSERT_RECORD = DirectStatement.insert(t.service_records)
_RECORD_STATE = DirectStatement.select_by(
    t.service_records, "conversation_id", ["edited_fields", "summary", "first_response_s"]
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
        stmt = select(t.escalations).order_by(t.escalations.c.created_at)
        if status:
            stmt = stmt.where(t.escalations.c.status == status)
        with self.engine.connect() as conn:
            return [_escalation(r) for r in conn.execute(stmt)]

    def escalation(self, escalation_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.escalations).where(t.escalations.c.id == escalation_id)).first()
        if row is None:
            raise NotFoundError(
                f"转交记录 {escalation_id} 不存在", f"escalation {escalation_id!r} does not exist"
            )
        return _escalation(row)

    def resolve_escalation(
        self, escalation_id: str, *, answer: str, by: str, at: datetime, snippet_id: str | None
    ) -> dict[str, Any]:
        with writing(self.engine) as conn:
            n = conn.execute(
                t.escalations.update()
                .where(t.escalations.c.id == escalation_id, t.escalations.c.status == "open")
                .values(
                    status="resolved", resolved_at=at, resolved_by=by, answer=answer, snippet_id=snippet_id
                )
            ).rowcount
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
            select(t.queue_items)
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
            row = conn.execute(select(t.queue_items).where(t.queue_items.c.id == item_id)).one()
        return _queue_item(row)

    # -- service records --------------------------------------------------------------------------

    def touch_record(self, conn: Connection, conversation_id: str, event: RecordEvent) -> None:
        """Create or update the record from an event; fields an agent edited by hand stay as they are."""
        row = _RECORD_STATE.first(conn, {"conversation_id": conversation_id})
        values = {k: v for k, v in event.__dict__.items() if k != "at" and v is not None}
        if "summary" in values:
            values["summary"] = _summary(values["summary"])
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
                    **values,
                ),
            )
            return
        locked = set(json.loads(row["edited_fields"] or "[]"))
        values = {k: v for k, v in values.items() if k not in locked}
        if row["summary"] and "summary" in values:
            values.pop("summary")  # the record keeps the first question asked
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

    def records(self, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
        stmt = select(t.service_records).order_by(t.service_records.c.started_at)
        # Times are stored in UTC, and SQLite compares them as text: compare in UTC.
        if start is not None:
            stmt = stmt.where(t.service_records.c.started_at >= start.astimezone(UTC))
        if end is not None:
            stmt = stmt.where(t.service_records.c.started_at < end.astimezone(UTC))
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(stmt)]


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


def _escalation(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "conversation_id": r.conversation_id,
        "suggestion_id": r.suggestion_id,
        "question": r.question,
        "responsible": r.responsible,
        "status": r.status,
        "created_at": _iso(r.created_at),
        "created_by": r.created_by,
        "resolved_at": _iso(r.resolved_at),
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
        "suggestion_id": r.suggestion_id,
        "message": r.message,
        "status": r.status,
        "created_at": _iso(r.created_at),
        "done_at": _iso(r.done_at),
        "done_by": r.done_by,
        "note": r.note,
    }


def _record(r: Any) -> dict[str, Any]:
    return {
        "conversation_id": r.conversation_id,
        "started_at": _iso(r.started_at),
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
        "updated_at": _iso(r.updated_at),
        "version": r.version,
    }

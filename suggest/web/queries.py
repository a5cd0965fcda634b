"""Read-only queries the console needs beyond the JSON API: the conversation list and one conversation's
thread with its latest suggestion. They read the suggestion service's tables; all writes go through
the pipeline and the workflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from suggest import schema as t
from suggest.records_export import intent_label, status_label

LIST_LIMIT = 100


def display_name(actor: str | None) -> str:
    """An author as people read it: the KB API records ``key:NAME``, the workflow ``NAME``; show NAME."""
    return (actor or "").removeprefix("key:")


def workflow_labels(lang: str) -> dict[str, Any]:
    """Template helpers of the console and /records: intents and statuses as words, authors by name."""
    return {
        "intent_label": lambda code: intent_label(code, lang),
        "status_label": lambda code: status_label(code, lang),
        "who": display_name,
    }


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


@dataclass
class ConversationRow:
    id: str
    customer_name: str | None
    channel: str | None
    last_message: str
    updated_at: datetime
    waiting_s: float | None  # None: answered, nobody waits
    offline: bool  # a message left while the service was closed still waits for its reply
    over_limit: bool
    status: str = "open"  # open, claimed, closed
    owner: str | None = None


@dataclass
class ConversationView:
    id: str
    customer_name: str | None
    channel: str | None
    messages: list[dict[str, Any]]
    suggestion: dict[str, Any] | None  # the latest suggestion
    decision: dict[str, Any] | None  # its decision, if any
    waiting_s: float | None
    record: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "open"  # open, claimed, closed
    owner: str | None = None
    claimed_at: datetime | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    stamp: str = ""  # changes whenever the view would (polled by the console)


def conversation_list(engine: Engine, now: datetime, wait_limit_s: float) -> list[ConversationRow]:
    """Open conversations: messages left while closed first (oldest first, as the norms want them
    answered at the start of the day), then the waiting ones longest first, then the rest, latest first."""
    c = t.conversations
    with engine.connect() as conn:
        rows = conn.execute(
            select(c)
            .where(c.c.status != "closed")
            .order_by(c.c.waiting_since.is_(None), c.c.waiting_since, c.c.updated_at.desc())
            .limit(LIST_LIMIT)
        ).all()
        ids = [r.id for r in rows]
        last: dict[str, str] = {}
        offline: set[str] = set()
        if ids:
            latest = (
                select(func.max(t.messages.c.id))
                .where(t.messages.c.conversation_id.in_(ids), t.messages.c.role == "customer")
                .group_by(t.messages.c.conversation_id)
            )
            for cid, text in conn.execute(
                select(t.messages.c.conversation_id, t.messages.c.text).where(t.messages.c.id.in_(latest))
            ):
                last[cid] = text
            pending = (
                select(t.suggestions.c.conversation_id)
                .select_from(
                    t.suggestions.outerjoin(t.decisions, t.decisions.c.suggestion_id == t.suggestions.c.id)
                )
                .where(
                    t.suggestions.c.conversation_id.in_(ids),
                    t.suggestions.c.offline.is_(True),
                    t.decisions.c.id.is_(None),
                )
            )
            offline = {r[0] for r in conn.execute(pending)}
    out = []
    for r in rows:
        since = _aware(r.waiting_since)
        waited = None if since is None else max(0.0, (now - since).total_seconds())
        out.append(
            ConversationRow(
                id=r.id,
                customer_name=r.customer_name,
                channel=r.channel,
                last_message=last.get(r.id, ""),
                updated_at=_aware(r.updated_at) or now,
                waiting_s=None if waited is None else round(waited, 1),
                offline=r.id in offline and since is not None,
                over_limit=waited is not None and waited > wait_limit_s,
                status=r.status,
                owner=r.owner,
            )
        )
    # Offline messages first; the query already put the waiting ones (longest first) before the rest.
    return sorted(out, key=lambda row: not row.offline)


def conversation_view(engine: Engine, conversation_id: str, now: datetime) -> ConversationView | None:
    c = t.conversations
    with engine.connect() as conn:
        conv = conn.execute(select(c).where(c.c.id == conversation_id)).first()
        if conv is None:
            return None
        messages = [
            {"role": m.role, "text": m.text, "at": _aware(m.at), "suggestion_id": m.suggestion_id}
            for m in conn.execute(
                select(t.messages)
                .where(t.messages.c.conversation_id == conversation_id)
                .order_by(t.messages.c.id)
            )
        ]
        # The latest suggestion; two made at the same instant are told apart by their messages' order.
        last_msg = (
            select(t.messages.c.suggestion_id, func.max(t.messages.c.id).label("mid"))
            .where(t.messages.c.conversation_id == conversation_id)
            .group_by(t.messages.c.suggestion_id)
            .subquery()
        )
        sug = conn.execute(
            select(t.suggestions.c.id, t.suggestions.c.response)
            .select_from(t.suggestions.outerjoin(last_msg, last_msg.c.suggestion_id == t.suggestions.c.id))
            .where(t.suggestions.c.conversation_id == conversation_id)
            .order_by(t.suggestions.c.created_at.desc(), func.coalesce(last_msg.c.mid, 0).desc())
            .limit(1)
        ).first()
        decision = None
        suggestion = None
        if sug is not None:
            suggestion = json.loads(sug.response)
            d = conn.execute(select(t.decisions).where(t.decisions.c.suggestion_id == sug.id)).first()
            if d is not None:
                decision = {
                    "action": d.action,
                    "draft_id": d.draft_id,
                    "final_text": d.final_text,
                    "agent_id": d.agent_id,
                    "reason": d.reason,
                    "violations": json.loads(d.violations or "[]"),
                    "at": _aware(d.created_at),
                }
        events = [
            {"action": e.action, "actor": e.actor, "target": e.target, "note": e.note, "at": _aware(e.at)}
            for e in conn.execute(
                select(t.conversation_events)
                .where(t.conversation_events.c.conversation_id == conversation_id)
                .order_by(t.conversation_events.c.id)
            )
        ]
        stamp = _stamp(conn, conversation_id)
    since = _aware(conv.waiting_since)
    return ConversationView(
        id=conv.id,
        customer_name=conv.customer_name,
        channel=conv.channel,
        messages=messages,
        suggestion=suggestion,
        decision=decision,
        waiting_s=None if since is None else round(max(0.0, (now - since).total_seconds()), 1),
        status=conv.status,
        owner=conv.owner,
        claimed_at=_aware(conv.claimed_at),
        closed_at=_aware(conv.closed_at),
        closed_by=conv.closed_by,
        events=events,
        stamp=stamp,
    )


def _stamp(conn: Any, conversation_id: str) -> str:
    """One query: the last message, the decisions and suggestions so far, status, owner, last change."""
    c = t.conversations.c

    def count(table: Any) -> Any:
        return (
            select(func.count()).select_from(table).where(table.c.conversation_id == conversation_id)
        ).scalar_subquery()

    last = (
        select(func.max(t.messages.c.id)).where(t.messages.c.conversation_id == conversation_id)
    ).scalar_subquery()
    row = conn.execute(
        select(
            c.updated_at,
            c.status,
            c.owner,
            last.label("last"),
            count(t.decisions).label("decided"),
            count(t.suggestions).label("suggested"),
        ).where(c.id == conversation_id)
    ).first()
    if row is None:
        return ""
    return (
        f"{row.last or 0}.{row.decided}.{row.suggested}.{row.status}.{row.owner or ''}"
        f".{_aware(row.updated_at)}"
    )


def conversation_stamp(engine: Engine, conversation_id: str) -> str:
    """What the console polls: it changes when a message, a decision, a claim or a close happens."""
    with engine.connect() as conn:
        return _stamp(conn, conversation_id)

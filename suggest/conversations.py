"""A conversation's lifecycle: open -> claimed by an agent -> (transferred) -> closed, with who and when.

One agent answers a customer at a time: claiming is a conditional update (``owner IS NULL``), so of two
agents claiming at once exactly one wins on SQLite and PostgreSQL alike; the other is told who has it.
Sending a reply claims an unclaimed conversation; answering someone else's needs an explicit take-over.
A closed conversation opens again (unclaimed) when the customer writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from knowledge.errors import NotFoundError, ValidationError
from knowledge.store import writing
from suggest import schema as t
from suggest.errors import ClaimedByOther, ConversationClosed, StaleSuggestion
from suggest.workflow_store import iso

STATES = ("open", "claimed", "closed")
EVENTS = ("claim", "transfer", "close")


@dataclass(frozen=True)
class Holder:
    """Who holds a conversation, as read inside a decision's transaction."""

    status: str
    owner: str | None


def lock_conversation(conn: Connection, conversation_id: str) -> Holder:
    """Read the conversation's state and hold its row until the transaction ends (PostgreSQL: FOR
    UPDATE, so a message or a claim arriving meanwhile waits; SQLite's writer lock does the same)."""
    c = t.conversations.c
    row = conn.execute(select(c.status, c.owner).where(c.id == conversation_id).with_for_update()).first()
    if row is None:
        raise NotFoundError(
            f"会话 {conversation_id} 不存在", f"conversation {conversation_id!r} does not exist"
        )
    return Holder(row.status, row.owner)


def add_event(
    conn: Connection,
    conversation_id: str,
    action: str,
    actor: str,
    at: datetime,
    *,
    target: str | None = None,
    note: str | None = None,
) -> None:
    conn.execute(
        t.conversation_events.insert().values(
            conversation_id=conversation_id, action=action, actor=actor, target=target, note=note, at=at
        )
    )


def add_message(
    conn: Connection, conversation_id: str, role: str, text: str, at: datetime, suggestion_id: str | None
) -> None:
    conn.execute(
        t.messages.insert().values(
            conversation_id=conversation_id, role=role, text=text, at=at, suggestion_id=suggestion_id
        )
    )


def newer_customer_messages(
    conn: Connection, conversation_id: str, suggestion_id: str, suggestion_at: datetime | None
) -> list[dict[str, Any]]:
    """The customer's messages that arrived after the one a suggestion answers (oldest first).

    A suggestion answers the customer message stored with it; one made without a new message (outage
    recovery, an escalation's answer) answers everything the customer wrote up to its own time."""
    m = t.messages.c
    own = conn.execute(
        select(m.id).where(m.suggestion_id == suggestion_id, m.role == "customer").order_by(m.id.desc())
    ).first()
    stmt = select(m.text, m.at).where(m.conversation_id == conversation_id, m.role == "customer")
    if own is not None:
        stmt = stmt.where(m.id > own.id)
    elif suggestion_at is not None:
        stmt = stmt.where(m.at > suggestion_at)
    else:
        return []
    return [{"text": r.text, "at": iso(r.at)} for r in conn.execute(stmt.order_by(m.id))]


def refuse_if_stale(newer: list[dict[str, Any]], suggestion_id: str) -> None:
    if not newer:
        return
    latest = newer[-1]["text"]
    raise StaleSuggestion(
        f"客户在这条建议之后又发来了新消息：「{latest[:60]}」；请先看新消息（确认仍要发送请加 confirm_stale）",
        f"the customer wrote again after this suggestion: {latest[:60]!r}; read it first "
        "(send confirm_stale to send anyway)",
        details={"suggestion_id": suggestion_id, "newer_messages": newer},
    )


def refuse_if_held(holder: Holder, conversation_id: str, agent: str, *, take_over: bool) -> None:
    """A colleague holds the conversation: refuse (409) unless the caller takes it over explicitly."""
    if holder.owner not in (None, agent) and not take_over:
        raise ClaimedByOther(
            f"会话 {conversation_id} 由 {holder.owner} 处理中；确认要接手请加 take_over",
            f"conversation {conversation_id!r} is handled by {holder.owner}; send take_over to take it over",
            details={"owner": holder.owner},
        )


def answer_as(
    conn: Connection, conversation_id: str, holder: Holder, agent: str, at: datetime, *, take_over: bool
) -> str | None:
    """Before ``agent`` sends a reply: claim an unclaimed conversation, refuse one another agent holds
    unless ``take_over`` (then it is transferred). Returns the new owner to store, or None if unchanged."""
    if holder.status == "closed":
        raise ConversationClosed(
            f"会话 {conversation_id} 已结束；客户再发消息时会重新打开",
            f"conversation {conversation_id!r} is closed; it opens again when the customer writes",
        )
    if holder.owner == agent:
        return None
    refuse_if_held(holder, conversation_id, agent, take_over=take_over)
    if holder.owner is None:
        add_event(conn, conversation_id, "claim", agent, at)
    else:
        add_event(conn, conversation_id, "transfer", agent, at, target=agent, note=f"from {holder.owner}")
    return agent


def close_in(conn: Connection, conversation_id: str, by: str, at: datetime, note: str | None) -> None:
    """Mark the conversation closed in the caller's transaction (its checks done)."""
    conn.execute(
        t.conversations.update()
        .where(t.conversations.c.id == conversation_id)
        .values(status="closed", closed_at=at, closed_by=by, updated_at=at, waiting_since=None)
    )
    add_event(conn, conversation_id, "close", by, at, note=note)


class ConversationDesk:
    """Claim, transfer and close conversations, and read their lifecycle."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def lifecycle(self, conversation_id: str) -> dict[str, Any]:
        c = t.conversations.c
        e = t.conversation_events.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.conversations).where(c.id == conversation_id)).first()
            if row is None:
                raise NotFoundError(
                    f"会话 {conversation_id} 不存在", f"conversation {conversation_id!r} does not exist"
                )
            events = conn.execute(
                select(t.conversation_events).where(e.conversation_id == conversation_id).order_by(e.id)
            ).all()
        return {
            "conversation_id": row.id,
            "status": row.status,
            "owner": row.owner,
            "claimed_at": iso(row.claimed_at),
            "closed_at": iso(row.closed_at),
            "closed_by": row.closed_by,
            "customer_id": row.customer_id,
            "customer_name": row.customer_name,
            "waiting_since": iso(row.waiting_since),
            "agent_replies": row.agent_replies,
            "events": [
                {
                    "action": ev.action,
                    "actor": ev.actor,
                    "target": ev.target,
                    "note": ev.note,
                    "at": iso(ev.at),
                }
                for ev in events
            ],
        }

    def claim(self, conversation_id: str, agent: str, at: datetime) -> dict[str, Any]:
        """The agent takes the conversation; exactly one of several agents claiming at once wins."""
        _check_name(agent, "agent")
        c = t.conversations.c
        with writing(self.engine) as conn:
            won = conn.execute(
                t.conversations.update()
                .where(c.id == conversation_id, c.status != "closed", c.owner.is_(None))
                .values(owner=agent, status="claimed", claimed_at=at, updated_at=at)
            ).rowcount
            if won:
                add_event(conn, conversation_id, "claim", agent, at)
            else:
                holder = lock_conversation(conn, conversation_id)  # raises NotFound
                if holder.status == "closed":
                    raise ConversationClosed(
                        f"会话 {conversation_id} 已结束", f"conversation {conversation_id!r} is closed"
                    )
                if holder.owner != agent:
                    raise ClaimedByOther(
                        f"会话 {conversation_id} 已由 {holder.owner} 认领",
                        f"conversation {conversation_id!r} was claimed by {holder.owner}",
                        details={"owner": holder.owner},
                    )
        return self.lifecycle(conversation_id)

    def transfer(
        self, conversation_id: str, *, by: str, to: str, at: datetime, may_override: bool, note: str | None
    ) -> dict[str, Any]:
        """Hand the conversation to a colleague: its owner may, or an admin (``may_override``)."""
        _check_name(to, "to")
        c = t.conversations.c
        with writing(self.engine) as conn:
            holder = _may_change(conn, conversation_id, by, may_override, ("转交", "transfer"))
            moved = conn.execute(
                t.conversations.update()
                .where(
                    c.id == conversation_id,
                    c.owner.is_(None) if holder.owner is None else c.owner == holder.owner,
                )
                .values(owner=to, status="claimed", claimed_at=at, updated_at=at)
            ).rowcount
            if not moved:  # someone claimed it between the read and the update (PostgreSQL)
                raise ClaimedByOther(
                    f"会话 {conversation_id} 刚被别人认领，请刷新",
                    f"conversation {conversation_id!r} was just claimed by someone else; reload",
                )
            add_event(conn, conversation_id, "transfer", by, at, target=to, note=note)
        return self.lifecycle(conversation_id)

    def close(
        self,
        conversation_id: str,
        *,
        by: str,
        at: datetime,
        may_override: bool,
        note: str | None,
        also: Callable[[Connection], None] | None = None,
    ) -> dict[str, Any]:
        """End the conversation (its owner, an admin, or anyone while unclaimed); ``also`` runs in the
        same transaction (the closing message, the record)."""
        with writing(self.engine) as conn:
            _may_change(conn, conversation_id, by, may_override, ("结束", "close"))
            close_in(conn, conversation_id, by, at, note)
            if also is not None:
                also(conn)
        return self.lifecycle(conversation_id)


def _may_change(
    conn: Connection, conversation_id: str, by: str, may_override: bool, verb: tuple[str, str]
) -> Holder:
    """Lock the conversation for a transfer or close: not closed, and ``by`` holds it (or nobody does,
    or ``may_override``: an admin)."""
    holder = lock_conversation(conn, conversation_id)
    if holder.status == "closed":
        raise ConversationClosed(
            f"会话 {conversation_id} 已经结束，不能{verb[0]}",
            f"conversation {conversation_id!r} is closed: one may no longer {verb[1]} it",
        )
    if holder.owner not in (None, by) and not may_override:
        raise ClaimedByOther(
            f"会话 {conversation_id} 由 {holder.owner} 处理中，只有他/她或管理员可以{verb[0]}",
            f"conversation {conversation_id!r} is handled by {holder.owner}: only they or an admin may {verb[1]} it",
            details={"owner": holder.owner},
        )
    return holder


def _check_name(name: str, field_name: str) -> None:
    if not name.strip() or len(name) > 200:
        raise ValidationError(
            f"{field_name} 必须是 1 到 200 个字符", f"{field_name} must be 1 to 200 characters"
        )

"""The seed's workflow around each suggestion: who is waiting, what is escalated or routed to a
department, what was asked while the service was closed, and the service record of every
conversation. The pipeline calls ``on_suggestion`` and ``on_decision`` inside its storage
transactions, so a suggestion and its queue items, escalation and record change together."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from knowledge.errors import ValidationError
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from prompts import Norms
from suggest import schema as t
from suggest.clock import Clock
from suggest.settings import WorkflowSettings
from suggest.workflow_store import RecordEvent, WorkflowStore

#: Intents that go to a department's queue (the department comes from the norms' routing).
QUEUED_INTENTS = ("complaint", "suggestion", "customer_info")


class Workflow:
    def __init__(
        self, kb: KnowledgeBase, store: WorkflowStore, norms: Norms, clock: Clock, settings: WorkflowSettings
    ) -> None:
        self.kb = kb
        self.store = store
        self.norms = norms
        self.clock = clock
        self.settings = settings

    # -- hooks of the pipeline (inside its transactions) -------------------------------------------

    def on_suggestion(
        self,
        conn: Connection,
        *,
        suggestion_id: str,
        conversation_id: str,
        message: str,
        intent: str,
        route: str | None,
        escalate: bool,
        customer: dict[str, Any] | None,
        channel: str | None,
        at: datetime,
    ) -> None:
        if escalate:
            self.store.add_escalation(
                conn,
                conversation_id=conversation_id,
                suggestion_id=suggestion_id,
                question=message,
                responsible=self.norms.routing.escalation_responsible,
                at=at,
                created_by="pipeline",
            )
        if route and intent in QUEUED_INTENTS:
            self.store.add_queue_item(
                conn,
                department=route,
                kind=intent,
                conversation_id=conversation_id,
                suggestion_id=suggestion_id,
                message=message,
                at=at,
            )
        meaningful = intent not in ("chit_chat", "closing")
        self.store.touch_record(
            conn,
            conversation_id,
            RecordEvent(
                at=at,
                customer_id=(customer or {}).get("id"),
                customer_name=(customer or {}).get("name"),
                channel=channel,
                intent=intent if meaningful else None,
                summary=message if meaningful else None,
                routed_to=route,
                escalated=True if escalate else None,
                status="waiting",
            ),
        )

    def on_decision(
        self,
        conn: Connection,
        *,
        conversation_id: str,
        action: str,
        final_text: str | None,
        agent_id: str,
        intent: str,
        started_at: datetime | None,
        at: datetime,
    ) -> None:
        if action == "reject" or not final_text:
            return
        first = (at - started_at).total_seconds() if started_at else None
        self.store.touch_record(
            conn,
            conversation_id,
            RecordEvent(
                at=at,
                final_reply=final_text,
                agent_id=agent_id,
                first_response_s=max(0.0, first) if first is not None else None,
                status="closed" if intent == "closing" else "answered",
            ),
        )

    # -- queries ----------------------------------------------------------------------------------

    def waiting(self, limit: int = 500) -> list[dict[str, Any]]:
        """Conversations whose customer waits for an answer, longest-waiting first."""
        now = self.clock.now()
        with self.kb.store.engine.connect() as conn:
            rows = conn.execute(
                select(t.conversations)
                .where(t.conversations.c.waiting_since.is_not(None))
                .order_by(t.conversations.c.waiting_since)
                .limit(limit)
            ).all()
        out = []
        for r in rows:
            since = r.waiting_since if r.waiting_since.tzinfo else r.waiting_since.replace(tzinfo=now.tzinfo)
            waited = max(0.0, (now - since).total_seconds())
            out.append(
                {
                    "conversation_id": r.id,
                    "customer_id": r.customer_id,
                    "customer_name": r.customer_name,
                    "channel": r.channel,
                    "waiting_since": since.isoformat(),
                    "waiting_s": round(waited, 1),
                    "over_limit": waited > self.norms.wait_limit_s,
                }
            )
        return out

    def auto_reply(self, at: datetime | None = None) -> dict[str, Any]:
        when = at or self.clock.now()
        is_open = self.norms.is_open(when)
        waiting = len(self.waiting())  # the conversations waiting now, whatever ``at`` asks about
        busy = is_open and waiting > self.settings.busy_waiting
        text = self.norms.auto_reply(when, busy=busy)
        reason = None if text is None else ("out_of_hours" if not is_open else "busy")
        return {
            "at": when.isoformat(),
            "due": text is not None,
            "reason": reason,
            "text": text,
            "open": is_open,
            "next_open": self.norms.next_open(when).isoformat(),
            "waiting": waiting,
            "busy_threshold": self.settings.busy_waiting,
        }

    def escalations(self, status: str | None) -> list[dict[str, Any]]:
        now = self.clock.now()
        limit = timedelta(hours=self.settings.escalation_overdue_h)
        items = self.store.escalations(status)
        for e in items:
            created = datetime.fromisoformat(e["created_at"])
            e["age_s"] = round((now - created).total_seconds(), 1)
            e["overdue"] = e["status"] == "open" and now - created > limit
        return items

    def resolve(self, escalation_id: str, *, answer: str, by: str) -> dict[str, Any]:
        """Record the answer and offer it to content staff as a draft snippet (status draft)."""
        answer = answer.strip()
        if not answer:
            raise ValidationError("请填写答复内容（answer）", "answer must not be empty")
        if len(answer) > 4000:
            raise ValidationError("答复太长（最多 4000 字）", "answer too long (at most 4000 characters)")
        esc = self.store.escalation(escalation_id)
        snippet_id = f"esc-{escalation_id}"
        snippet = self.kb.store.find(snippet_id)
        if snippet is None:
            question = " ".join(esc["question"].split())[:500]
            snippet = self.kb.store.add(
                Snippet(
                    id=snippet_id,
                    question=question,
                    answer=answer,
                    kind="faq",
                    status="draft",
                    tags=("escalation",),
                ),
                actor=by,
            )
        resolved = self.store.resolve_escalation(
            escalation_id, answer=answer, by=by, at=self.clock.now(), snippet_id=snippet.id
        )
        return {"escalation": resolved, "snippet": snippet.to_dict()}

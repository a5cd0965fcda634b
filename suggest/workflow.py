"""The seed's workflow around each suggestion: who is waiting, what is escalated or routed to a
department, what was asked while the service was closed, and the service record of every
conversation. The pipeline calls ``on_suggestion`` and ``on_decision`` inside its storage
transactions, so a suggestion and its queue items, escalation and record change together."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from knowledge.errors import ValidationError
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from prompts import CheckContext, Norms
from suggest import schema as t
from suggest.clock import Clock
from suggest.conversations import ConversationDesk, add_message, close_in
from suggest.settings import WorkflowSettings
from suggest.workflow_store import RecordEvent, WorkflowStore, close_gap_questions

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
        self.desk = ConversationDesk(kb.store.engine)

    # -- hooks of the pipeline (inside its transactions) -------------------------------------------

    def on_suggestion(
        self,
        conn: Connection,
        *,
        suggestion_id: str,
        conversation_id: str,
        message: str,
        intent: str,
        customer: dict[str, Any] | None,
        channel: str | None,
        at: datetime,
        new_message: bool = True,
    ) -> None:
        """A customer's message: it becomes a turn of the record. Escalations and department items are
        made when the agent sends the reply that promises them (``on_decision``), not for drafts."""
        self.store.touch_record(
            conn,
            conversation_id,
            RecordEvent(
                at=at,
                customer_id=(customer or {}).get("id"),
                customer_name=(customer or {}).get("name"),
                channel=channel,
                status="waiting",
                question=(suggestion_id, message, intent) if new_message else None,
            ),
        )

    def on_decision(
        self,
        conn: Connection,
        *,
        suggestion: dict[str, Any],
        action: str,
        final_text: str | None,
        agent_id: str,
        draft_kind: str | None,
        escalate: bool | None,
        route_to: str | None,
        started_at: datetime | None,
        at: datetime,
    ) -> dict[str, Any]:
        """The agent sent a reply: record it as its turn's answer, and open the escalation or department
        item the reply promises (the sent draft's kind decides, unless ``escalate``/``route_to`` say).
        Returns what was opened: ``{"escalation_id", "queue_item_id"}``."""
        opened: dict[str, Any] = {"escalation_id": None, "queue_item_id": None}
        if action == "reject" or not final_text:
            return opened
        sid = suggestion["id"]
        turn = suggestion.get("answers") or sid  # an escalation's answer answers the escalated message
        conversation_id = suggestion["conversation_id"]
        intent = suggestion["intent"]["label"]
        if escalate is None:
            escalate = draft_kind == "escalate"
        department = (
            self.department_for(draft_kind, suggestion.get("route")) if route_to is None else route_to
        )
        question = suggestion.get("customer_message") or ""
        if escalate and not self.store.open_escalation_for(conn, sid):
            opened["escalation_id"] = self.store.add_escalation(
                conn,
                conversation_id=conversation_id,
                suggestion_id=sid,
                question=question,
                responsible=self.norms.routing.escalation_responsible,
                at=at,
                created_by=agent_id,
            )
        if department:
            opened["queue_item_id"] = self.store.add_queue_item(
                conn,
                department=department,
                kind=intent if intent in QUEUED_INTENTS else self.queue_kind(department),
                conversation_id=conversation_id,
                suggestion_id=sid,
                message=question,
                at=at,
            )
        ends = intent == "closing" and draft_kind == "closing"
        if ends:  # the closing draft carries the satisfaction survey: the conversation ends with it
            close_in(conn, conversation_id, agent_id, at, "closing reply")
        first = (at - started_at).total_seconds() if started_at else None
        self.store.touch_record(
            conn,
            conversation_id,
            RecordEvent(
                at=at,
                final_reply=final_text,
                agent_id=agent_id,
                first_response_s=max(0.0, first) if first is not None else None,
                status="closed" if ends else "answered",
                closed_at=at if ends else None,
                escalated=True if opened["escalation_id"] else None,
                routed_to=department or None,
                answer_to=turn,
                answer=final_text,
                turn_escalated=bool(opened["escalation_id"]),
                turn_routed_to=department or None,
            ),
        )
        return opened

    def departments(self) -> list[str]:
        r = self.norms.routing
        return list(
            dict.fromkeys([r.complaint_department, r.suggestion_department, r.customer_info_department])
        )

    def department_for(self, draft_kind: str | None, route: str | None) -> str | None:
        """The department a sent draft promises the customer's message goes to (None: no item)."""
        return route if draft_kind in QUEUED_INTENTS and route else None

    def queue_kind(self, department: str) -> str:
        return "complaint" if department == self.norms.routing.complaint_department else "suggestion"

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
        """Record the colleague's answer: it is offered to content staff as a draft snippet, closes the
        question's knowledge gap, and comes back into the conversation as a draft ready to send (the
        record says so); the agent still decides whether to send it."""
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
                actor=f"key:{by}",  # as every KB change made with an API key (knowledge_api)
            )
        at = self.clock.now()
        draft = self._answer_draft(esc, answer)
        resolved = self.store.resolve_escalation(
            escalation_id,
            answer=answer,
            by=by,
            at=at,
            snippet_id=snippet.id,
            also=lambda conn: self._answer_back(conn, esc, draft, snippet.id, at),
        )
        return {"escalation": resolved, "snippet": snippet.to_dict(), "draft_suggestion_id": draft["id"]}

    def _answer_draft(self, esc: dict[str, Any], answer: str) -> dict[str, Any]:
        """The colleague's answer as a suggestion of one draft, checked against the norms like any reply."""
        sid = uuid.uuid4().hex
        violations = [v.to_dict() for v in self.norms.check(answer, CheckContext())]
        return {
            "id": sid,
            "conversation_id": esc["conversation_id"],
            "drafts": [
                {
                    "id": f"{sid[:12]}-1",
                    "text": answer,
                    "kind": "answer",
                    "style": "escalation_answer",
                    "citations": [],
                    "violations": violations,
                    "fixed_by_guard": False,
                    "fixes": [],
                    "ungrounded": [],
                }
            ],
            "intent": {"label": "inquiry", "confidence": 1.0},
            "route": None,
            "escalate": False,
            "plan": {"kind": "escalation_answer", "reason": f"escalation {esc['id']} answered"},
            "escalation_id": esc["id"],
            "answers": esc["suggestion_id"],  # the customer message (turn) this answer is for
            "first_reply": False,
            "offline": False,
            "customer_waited_s": None,
            "drafter": "escalation",
            "fallback": False,
            "fallback_reason": None,
            "retrieval": {"confidence": "high", "kb_revision": 0, "hits": []},
            "timings_ms": {},
        }

    def _answer_back(
        self, conn: Connection, esc: dict[str, Any], draft: dict[str, Any], snippet_id: str, at: datetime
    ) -> None:
        conversation_id = esc["conversation_id"]
        if self.store.conversation_exists(conn, conversation_id):
            draft["customer_at"] = at.isoformat()
            self.store.add_ready_suggestion(conn, draft, question=esc["question"], at=at)
            self.store.touch_record(
                conn,
                conversation_id,
                RecordEvent(
                    at=at,
                    status="answer_ready",
                    answer_to=esc["suggestion_id"] or "",
                    escalation_answer=draft["drafts"][0]["text"],
                ),
            )
        if esc["suggestion_id"]:
            close_gap_questions(conn, esc["suggestion_id"], esc["question"], snippet_id)

    def close(
        self, conversation_id: str, *, by: str, survey: bool, may_override: bool, note: str | None
    ) -> dict[str, Any]:
        """End a conversation: the norms' closing with the satisfaction survey is sent as the last
        message (unless ``survey`` is false), and the record is completed (status closed)."""
        at = self.clock.now()
        text = self.norms.render("closing") if survey else None

        def finish(conn: Connection) -> None:
            if text:
                add_message(conn, conversation_id, "agent", text, at, None)
            self.store.touch_record(conn, conversation_id, RecordEvent(at=at, status="closed", closed_at=at))

        out = self.desk.close(
            conversation_id, by=by, at=at, may_override=may_override, note=note, also=finish
        )
        out["closing_message"] = text
        return out

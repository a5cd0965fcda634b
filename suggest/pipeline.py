"""One suggestion: intent -> retrieve -> plan -> draft -> guard -> rank -> store.

The pipeline is plain Python (no HTTP): the API, the evaluators and the benchmark all call it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from knowledge.errors import ValidationError
from knowledge.model import SnippetFilter
from knowledge.retriever import Hit, SearchResult
from knowledge.service import KnowledgeBase
from prompts import CheckContext, Norms, default_norms
from prompts.intents import IntentRules
from prompts.norms import PACKAGED_LANGUAGES
from prompts.textnorm import is_traditional, language_of, to_script
from suggest.clock import Clock, SystemClock
from suggest.drafting import DraftCandidate, Drafter, DrafterError, DraftJob, Plan, Turn
from suggest.guard import Guard, GuardedDraft, rank
from suggest.metrics import Metrics
from suggest.settings import SuggestSettings
from suggest.storage import ConversationState, SuggestStore
from suggest.template_drafter import TemplateDrafter
from suggest.workflow import Workflow

log = logging.getLogger(__name__)

ROLES = ("customer", "agent")


@dataclass
class SuggestionRequest:
    conversation_id: str
    customer_message: str
    history: list[Turn] = field(default_factory=list)
    customer_waited_s: float | None = None
    n: int | None = None
    channel: str | None = None
    customer: dict[str, Any] | None = None


@dataclass
class Prepared:
    """Everything decided before drafting (shared by the ordinary and the streaming endpoint)."""

    id: str
    request: SuggestionRequest
    job: DraftJob
    retrieval: SearchResult
    intent: tuple[str, float]
    route: str | None
    escalate: bool
    timings: dict[str, float]
    started: float
    at: datetime  # when the customer's message arrived (the service clock)
    offline: bool = False  # it arrived while the service was closed
    prefix: str = ""  # opens every draft (offline messages, outage recovery)
    late: bool = False  # left while closed and no agent has answered since: apologise once for it
    store_message: bool = True  # False when answering a message stored before (recovery)


class SuggestionPipeline:
    def __init__(
        self,
        kb: KnowledgeBase,
        store: SuggestStore,
        norms: Norms,
        intents: IntentRules,
        settings: SuggestSettings,
        *,
        drafter: Drafter | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        workflow: Workflow | None = None,
    ) -> None:
        self.kb = kb
        self.store = store
        self.norms = norms
        self.intents = intents
        self.settings = settings
        self.template = TemplateDrafter()
        self.drafter: Drafter = drafter or self.template
        self.guard = Guard(norms)
        # The customer's language picks the norms of the drafts: a question in English is answered
        # wholly in English (the packaged norms of the other language, unless the configured ones speak it).
        self.norms_by_language: dict[str, Norms] = {
            lang: norms if lang == norms.language else default_norms(lang) for lang in PACKAGED_LANGUAGES
        }
        self.norms_by_language[norms.language] = norms
        self.guards: dict[str, Guard] = {
            lang: self.guard if n is norms else Guard(n) for lang, n in self.norms_by_language.items()
        }
        self.metrics = metrics or Metrics()
        self.clock: Clock = clock or SystemClock()
        self.workflow = workflow

    @property
    def offline(self) -> bool:
        """Whether drafts come from the templates alone (no LLM to wait for)."""
        return self.drafter is self.template

    # -- validation -----------------------------------------------------------------------------

    def validate(self, req: SuggestionRequest) -> None:
        msg = req.customer_message
        if not msg or not msg.strip():
            raise ValidationError("客户消息不能为空", "customer_message must not be empty")
        if len(msg) > self.settings.max_message_chars:
            raise ValidationError(
                f"客户消息太长：{len(msg)} 个字符，最多 {self.settings.max_message_chars}",
                f"customer_message too long: {len(msg)} characters, at most {self.settings.max_message_chars}",
            )
        if not req.conversation_id or not req.conversation_id.strip() or len(req.conversation_id) > 128:
            raise ValidationError(
                "conversation_id 必须是 1 到 128 个字符", "conversation_id must be 1 to 128 characters"
            )
        if req.n is not None and not 1 <= req.n <= 5:
            raise ValidationError("n 必须在 1 到 5 之间", "n must be between 1 and 5")
        if req.customer_waited_s is not None and not 0 <= req.customer_waited_s < 10**7:
            raise ValidationError(
                "customer_waited_s 必须是非负的秒数",
                "customer_waited_s must be a non-negative number of seconds",
            )
        for i, turn in enumerate(req.history):
            if turn.role not in ROLES:
                raise ValidationError(
                    f"history[{i}].role 必须是 customer 或 agent",
                    f"history[{i}].role must be customer or agent",
                )
            if len(turn.text) > self.settings.max_message_chars:
                raise ValidationError(f"history[{i}].text 太长", f"history[{i}].text is too long")
        if len(req.history) > 200:
            raise ValidationError("history 最多 200 条", "history holds at most 200 turns")

    # -- the steps ------------------------------------------------------------------------------

    def prepare(self, req: SuggestionRequest, *, at: datetime | None = None) -> Prepared:
        self.validate(req)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        now = at or self.clock.now()
        today = now.astimezone(self.norms.hours.zone).date()
        conv = self.store.conversation(req.conversation_id)
        first_reply = (conv is None or conv.agent_replies == 0) and not any(
            t.role == "agent" for t in req.history
        )
        waited = req.customer_waited_s
        if waited is None and conv is not None and conv.waiting_since is not None:
            # The customer wrote before and is still waiting: the wait counts from that message.
            waited = round(max(0.0, (now - conv.waiting_since).total_seconds()), 1)
        language = language_of(req.customer_message)
        norms = self.norms_by_language.get(language, self.norms)
        traditional = language == "zh" and is_traditional(req.customer_message)
        closed_since = self.norms.hours.closed_since(now)
        late = closed_since is not None and not self._agent_answered_since(conv, req.history, closed_since)

        t0 = time.perf_counter()
        retrieval = self.kb.retriever.search(req.customer_message, k=5, flt=SnippetFilter(valid_on=today))
        timings["retrieve"] = (time.perf_counter() - t0) * 1000

        label, confidence = self.intents.classify(req.customer_message)
        top = retrieval.hits[0] if retrieval.hits else None
        if (
            top is not None
            and top.snippet.kind == "restricted"
            and top.confidence in ("high", "medium")
            and label not in ("complaint", "suggestion")
        ):
            label, confidence = "restricted", round(top.confidence_score, 3)
        plan = self._plan(
            label, retrieval, self._promotion(req.customer_message, retrieval, today), language=language
        )
        route = self._route(label)
        job = DraftJob(
            customer_message=req.customer_message,
            history=tuple(req.history),
            plan=plan,
            n=req.n or self.settings.default_n,
            norms=norms,
            first_reply=first_reply,
            customer_waited_s=waited,
            intent=label,
            focus_terms=self.intents.focus_terms(req.customer_message),
            traditional=traditional,
            apology_given=late,
        )
        return Prepared(
            id=uuid.uuid4().hex,
            request=req,
            job=job,
            retrieval=retrieval,
            intent=(label, confidence),
            route=route,
            escalate=plan.kind == "escalate",
            timings=timings,
            started=started,
            at=now,
            offline=closed_since is not None,
            late=late,
        )

    @staticmethod
    def _agent_answered_since(conv: ConversationState | None, history: list[Turn], since: datetime) -> bool:
        """Whether an agent has replied in this conversation since ``since`` (the service closed): then
        the customer is being answered out of hours, and a follow-up is no message left waiting.

        The store knows when its agent last replied; a history from the chat system counts when an
        agent turn is dated since then, or when the turn right before this message is an undated
        agent reply (the conversation is going on now)."""
        if conv is not None and conv.last_agent_at is not None and conv.last_agent_at >= since:
            return True
        for i, turn in enumerate(history):
            if turn.role != "agent":
                continue
            if turn.at:
                try:
                    at = datetime.fromisoformat(turn.at)
                except ValueError:
                    continue
                if (at if at.tzinfo else at.replace(tzinfo=since.tzinfo)) >= since:
                    return True
            elif i == len(history) - 1:
                return True
        return False

    def _promotion(self, message: str, retrieval: SearchResult, today: date) -> Hit | None:
        """A promotion running today that matches the customer's topic: the product of the best answer,
        or the message itself. Expired and future promotions are filtered out by their validity dates."""
        flt = SnippetFilter(kinds=("promotion",), valid_on=today)
        promos = self.kb.retriever.search(message, k=3, flt=flt, sync=False).hits  # synced just before
        top = next((h for h in retrieval.hits if h.snippet.kind != "promotion"), None)
        product = top.snippet.product if top is not None and top.confidence != "low" else None
        if product:
            same = next((h for h in promos if h.snippet.product == product), None)
            if same is not None:
                return same
        best = promos[0] if promos else None
        return best if best is not None and best.confidence != "low" else None

    def _plan(
        self, intent: str, retrieval: SearchResult, promotion: Hit | None = None, *, language: str = ""
    ) -> Plan:
        hits = tuple(retrieval.hits)
        if language and language != self.norms.language and self.offline:
            # The templates can only quote a snippet, not translate it: a question in another
            # language is answered from snippets written in it, else passed on (escalated).
            hits = tuple(h for h in hits if language_of(h.snippet.answer or h.snippet.question) == language)
            promotion = promotion if promotion is not None and promotion in hits else None
        direct = {
            "chit_chat": "greeting",
            "closing": "closing",
            "complaint": "complaint",
            "suggestion": "suggestion",
            # details the customer leaves are recorded for 销售部 (its queue), not a question to escalate
            "customer_info": "customer_info",
        }
        if intent in direct:
            return Plan(direct[intent], hits, reason=f"intent {intent}")
        if intent == "restricted":
            return Plan(
                "tactful_refusal",
                tuple(h for h in hits if h.snippet.kind == "restricted"),
                reason="restricted",
            )
        answerable = [h for h in hits if h.snippet.kind != "restricted" and h.snippet.answer.strip()]
        if not answerable or answerable[0].confidence == "low":
            return Plan("escalate", hits, reason="low retrieval confidence" if hits else "no knowledge found")
        a = answerable[0]
        b = answerable[1] if len(answerable) > 1 else None
        if b is not None and b.confidence != "low" and a.score - b.score < self.settings.clarify_margin:
            return Plan(
                "clarify",
                tuple(answerable),
                alternatives=(a, b),
                reason="two close snippets",
                promotion=promotion,
            )
        return Plan("answer", tuple(answerable), reason=f"top hit {a.confidence}", promotion=promotion)

    def _route(self, intent: str) -> str | None:
        r = self.norms.routing
        return {
            "complaint": r.complaint_department,
            "suggestion": r.suggestion_department,
            "customer_info": r.customer_info_department,
        }.get(intent)

    def draft(self, prep: Prepared) -> tuple[list[DraftCandidate], str | None]:
        """Drafts from the configured drafter; on any failure, template drafts and the reason."""
        t0 = time.perf_counter()
        reason = None
        if self.drafter is self.template:
            cands = self.template.draft(prep.job)
        else:
            try:
                cands = self.drafter.draft(prep.job)
                if not cands:
                    raise DrafterError("the LLM returned no drafts")
            except DrafterError as e:
                reason = str(e) or type(e).__name__
                log.warning("LLM drafter failed, using templates: %s", reason)
                self.metrics.fallback(reason)
                cands = self.template.draft(prep.job)
        prep.timings["draft"] = (time.perf_counter() - t0) * 1000
        return cands, reason

    def finish(
        self, prep: Prepared, cands: list[DraftCandidate], fallback_reason: str | None, drafter: str
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        job = prep.job
        norms = job.norms
        prefix = prep.prefix or (norms.render("offline_prefix") if prep.late else "")
        if job.traditional and norms.to_traditional:
            # the KB and the templates are simplified; a customer writing traditional reads traditional
            prefix = to_script(prefix, norms.to_traditional)
            cands = [replace(c, text=to_script(c.text, norms.to_traditional)) for c in cands]
        if prefix:
            cands = [replace(c, text=norms.checker.open_with(prefix, c.text)) for c in cands]
        ctx = CheckContext(
            first_reply=job.first_reply, customer_waited_s=job.customer_waited_s, greeted=not job.first_reply
        )
        cited = {h.snippet_id: f"{h.snippet.question}\n{h.snippet.answer}" for h in prep.retrieval.hits}
        guard = self.guards.get(norms.language, self.guard)
        guarded: list[GuardedDraft] = [
            guard.apply(f"{prep.id[:12]}-{i + 1}", c, ctx, cited) for i, c in enumerate(cands)
        ]
        drafts = rank(guarded)
        prep.timings["guard"] = (time.perf_counter() - t0) * 1000
        prep.timings["total"] = (time.perf_counter() - prep.started) * 1000
        label, confidence = prep.intent
        response: dict[str, Any] = {
            "id": prep.id,
            "conversation_id": prep.request.conversation_id,
            "drafts": [d.to_dict() for d in drafts],
            "intent": {"label": label, "confidence": confidence},
            "route": prep.route,
            "escalate": prep.escalate,
            "plan": {"kind": prep.job.plan.kind, "reason": prep.job.plan.reason},
            "first_reply": prep.job.first_reply,
            "offline": prep.offline,
            "late_apology": bool(prep.prefix) or prep.late,
            "language": prep.job.norms.language,
            "script": "traditional" if prep.job.traditional else None,
            "customer_at": prep.at.isoformat(),
            "customer_waited_s": prep.job.customer_waited_s,
            "drafter": drafter,
            "fallback": fallback_reason is not None,
            "fallback_reason": fallback_reason,
            "retrieval": {
                "confidence": prep.retrieval.confidence,
                "kb_revision": prep.retrieval.kb_revision,
                "hits": [_hit_dict(h) for h in prep.retrieval.hits],
            },
            "timings_ms": {k: round(v, 2) for k, v in prep.timings.items()},
        }
        self.store.record_suggestion(
            suggestion_id=prep.id,
            conversation_id=prep.request.conversation_id,
            customer_message=prep.request.customer_message,
            channel=prep.request.channel,
            customer=prep.request.customer,
            response=response,
            intent=label,
            intent_confidence=confidence,
            route=prep.route,
            escalate=prep.escalate,
            fallback=fallback_reason is not None,
            drafter=drafter,
            kb_revision=prep.retrieval.kb_revision,
            at=prep.at,
            offline=prep.offline,
            store_message=prep.store_message,
            also=None
            if self.workflow is None
            else lambda conn: self.workflow.on_suggestion(  # type: ignore[union-attr]
                conn,
                suggestion_id=prep.id,
                conversation_id=prep.request.conversation_id,
                message=prep.request.customer_message,
                intent=label,
                customer=prep.request.customer,
                channel=prep.request.channel,
                at=prep.at,
                new_message=prep.store_message,
            ),
        )
        self.metrics.suggestion(label, [d.kind for d in drafts])
        return response

    def suggest(self, req: SuggestionRequest) -> dict[str, Any]:
        return self._run(self.prepare(req))

    def _run(self, prep: Prepared) -> dict[str, Any]:
        cands, reason = self.draft(prep)
        drafter = (
            self.template.name if reason is not None or self.drafter is self.template else self.drafter.name
        )
        return self.finish(prep, cands, reason, drafter)

    def recover(self, conversation_id: str, *, cause: str) -> dict[str, Any]:
        """After an outage: drafts for the customer's last message that explain and apologise first."""
        last = self.store.last_customer_message(conversation_id)
        prep = self.prepare(SuggestionRequest(conversation_id=conversation_id, customer_message=last))
        prep.prefix = prep.job.norms.render("outage_apology", cause=cause)
        prep.job = replace(prep.job, apology_given=True)
        prep.store_message = False
        return self._run(prep)


def _hit_dict(h: Hit) -> dict[str, Any]:
    d = h.to_dict()
    d.pop("answer", None)
    return d

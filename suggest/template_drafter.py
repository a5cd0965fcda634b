"""The offline drafter: replies assembled from the norms' templates and the cited snippets' text.

Deterministic, and every fact in a draft comes from a cited snippet: the drafter only selects
sentences of the snippet's answer and places them into a template. The n drafts differ in
substance: a concise one (the answer's first sentences), a detailed one (the whole answer) and one
that also asks a follow-up question about the next closest snippet.
"""

from __future__ import annotations

import re

from knowledge.retriever import Hit
from prompts import Norms
from suggest.drafting import Citation, DraftCandidate, DraftJob

_SENTENCE = re.compile(r"[^。！？!?；;]+[。！？!?；;]*")
CONCISE_CHARS = 60
MIN_CONCISE_CHARS = 15


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text.strip()) if s.strip()]


def answer_body(norms: Norms, answer: str) -> str:
    """The snippet's answer as complete sentences, without its own opening greeting (the guard greets)."""
    text = answer.strip()
    for marker in sorted(norms.rules["greeting"].markers, key=len, reverse=True):
        if text.startswith(marker):
            text = text[len(marker) :].lstrip("，,！!。 ")
            break
    if text and text[-1] not in "。！？!?":
        text += "。"
    return text


def _full_stop(text: str) -> str:
    return text[:-1] + "。" if text and text[-1] in "；;，," else text


def concise(body: str, focus: tuple[str, ...] = ()) -> str:
    """The answer's first sentences (or clauses, for a long list) up to about CONCISE_CHARS, plus the
    sentence that holds what was asked (``focus``: the price, the time...) when that comes later."""
    parts = sentences(body)
    out: list[str] = []
    for s in parts:
        # A bare "可以。" or "支持。" says nothing on its own: always keep what follows it too.
        if out and sum(map(len, out)) >= MIN_CONCISE_CHARS and sum(map(len, out)) + len(s) > CONCISE_CHARS:
            break
        out.append(s)
    if not out:
        return body
    if focus and not any(f in s for s in out for f in focus):
        extra = next((s for s in parts[len(out) :] if any(f in s for f in focus)), None)
        if extra is not None:
            out = [*out[:1], extra] if len(out[0]) >= MIN_CONCISE_CHARS else [*out, extra]
    return "".join(_full_stop(s) for s in out)


def topic_of(hit: Hit) -> str:
    return hit.snippet.question.strip().rstrip("？?。！!")


def _cite(hit: Hit, text: str) -> Citation:
    return Citation(hit.snippet_id, text, hit.score)


class TemplateDrafter:
    name = "template"

    def draft(self, job: DraftJob) -> list[DraftCandidate]:
        plan = job.plan
        norms = job.norms
        out: list[DraftCandidate]
        if plan.kind == "answer" and plan.hits:
            out = self._answers(job)
        elif plan.kind == "clarify" and len(plan.alternatives) >= 2:
            a, b = plan.alternatives[:2]
            text = norms.render("clarify_choice", a=topic_of(a), b=topic_of(b))
            out = [
                DraftCandidate(
                    text, "clarify", [_cite(a, a.snippet.question), _cite(b, b.snippet.question)], "clarify"
                )
            ]
            out += [c for c in self._answers(job) if c.style != "follow_up"]
        elif plan.kind == "tactful_refusal" and plan.hits:
            hit = plan.hits[0]
            text = norms.render("tactful_refusal", topic=topic_of(hit))
            out = [DraftCandidate(text, "tactful_refusal", [_cite(hit, hit.snippet.question)], "refusal")]
        elif plan.kind == "complaint":
            out = [DraftCandidate(norms.render("complaint_received"), "complaint", [], "complaint")]
        elif plan.kind == "suggestion":
            out = [DraftCandidate(norms.render("suggestion_received"), "suggestion", [], "suggestion")]
        elif plan.kind == "customer_info":
            out = [
                DraftCandidate(norms.render("customer_info_received"), "customer_info", [], "customer_info")
            ]
        elif plan.kind == "closing":
            out = [DraftCandidate(norms.render("closing"), "closing", [], "closing")]
        elif plan.kind == "greeting":
            out = [DraftCandidate(norms.render("greeting"), "greeting", [], "greeting")]
        else:
            out = [self._escalation(job)]
        # Never invent facts to reach n: fewer drafts are better than made-up ones.
        return out[: job.n]

    def _answers(self, job: DraftJob) -> list[DraftCandidate]:
        norms = job.norms
        best = job.plan.hits[0]
        body = answer_body(norms, best.snippet.answer)
        if not body:
            return [self._escalation(job)]
        short = concise(body, job.focus_terms)
        drafts = [
            DraftCandidate(norms.render("answer", answer=short), "answer", [_cite(best, short)], "concise")
        ]
        if body != short:
            drafts.append(
                DraftCandidate(norms.render("answer", answer=body), "answer", [_cite(best, body)], "detailed")
            )
        related = next(
            (
                h
                for h in job.plan.hits[1:]
                if h.snippet.kind not in ("restricted", "promotion") and h.confidence != "low"
            ),
            None,
        )
        if related is not None:
            text = norms.render("answer_followup", answer=short, related=topic_of(related))
            # the related snippet's question is quoted, so it is cited too (its numbers are grounded there)
            cites = [_cite(best, short), _cite(related, related.snippet.question)]
            drafts.append(DraftCandidate(text, "answer", cites, "follow_up"))
        promo = job.plan.promotion
        if promo is not None and promo.snippet_id != best.snippet_id:
            # One draft, the last one kept, mentions the promotion; its facts are the promotion's own.
            detail = concise(answer_body(norms, promo.snippet.answer))
            mention = norms.render("promotion_mention", title=topic_of(promo), detail=detail)
            target = drafts[min(len(drafts), job.n) - 1]
            target.text = target.text + mention
            target.citations.append(_cite(promo, detail))
            target.style += "+promotion"
        return drafts

    def _escalation(self, job: DraftJob) -> DraftCandidate:
        routing = job.norms.routing
        text = job.norms.render(
            "escalation", responsible=routing.escalation_responsible, follow_up=routing.escalation_follow_up
        )
        return DraftCandidate(text, "escalate", [], "escalate")

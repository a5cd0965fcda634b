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
from prompts.textnorm import language_of
from suggest.drafting import Citation, DraftCandidate, DraftJob

_SENTENCE = re.compile(r"[^。！？!?；;]+[。！？!?；;]*")
CONCISE_CHARS = 60
MIN_CONCISE_CHARS = 15
#: An English word takes about as many letters as a Chinese sentence takes characters per word: the
#: concise limits are this many times longer for English.
LATIN_CHARS_PER_CJK = 3
#: A follow-up question offers another snippet only when it is on the answer's topic (the same product,
#: or a tag in common and no other product) and does not say the same thing: its question (or answer)
#: sharing this much of its character bigrams with the best one's makes it a near-duplicate; against
#: the customer's own message the bar is higher, since short questions share their function words
#: (怎么申请保修 and 请问怎么申请退货 share 0.6 and ask different things).
NEAR_DUPLICATE = 0.5
NEAR_DUPLICATE_OF_MESSAGE = 0.75


# English sentences end at . ! ? ; followed by a space (not inside 5.5 or 16:00).
_SENTENCE_EN = re.compile(r".+?(?:[.!?;]+(?=\s|$)|$)")


def sentences(text: str) -> list[str]:
    pattern = _SENTENCE_EN if language_of(text) == "en" else _SENTENCE
    return [s.strip() for s in pattern.findall(text.strip()) if s.strip()]


def answer_body(norms: Norms, answer: str) -> str:
    """The snippet's answer as complete sentences, without its own opening greeting (the guard greets)."""
    text = answer.strip()
    for marker in sorted(norms.rules["greeting"].markers, key=len, reverse=True):
        # an English marker only as a whole word ("Hi" does not start "History")
        whole = not marker[-1].isascii() or not text[len(marker) : len(marker) + 1].isalnum()
        if text.lower().startswith(marker.lower()) and whole:
            text = text[len(marker) :].lstrip("，,！!。 ")
            text = text[:1].upper() + text[1:]
            break
    if text and text[-1] not in "。！？!?.":
        # an English answer ends with a full stop of its own ("same day." not "same day。")
        text += "." if language_of(text) == "en" else "。"
    return text


def _full_stop(text: str) -> str:
    if not text or text[-1] not in "；;，,":
        return text
    return text[:-1] + ("." if language_of(text) == "en" else "。")


def concise(body: str, focus: tuple[str, ...] = ()) -> str:
    """The answer's first sentences (or clauses, for a long list) up to about CONCISE_CHARS, plus the
    sentence that holds what was asked (``focus``: the price, the time...) when that comes later."""
    parts = sentences(body)
    english = language_of(body) == "en"
    scale = LATIN_CHARS_PER_CJK if english else 1
    low, high = MIN_CONCISE_CHARS * scale, CONCISE_CHARS * scale
    out: list[str] = []
    for s in parts:
        # A bare "可以。" or "支持。" says nothing on its own: always keep what follows it too.
        if out and sum(map(len, out)) >= low and sum(map(len, out)) + len(s) > high:
            break
        out.append(s)
    if not out:
        return body
    if focus and not any(f in s for s in out for f in focus):
        extra = next((s for s in parts[len(out) :] if any(f in s for f in focus)), None)
        if extra is not None:
            out = [*out[:1], extra] if len(out[0]) >= low else [*out, extra]
    joiner = " " if english else ""
    return joiner.join(_full_stop(s) for s in out)


def topic_of(hit: Hit) -> str:
    return hit.snippet.question.strip().rstrip("？?。！!")


def _bigrams(text: str) -> set[str]:
    t = re.sub(r"[\W_]+", "", text.lower())
    return {t[i : i + 2] for i in range(len(t) - 1)} or {t}


def overlap(a: str, b: str) -> float:
    """Share of the smaller text's character bigrams found in the other (1.0: one contains the other)."""
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / min(len(x), len(y)) if x and y else 0.0


def follow_up_hit(job: DraftJob, best: Hit) -> Hit | None:
    """The snippet a follow-up question may offer: on the answer's topic (the same product, or a
    shared tag; never another product) and saying something new (neither a
    paraphrase of the best snippet nor of what the customer asked). None when no hit qualifies."""
    for h in job.plan.hits[1:]:
        s = h.snippet
        if s.kind in ("restricted", "promotion") or h.confidence == "low" or h.snippet_id == best.snippet_id:
            continue
        b = best.snippet
        if s.product and b.product and s.product != b.product:
            continue
        same_topic = bool(s.product and s.product == b.product) or bool(set(s.tags) & set(b.tags))
        if not same_topic:
            continue
        if (
            overlap(s.question, b.question) >= NEAR_DUPLICATE
            or overlap(s.question, job.customer_message) >= NEAR_DUPLICATE_OF_MESSAGE
            or (s.answer and b.answer and overlap(s.answer, b.answer) >= NEAR_DUPLICATE)
        ):
            continue
        return h
    return None


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
            # one greeting per conversation: a hello later on is answered without another
            name = (
                "greeting" if job.first_reply or "greeting_again" not in norms.templates else "greeting_again"
            )
            out = [DraftCandidate(norms.render(name), "greeting", [], "greeting")]
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
        related = follow_up_hit(job, best)
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

"""The guard: every draft is checked and repaired by the norms, and LLM drafts are checked for facts
that their cited snippets do not contain (numbers, prices, dates, durations, promises)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prompts import CheckContext, Norms
from suggest.drafting import DraftCandidate

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千]+")


def _cn_to_int(s: str) -> int | None:
    """Small Chinese numerals (七, 十五, 二十四, 一百) as an int; None when it is not one."""
    total, current = 0, 0
    for ch in s:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        elif ch in "十百千":
            unit = {"十": 10, "百": 100, "千": 1000}[ch]
            total += (current or 1) * unit
            current = 0
        else:
            return None
    return total + current


def canonical_numbers(text: str) -> str:
    """Digits for Chinese numerals and full-width digits, so 七天 and ７天 both read 7天."""
    t = unicodedata.normalize("NFKC", text)
    return _CN_NUMBER.sub(lambda m: str(v) if (v := _cn_to_int(m.group())) is not None else m.group(), t)


@dataclass
class GuardedDraft:
    id: str
    text: str
    kind: str
    citations: list[dict[str, Any]]
    violations: list[dict[str, Any]]
    fixed_by_guard: bool
    fixes: list[str] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)
    style: str = ""
    source: str = "template"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "kind": self.kind,
            "style": self.style,
            "source": self.source,
            "citations": self.citations,
            "violations": self.violations,
            "fixed_by_guard": self.fixed_by_guard,
            "fixes": self.fixes,
            "ungrounded": self.ungrounded,
        }


class Guard:
    def __init__(self, norms: Norms) -> None:
        self.norms = norms
        g = norms.grounding
        self._facts = re.compile(g.fact_pattern)
        self._promises = tuple(g.promise_terms)

    def facts(self, text: str) -> list[str]:
        """The checkable claims of a text: numbers with their units, and promise words."""
        t = canonical_numbers(text)
        found = [m.group().strip() for m in self._facts.finditer(t)]
        found += [p for p in self._promises if p in t]
        return found

    def ungrounded(self, text: str, sources: Iterable[str]) -> list[str]:
        source = canonical_numbers(" ".join(sources))
        source_compact = re.sub(r"\s+", "", source)
        out = []
        for fact in self.facts(text):
            compact = re.sub(r"\s+", "", fact)
            if compact not in source_compact and fact not in out:
                out.append(fact)
        return out

    def apply(
        self, draft_id: str, cand: DraftCandidate, ctx: CheckContext, cited_texts: dict[str, str]
    ) -> GuardedDraft:
        result = self.norms.fix(cand.text, ctx)
        ungrounded: list[str] = []
        if cand.source == "llm":
            # The guard's own insertions (greeting, apology) are norms text, not claims: check the
            # drafter's text against the snippets it cites.
            ungrounded = self.ungrounded(
                cand.text, [cited_texts.get(c.snippet_id, "") for c in cand.citations]
            )
        return GuardedDraft(
            id=draft_id,
            text=result.text,
            kind=cand.kind,
            citations=[c.to_dict() for c in cand.citations],
            violations=[v.to_dict() for v in result.violations],
            fixed_by_guard=bool(result.applied),
            fixes=[f.rule_id for f in result.applied],
            ungrounded=ungrounded,
            style=cand.style,
            source=cand.source,
        )


def rank(drafts: list[GuardedDraft]) -> list[GuardedDraft]:
    """Grounded before ungrounded, then fewer remaining violations; otherwise the drafter's order."""
    return sorted(drafts, key=lambda d: (bool(d.ungrounded), len(d.violations)))

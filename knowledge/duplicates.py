"""New snippets that repeat what the published knowledge base already says.

An import (file, page or API) warns, naming the published snippet, when a snippet it creates has the
question, a similar question or the answer of a published one, compared after folding width, script,
case, spaces and punctuation. It never refuses: a second snippet may be meant (another product, another
season). Finding the published snippets to compare with costs one search per new question while the
import is small, so that it does not grow with the knowledge base (listing and normalising every
published text takes about 1 s per 10,000 snippets); a big import compares with every published snippet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from knowledge.model import Snippet, SnippetFilter
from knowledge.retriever import Hit, HybridRetriever
from knowledge.store import ImportReport, Store
from knowledge.text import normalize

#: Up to this many new questions, the published snippets to compare with are found by retrieval.
SEARCHED_TEXTS = 200
#: Snippets retrieved per new question (an identical question is the first hit; a few more for safety).
HITS_PER_TEXT = 5
_NOT_WORD = re.compile(r"[\W_]+")
_PUBLISHED = SnippetFilter(status="published", valid_on=None)


@dataclass(frozen=True)
class Duplicate:
    """A new snippet that says what a published one already says: a warning, never a refusal (a
    second snippet may be meant, e.g. for another product)."""

    snippet_id: str
    field: str  # "question", "similar_questions" or "answer" of the new snippet
    text: str
    published_id: str
    published_field: str

    def to_dict(self) -> dict[str, str]:
        return {
            "snippet_id": self.snippet_id,
            "field": self.field,
            "text": self.text,
            "published_id": self.published_id,
            "published_field": self.published_field,
        }


def _key(text: str) -> str:
    # Same words whatever the script, width, case, spacing and punctuation.
    return _NOT_WORD.sub("", normalize(text))


def _texts(s: Snippet) -> list[tuple[str, str, str]]:
    """(field, text, key) of the snippet's questions; texts of punctuation only have no key."""
    named = [("question", s.question), *(("similar_questions", q) for q in s.similar_questions)]
    return [(name, text, k) for name, text in named if (k := _key(text))]


def published_duplicates(new: Sequence[Snippet], published: Sequence[Snippet]) -> list[Duplicate]:
    """Each new snippet whose question, a similar question or its answer is (after normalisation) the
    same as a question, similar question or answer of a published snippet; one warning per pair."""
    questions: dict[str, tuple[str, str]] = {}
    answers: dict[str, str] = {}
    for p in published:
        if p.status != "published":
            continue
        for name, _text, k in _texts(p):
            questions.setdefault(k, (p.id, name))
        if _key(p.answer):
            answers.setdefault(_key(p.answer), p.id)
    out: list[Duplicate] = []
    for s in new:
        seen: set[str] = set()
        for name, text, k in _texts(s):
            hit = questions.get(k)
            if hit and hit[0] != s.id and hit[0] not in seen:
                seen.add(hit[0])
                out.append(Duplicate(s.id, name, text, hit[0], hit[1]))
        other = answers.get(_key(s.answer)) if _key(s.answer) else None
        if other and other != s.id and other not in seen:
            out.append(Duplicate(s.id, "answer", s.answer, other, "answer"))
    return out


def import_snippets(
    store: Store,
    retriever: HybridRetriever,
    items: Sequence[Snippet],
    *,
    actor: str,
    searched_texts: int = SEARCHED_TEXTS,
) -> tuple[ImportReport, list[Duplicate]]:
    """``store.import_snippets`` and the warnings for the snippets it created."""
    new = [s for s in items if store.find(s.id) is None] if len(items) <= searched_texts else None
    near: list[Snippet] | None = None
    if new is not None and sum(len(_texts(s)) for s in new) <= searched_texts:
        # Before the import, so that the search neither finds nor indexes the new snippets.
        found = {
            h.snippet.id: h.snippet for s in new for _n, text, _k in _texts(s) for h in _hits(retriever, text)
        }
        near = list(found.values())
    report = store.import_snippets(items, actor=actor)
    created = set(report.created)
    if not created:
        return report, []
    published = near if near is not None else store.list_snippets(status="published")
    return report, published_duplicates([s for s in items if s.id in created], published)


def _hits(retriever: HybridRetriever, text: str) -> list[Hit]:
    return retriever.search(text, k=HITS_PER_TEXT, flt=_PUBLISHED).hits

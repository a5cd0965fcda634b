"""One set of rules for a snippet's values, whether it comes from a file, the CLI or the API.

The rules live in :mod:`knowledge.io` (where every problem gets a file location); here they are
applied to a single Snippet and reported as a :class:`ValidationError` that names each field.
:func:`published_duplicates` finds new snippets that repeat a published one (a warning for imports).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from knowledge.errors import ImportFailed, ValidationError
from knowledge.io import snippet_from_dict
from knowledge.model import Snippet
from knowledge.text import normalize

_NOT_WORD = re.compile(r"[\W_]+")


def clean_snippet(s: Snippet) -> Snippet:
    """``s`` with its content checked and tidied by the import rules; raises ValidationError."""
    try:
        clean = snippet_from_dict(
            s.content(), source="snippet", location=s.id or "?", default_status=s.status
        )
    except ImportFailed as e:
        raise ValidationError(
            "；".join(f"{p.field or ''}: {p.message_zh}" for p in e.problems),
            "; ".join(f"{p.field or ''}: {p.message_en}" for p in e.problems),
            details=[p.to_dict() for p in e.problems],
        ) from e
    return clean.with_changes(version=s.version, updated_at=s.updated_at, updated_by=s.updated_by)


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

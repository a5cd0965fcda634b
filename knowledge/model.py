"""The knowledge model: a Snippet and the values it may take."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any

KINDS = ("faq", "product", "promotion", "policy", "restricted")
STATUSES = ("draft", "published", "archived")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

#: Limits that keep one bad row from filling the database or the index.
MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 20_000
MAX_SIMILAR = 200
MAX_TAGS = 50
MAX_TAG_CHARS = 64

#: The fields content staff edit; ``version`` and the audit fields are the store's.
CONTENT_FIELDS = (
    "kind",
    "question",
    "similar_questions",
    "answer",
    "tags",
    "product",
    "status",
    "valid_from",
    "valid_to",
)


@dataclass(frozen=True)
class Snippet:
    """One piece of knowledge: an FAQ, a product, a promotion, a policy or a restricted topic.

    ``question`` is the title for the non-FAQ kinds. Text is stored as written (display keeps the
    original); matching uses :func:`knowledge.text.normalize`.
    """

    id: str
    question: str
    answer: str = ""
    kind: str = "faq"
    similar_questions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    product: str | None = None
    status: str = "published"
    valid_from: date | None = None
    valid_to: date | None = None
    version: int = 0
    updated_at: datetime | None = None
    updated_by: str | None = None

    def content(self) -> dict[str, Any]:
        """The content fields in the JSONL interchange form (dates as ISO strings)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "question": self.question,
            "similar_questions": list(self.similar_questions),
            "answer": self.answer,
            "tags": list(self.tags),
            "product": self.product,
            "status": self.status,
            "valid_from": self.valid_from.isoformat() if self.valid_from else None,
            "valid_to": self.valid_to.isoformat() if self.valid_to else None,
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.content()
        out["version"] = self.version
        out["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        out["updated_by"] = self.updated_by
        return out

    def content_hash(self) -> str:
        """Hash of the content fields: equal hashes mean an import changes nothing."""
        blob = json.dumps(self.content(), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def texts(self) -> list[tuple[str, str]]:
        """The texts a snippet is matched by: ``("question", q)`` then ``("similar", s)`` each."""
        out = [("question", self.question)]
        seen = {self.question}
        for s in self.similar_questions:
            if s not in seen:
                seen.add(s)
                out.append(("similar", s))
        return out

    def is_valid_on(self, day: date) -> bool:
        if self.valid_from and day < self.valid_from:
            return False
        return not (self.valid_to and day > self.valid_to)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snippet:
        """The inverse of :meth:`to_dict` for trusted data (saved indexes, the database)."""

        def day(v: Any) -> date | None:
            return date.fromisoformat(v) if v else None

        return cls(
            id=d["id"],
            kind=d.get("kind") or "faq",
            question=d["question"],
            similar_questions=tuple(d.get("similar_questions") or ()),
            answer=d.get("answer") or "",
            tags=tuple(d.get("tags") or ()),
            product=d.get("product"),
            status=d.get("status") or "published",
            valid_from=day(d.get("valid_from")),
            valid_to=day(d.get("valid_to")),
            version=int(d.get("version") or 0),
            updated_at=datetime.fromisoformat(d["updated_at"]) if d.get("updated_at") else None,
            updated_by=d.get("updated_by"),
        )

    def with_changes(self, **changes: Any) -> Snippet:
        return replace(self, **changes)

    @property
    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SnippetFilter:
    """What a search or listing may return. ``status`` None means any status."""

    kinds: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    status: str | None = "published"
    valid_on: date | None = field(default_factory=date.today)

    @classmethod
    def hit_testing(
        cls, *, kinds: Any = (), products: Any = (), tags: Any = (), any_status: bool = False
    ) -> SnippetFilter:
        """What an agent would be served (published, valid today), or everything with ``any_status``."""
        return cls(
            kinds=tuple(kinds),
            products=tuple(products),
            tags=tuple(tags),
            status=None if any_status else "published",
            valid_on=None if any_status else date.today(),
        )

    def accepts(self, s: Snippet) -> bool:
        if self.status and s.status != self.status:
            return False
        if self.kinds and s.kind not in self.kinds:
            return False
        if self.products and s.product not in self.products:
            return False
        if self.tags and not set(self.tags) & set(s.tags):
            return False
        return not (self.valid_on and not s.is_valid_on(self.valid_on))

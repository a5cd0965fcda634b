"""Knowledge endpoints: hit testing (search) for now; snippet CRUD comes with the suggestion API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from knowledge.errors import ValidationError
from knowledge.model import KINDS, SnippetFilter
from knowledge.service import KnowledgeBase


@dataclass
class SearchRequest:
    query: str
    k: int = 5
    kinds: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: Also drafts and archived snippets, and any validity date (for editors' hit testing).
    any_status: bool = False


class KnowledgeController(Controller):
    path = "/v1/knowledge"
    tags = ["knowledge"]  # noqa: RUF012 - Litestar reads a plain list

    @post("/search", sync_to_thread=True, status_code=200)
    def search(self, data: JSONBody[SearchRequest], kb: NamedDependency[KnowledgeBase]) -> dict[str, Any]:
        """What a query retrieves: hits with the matched text, scores and a confidence label."""
        if not data.query.strip():
            raise ValidationError("查询不能为空", "query must not be empty")
        if len(data.query) > 2000:
            raise ValidationError("查询太长（最多 2000 个字符）", "query too long (at most 2000 characters)")
        if not 1 <= data.k <= 50:
            raise ValidationError("k 必须在 1 到 50 之间", "k must be between 1 and 50")
        bad = [k for k in data.kinds if k not in KINDS]
        if bad:
            raise ValidationError(f"未知类型：{bad}", f"unknown kinds: {bad}")
        flt = SnippetFilter.hit_testing(
            kinds=data.kinds, products=data.products, tags=data.tags, any_status=data.any_status
        )
        return kb.retriever.search(data.query, k=data.k, flt=flt).to_dict()

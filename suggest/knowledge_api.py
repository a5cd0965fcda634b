"""Knowledge endpoints for content staff: snippets with ETag/If-Match, hit testing, import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody

from knowledge.duplicates import import_snippets
from knowledge.errors import ValidationError
from knowledge.io import FORMATS, detect_format, parse_snippets, snippet_from_dict
from knowledge.model import CONTENT_FIELDS, KINDS, STATUSES, Snippet, SnippetFilter
from knowledge.service import KnowledgeBase
from suggest.auth import EDITORS, READERS, allow
from suggest.http import caller, if_match, stale_is_412

MAX_IMPORT_BYTES = 20 * 1024 * 1024


@dataclass
class SearchRequest:
    query: str
    k: int = 5
    kinds: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: Also drafts and archived snippets, and any validity date (for editors' hit testing).
    any_status: bool = False


def etag(s: Snippet) -> str:
    return f'"v{s.version}"'


def _with_etag(s: Snippet, status: int = 200) -> Response[dict[str, Any]]:
    return Response(s.to_dict(), status_code=status, headers={"ETag": etag(s)})


class KnowledgeController(Controller):
    path = "/v1/knowledge"
    tags = ["knowledge"]  # noqa: RUF012 - Litestar reads a plain list

    @post("/search", sync_to_thread=True, status_code=200, guards=[allow(*READERS)])
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

    @get("/snippets", sync_to_thread=True, guards=[allow(*READERS)])
    def list_snippets(
        self,
        kb: NamedDependency[KnowledgeBase],
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        product: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        offset: FromQuery[int] = 0,
    ) -> dict[str, Any]:
        """Snippets, filtered and paged (id order)."""
        if kind is not None and kind not in KINDS:
            raise ValidationError(f"未知类型：{kind}", f"unknown kind {kind!r}")
        if status is not None and status not in STATUSES:
            raise ValidationError(f"未知状态：{status}", f"unknown status {status!r}")
        if not 1 <= limit <= 1000 or offset < 0:
            raise ValidationError(
                "limit 必须在 1 到 1000 之间，offset 不能为负", "limit must be 1-1000, offset >= 0"
            )
        items = kb.store.list_snippets(kind=kind, status=status, product=product, tag=tag, query=q)
        return {
            "total": len(items),
            "offset": offset,
            "items": [s.to_dict() for s in items[offset : offset + limit]],
            "kb_revision": kb.store.revision(),
        }

    @post("/snippets", sync_to_thread=True, guards=[allow(*EDITORS)])
    def create(
        self,
        data: JSONBody[dict[str, Any]],
        kb: NamedDependency[KnowledgeBase],
        request: Request[Any, Any, Any],
    ) -> Response[dict[str, Any]]:
        """Create a snippet (a draft unless ``status`` says otherwise); the response carries its ETag."""
        snippet = snippet_from_dict(data, source="request", location="body", default_status="draft")
        return _with_etag(kb.store.add(snippet, actor=f"key:{caller(request)}"), 201)

    @get("/snippets/{snippet_id:str}", sync_to_thread=True, guards=[allow(*READERS)])
    def read(self, snippet_id: FromPath[str], kb: NamedDependency[KnowledgeBase]) -> Response[dict[str, Any]]:
        return _with_etag(kb.store.get(snippet_id))

    @put("/snippets/{snippet_id:str}", sync_to_thread=True, guards=[allow(*EDITORS)])
    def update(
        self,
        snippet_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
        kb: NamedDependency[KnowledgeBase],
        request: Request[Any, Any, Any],
    ) -> Response[dict[str, Any]]:
        """Change content fields (those given); If-Match must carry the ETag you read, else 412."""
        version = if_match(request)
        changes = {k: v for k, v in data.items() if k not in ("id", "version", "updated_at", "updated_by")}
        if "id" in data and data["id"] != snippet_id:
            raise ValidationError("不能修改编号 id", "the id cannot be changed")
        unknown = sorted(set(changes) - set(CONTENT_FIELDS))
        if unknown:
            raise ValidationError(f"未知字段：{unknown}", f"unknown fields: {unknown}")
        with stale_is_412():
            s = kb.store.update(snippet_id, changes, expected_version=version, actor=f"key:{caller(request)}")
        return _with_etag(s)

    @delete("/snippets/{snippet_id:str}", sync_to_thread=True, guards=[allow(*EDITORS)], status_code=204)
    def remove(
        self, snippet_id: FromPath[str], kb: NamedDependency[KnowledgeBase], request: Request[Any, Any, Any]
    ) -> None:
        """Delete a snippet (its history stays); If-Match must carry the ETag you read."""
        version = if_match(request)
        with stale_is_412():
            kb.store.delete(snippet_id, expected_version=version, actor=f"key:{caller(request)}")

    @post("/import", sync_to_thread=True, guards=[allow(*EDITORS)], status_code=200)
    def import_file(
        self,
        data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
        kb: NamedDependency[KnowledgeBase],
        request: Request[Any, Any, Any],
        format: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Import a JSONL, CSV, XLSX or Markdown file (form field ``data``); any error imports nothing."""
        name = PurePath(data.filename or "upload").name
        fmt = format or detect_format(name)
        if fmt not in FORMATS:
            raise ValidationError(f"未知格式：{fmt}", f"unknown format {fmt!r}; use one of {FORMATS}")
        content = data.file.read(MAX_IMPORT_BYTES + 1)
        if len(content) > MAX_IMPORT_BYTES:
            raise ValidationError(
                f"文件太大（最多 {MAX_IMPORT_BYTES // 1024 // 1024} MB）",
                f"file too large (at most {MAX_IMPORT_BYTES // 1024 // 1024} MB)",
            )
        items = parse_snippets(content, fmt, source=name)
        report, duplicates = import_snippets(kb.store, kb.retriever, items, actor=f"key:{caller(request)}")
        return {"file": name, **report.to_dict(), "duplicates": [d.to_dict() for d in duplicates]}

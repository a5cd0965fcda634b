"""Fragments of the knowledge editor: hit testing, the snippet list and form, publish/archive,
revision history with a diff, file import with its problems by line (and a warning for a new snippet
that repeats a published one), candidate similar questions and knowledge gaps.

Candidates and gaps are rendered here like the rest of the editor (same services as
``/v1/knowledge/candidates`` and ``/v1/knowledge/gaps``), so their times are in the service's zone and
their codes are labels in the page's language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Template

from knowledge.candidates import STATUSES as CANDIDATE_STATUSES
from knowledge.duplicates import import_snippets
from knowledge.errors import ImportFailed, ValidationError
from knowledge.gaps import find_gaps, gap_to_snippet, meaning_embedder
from knowledge.io import FORMATS, detect_format, parse_snippets, snippet_from_dict
from knowledge.model import KINDS, STATUSES, SnippetFilter
from knowledge.service import KnowledgeBase
from suggest.auth import allow
from suggest.http import caller, stale_is_412
from suggest.knowledge_api import MAX_IMPORT_BYTES
from suggest.web.common import KB_EDITORS, KB_LEARNING_READERS, KB_READERS, render
from suggest.web.diff import field_diffs

FORM = Body(media_type=RequestEncodingType.URL_ENCODED)
LIST_LIMIT = 200
CANDIDATES_SHOWN = 50
GAPS_SHOWN = 20
GAP_DAYS = 30
_SPLIT_TAGS = re.compile(r"[,，、;；\s]+")


@dataclass
class SearchForm:
    query: str = ""
    k: int = 5
    any_status: str = ""


@dataclass
class SnippetForm:
    id: str = ""
    kind: str = "faq"
    question: str = ""
    answer: str = ""
    similar_questions: str = ""  # one a line
    tags: str = ""  # separated by commas, 、 or spaces
    product: str = ""
    status: str = "draft"
    valid_from: str = ""
    valid_to: str = ""
    version: int = 0

    def fields(self) -> dict[str, Any]:
        """The snippet's content fields in the JSONL interchange form (what the import rules validate)."""
        return {
            "id": self.id.strip(),
            "kind": self.kind,
            "question": self.question.strip(),
            "answer": self.answer.strip(),
            "similar_questions": [s.strip() for s in self.similar_questions.splitlines() if s.strip()],
            "tags": [s for s in _SPLIT_TAGS.split(self.tags.strip()) if s],
            "product": self.product.strip() or None,
            "status": self.status,
            "valid_from": self.valid_from.strip() or None,
            "valid_to": self.valid_to.strip() or None,
        }


@dataclass
class StatusForm:
    status: str
    version: int


@dataclass
class SimilarForm:
    text: str
    version: int
    reply: str = "editor"  # "hit": answer with the hit-testing row's confirmation, keeping the results


@dataclass
class CandidateForm:
    action: str
    reason: str = ""


@dataclass
class GapSnippetForm:
    id: str
    question: str
    answer: str


def _actor(request: Request[Any, Any, Any]) -> str:
    return f"key:{caller(request)}"


class KnowledgeFragments(Controller):
    path = "/ui/kb"
    include_in_schema = False

    @post("/search", sync_to_thread=True, guards=[allow(*KB_READERS)], status_code=200)
    def search(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[SearchForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Hit testing: what a query retrieves, with the matched text, the scores and the confidence."""
        query = data.query.strip()
        if not query:
            raise ValidationError("请输入要测试的问题", "type a question to test")
        if len(query) > 2000 or not 1 <= data.k <= 50:
            raise ValidationError(
                "问题最多 2000 字，k 在 1 到 50 之间", "at most 2000 characters; k from 1 to 50"
            )
        flt = SnippetFilter.hit_testing(any_status=bool(data.any_status))
        cfg = kb.retriever.config
        return render(
            request,
            "fragments/search.html",
            result=kb.retriever.search(query, k=data.k, flt=flt),
            high=cfg.high,
            medium=cfg.medium,
        )

    @get("/snippets", sync_to_thread=True, guards=[allow(*KB_READERS)])
    def snippets(
        self,
        request: Request[Any, Any, Any],
        kb: NamedDependency[KnowledgeBase],
        q: FromQuery[str] = "",
        kind: FromQuery[str] = "",
        status: FromQuery[str] = "",
    ) -> Template:
        if kind and kind not in KINDS:
            raise ValidationError(f"未知类型：{kind}", f"unknown kind {kind!r}")
        if status and status not in STATUSES:
            raise ValidationError(f"未知状态：{status}", f"unknown status {status!r}")
        items = kb.store.list_snippets(kind=kind or None, status=status or None, query=q.strip() or None)
        return render(
            request,
            "fragments/snippet_list.html",
            items=items[:LIST_LIMIT],
            total=len(items),
            limit=LIST_LIMIT,
        )

    @get("/snippets/{snippet_id:str}", sync_to_thread=True, guards=[allow(*KB_READERS)])
    def snippet(
        self, request: Request[Any, Any, Any], snippet_id: FromPath[str], kb: NamedDependency[KnowledgeBase]
    ) -> Template:
        return self._editor(request, kb.store.get(snippet_id).to_dict())

    @get("/peek/{snippet_id:str}", sync_to_thread=True, guards=[allow(*KB_READERS)])
    def peek(
        self, request: Request[Any, Any, Any], snippet_id: FromPath[str], kb: NamedDependency[KnowledgeBase]
    ) -> Template:
        """A cited snippet, as the agent sees it next to the draft."""
        return render(request, "fragments/peek.html", s=kb.store.get(snippet_id))

    @get("/new", guards=[allow(*KB_EDITORS)], sync_to_thread=False)
    def new(self, request: Request[Any, Any, Any]) -> Template:
        return self._editor(request, None)

    @post("/snippets", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200)
    def create(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[SnippetForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        fields = data.fields()
        try:
            snippet = snippet_from_dict(fields, source="form", location="form", default_status="draft")
        except ImportFailed as e:
            return self._editor(request, None, form=fields, problems=e.problems, status_code=422)
        created = kb.store.add(snippet, actor=_actor(request))
        return self._editor(request, created.to_dict(), saved=True, trigger="kefu:kb-changed")

    @post("/snippets/{snippet_id:str}", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200)
    def update(
        self,
        request: Request[Any, Any, Any],
        snippet_id: FromPath[str],
        data: Annotated[SnippetForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Save the form; the version read travels with it, so someone else's newer edit is never overwritten."""
        fields = {**data.fields(), "id": snippet_id}
        try:
            checked = snippet_from_dict(fields, source="form", location="form", default_status="draft")
        except ImportFailed as e:
            return self._editor(
                request, None, form={**fields, "version": data.version}, problems=e.problems, status_code=422
            )
        changes = checked.content()
        changes.pop("id")
        with stale_is_412():
            saved = kb.store.update(snippet_id, changes, expected_version=data.version, actor=_actor(request))
        return self._editor(request, saved.to_dict(), saved=True, trigger="kefu:kb-changed")

    @post(
        "/snippets/{snippet_id:str}/status", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200
    )
    def set_status(
        self,
        request: Request[Any, Any, Any],
        snippet_id: FromPath[str],
        data: Annotated[StatusForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Publish or archive (or back to draft)."""
        if data.status not in STATUSES:
            raise ValidationError(f"未知状态：{data.status}", f"unknown status {data.status!r}")
        with stale_is_412():
            saved = kb.store.set_status(
                snippet_id, data.status, expected_version=data.version, actor=_actor(request)
            )
        return self._editor(request, saved.to_dict(), saved=True, trigger="kefu:kb-changed")

    @post(
        "/snippets/{snippet_id:str}/similar",
        sync_to_thread=True,
        guards=[allow(*KB_EDITORS)],
        status_code=200,
    )
    def add_similar(
        self,
        request: Request[Any, Any, Any],
        snippet_id: FromPath[str],
        data: Annotated[SimilarForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Add a tested query as a similar question of a hit (from the hit-testing table)."""
        text = " ".join(data.text.split())
        if not text or len(text) > 500:
            raise ValidationError(
                "相似问必须是 1 到 500 个字符", "a similar question must be 1 to 500 characters"
            )
        current = kb.store.get(snippet_id)
        if text in current.similar_questions or text == current.question:
            saved, trigger = current, None
        else:
            with stale_is_412():
                saved = kb.store.update(
                    snippet_id,
                    {"similar_questions": [*current.similar_questions, text]},
                    expected_version=data.version,
                    actor=_actor(request),
                )
            trigger = "kefu:kb-changed"
        if data.reply == "hit":
            return render(
                request,
                "fragments/similar_added.html",
                snippet=saved,
                text=text,
                headers={"HX-Trigger": trigger} if trigger else None,
            )
        return self._editor(request, saved.to_dict(), saved=True, trigger=trigger)

    @get("/snippets/{snippet_id:str}/history", sync_to_thread=True, guards=[allow(*KB_READERS)])
    def history(
        self, request: Request[Any, Any, Any], snippet_id: FromPath[str], kb: NamedDependency[KnowledgeBase]
    ) -> Template:
        """Every revision, newest first: who, when, and what changed from what to what."""
        revisions = [(r, field_diffs(r.changes)) for r in reversed(kb.store.history(snippet_id))]
        return render(request, "fragments/history.html", snippet_id=snippet_id, revisions=revisions)

    @post("/import", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200)
    def import_file(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[UploadFile, Body(media_type=RequestEncodingType.MULTI_PART)],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Import a JSONL, CSV, XLSX or Markdown file; any problem imports nothing and is shown by line."""
        name = PurePath(data.filename or "upload").name
        fmt = detect_format(name)
        if fmt not in FORMATS:
            raise ValidationError(
                f"不认识的文件类型：{name}（支持 {', '.join(FORMATS)}）",
                f"unknown file type: {name} (supported: {', '.join(FORMATS)})",
            )
        content = data.file.read(MAX_IMPORT_BYTES + 1)
        if len(content) > MAX_IMPORT_BYTES:
            raise ValidationError(
                f"文件太大（最多 {MAX_IMPORT_BYTES // 1024 // 1024} MB）",
                f"file too large (at most {MAX_IMPORT_BYTES // 1024 // 1024} MB)",
            )
        try:
            report, duplicates = import_snippets(
                kb.store, kb.retriever, parse_snippets(content, fmt, source=name), actor=_actor(request)
            )
        except ImportFailed as e:
            return render(request, "fragments/import.html", name=name, problems=e.problems, status_code=422)
        return render(
            request,
            "fragments/import.html",
            name=name,
            report=report,
            duplicates=duplicates,
            headers={"HX-Trigger": "kefu:kb-changed"},
        )

    @get("/candidates", sync_to_thread=True, guards=[allow(*KB_LEARNING_READERS)])
    def candidates(
        self,
        request: Request[Any, Any, Any],
        kb: NamedDependency[KnowledgeBase],
        status: FromQuery[str] = "pending",
    ) -> Template:
        """Candidate similar questions from approved replies (pending ones oldest first)."""
        return self._candidates(request, kb, status)

    @post("/candidates/{candidate_id:int}", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200)
    def decide_candidate(
        self,
        request: Request[Any, Any, Any],
        candidate_id: FromPath[int],
        data: Annotated[CandidateForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """Accept (the text joins the snippet's similar questions) or reject a candidate."""
        cands = kb.candidates()
        reason = data.reason.strip() or None
        if data.action == "accept":
            done = cands.accept(candidate_id, actor=_actor(request), reason=reason)
        elif data.action == "reject":
            done = cands.reject(candidate_id, actor=_actor(request), reason=reason)
        else:
            raise ValidationError("操作必须是接受或拒绝", "action must be accept or reject")
        return self._candidates(request, kb, "pending", done=done, trigger="kefu:kb-changed")

    @get("/gaps", sync_to_thread=True, guards=[allow(*KB_LEARNING_READERS)])
    def gaps(self, request: Request[Any, Any, Any], kb: NamedDependency[KnowledgeBase]) -> Template:
        """Escalated and low-confidence questions grouped by similarity, biggest first."""
        return self._gaps(request, kb)

    @post("/gaps/{gap_id:str}/snippet", sync_to_thread=True, guards=[allow(*KB_EDITORS)], status_code=200)
    def gap_snippet(
        self,
        request: Request[Any, Any, Any],
        gap_id: FromPath[str],
        data: Annotated[GapSnippetForm, FORM],
        kb: NamedDependency[KnowledgeBase],
    ) -> Template:
        """One step from a gap to a published snippet; the gap then leaves the list."""
        created = gap_to_snippet(
            kb.store,
            kb.analyzer,
            meaning_embedder(kb.embedder),
            gap_id,
            {"id": data.id.strip(), "question": data.question.strip(), "answer": data.answer.strip()},
            actor=_actor(request),
            days=GAP_DAYS,
            index=kb.index,
        )
        return self._gaps(request, kb, created=created.id, trigger="kefu:kb-changed")

    # -- helpers ---------------------------------------------------------------------------------

    def _candidates(
        self,
        request: Request[Any, Any, Any],
        kb: KnowledgeBase,
        status: str,
        *,
        done: Any = None,
        trigger: str | None = None,
    ) -> Template:
        if status not in CANDIDATE_STATUSES:
            raise ValidationError(f"未知状态：{status}", f"unknown status {status!r}")
        items, total = kb.candidates().list(status, limit=CANDIDATES_SHOWN)
        return render(
            request,
            "fragments/candidates.html",
            headers={"HX-Trigger": trigger} if trigger else None,
            items=items,
            total=total,
            status=status,
            done=done,
        )

    def _gaps(
        self,
        request: Request[Any, Any, Any],
        kb: KnowledgeBase,
        *,
        created: str | None = None,
        trigger: str | None = None,
    ) -> Template:
        found = find_gaps(
            kb.store,
            kb.analyzer,
            meaning_embedder(kb.embedder),
            days=GAP_DAYS,
            limit=GAPS_SHOWN,
            index=kb.index,
        )
        return render(
            request,
            "fragments/gaps.html",
            headers={"HX-Trigger": trigger} if trigger else None,
            gaps=[g.to_dict() for g in found],
            days=GAP_DAYS,
            created=created,
        )

    def _editor(
        self,
        request: Request[Any, Any, Any],
        snippet: dict[str, Any] | None,
        *,
        form: dict[str, Any] | None = None,
        problems: Any = None,
        saved: bool = False,
        trigger: str | None = None,
        status_code: int = 200,
    ) -> Template:
        return render(
            request,
            "fragments/snippet_form.html",
            status_code=status_code,
            headers={"HX-Trigger": trigger} if trigger else None,
            snippet=snippet,
            form=form or snippet or {"kind": "faq", "status": "draft"},
            problems=problems or [],
            saved=saved,
            kinds=KINDS,
            statuses=STATUSES,
        )

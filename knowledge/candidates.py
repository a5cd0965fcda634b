"""Candidate similar questions from approved replies.

When an agent approves or edits a draft that answered from a snippet, the customer's message is a
real paraphrase of that snippet's question: a candidate similar question (相似问法). Editors accept
or reject candidates; an accepted one is appended to the snippet's ``similar_questions`` (a new
revision, indexed at once in this process and at the next search in the others), and every tune
trains on it. The suggestion service records candidates through :func:`record_candidate`, inside
the transaction that stores the decision.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from knowledge import schema as t
from knowledge.errors import ConflictError, NotFoundError, ValidationError
from knowledge.model import MAX_QUESTION_CHARS, MAX_SIMILAR
from knowledge.store import Store, writing
from knowledge.text import normalize
from knowledge.tuning import Pair

log = logging.getLogger(__name__)

STATUSES = ("pending", "accepted", "rejected")


class CandidateDecided(ConflictError):
    """The candidate was accepted or rejected already (409)."""

    code = "candidate_decided"


@dataclass(frozen=True)
class Candidate:
    id: int
    snippet_id: str
    snippet_question: str | None
    text: str
    suggestion_id: str | None
    conversation_id: str | None
    status: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "snippet_id": self.snippet_id,
            "snippet_question": self.snippet_question,
            "text": self.text,
            "suggestion_id": self.suggestion_id,
            "conversation_id": self.conversation_id,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
            "reason": self.reason,
        }


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _known_texts(conn: Connection, snippet_id: str) -> set[str] | None:
    """The normalised question and similar questions of a snippet (None: no such snippet)."""
    import json

    row = conn.execute(
        select(t.snippets.c.question, t.snippets.c.similar_questions).where(t.snippets.c.id == snippet_id)
    ).first()
    if row is None:
        return None
    return {normalize(q) for q in [row.question, *json.loads(row.similar_questions)]}


def record_candidate(
    conn: Connection,
    *,
    snippet_id: str,
    text: str,
    suggestion_id: str | None,
    conversation_id: str | None,
    at: datetime,
) -> int | None:
    """Add a pending candidate in the caller's transaction; None when it would teach nothing (the
    snippet already has this question, the same candidate is pending or was decided, or it is too long)."""
    text = " ".join(text.split())
    if not text or len(text) > MAX_QUESTION_CHARS:
        return None
    norm = normalize(text)
    known = _known_texts(conn, snippet_id)
    if known is None or norm in known:
        return None
    dup = conn.execute(
        select(t.snippet_candidates.c.id).where(
            t.snippet_candidates.c.snippet_id == snippet_id, t.snippet_candidates.c.norm_text == norm
        )
    ).first()
    if dup is not None:
        return None
    result = conn.execute(
        t.snippet_candidates.insert().values(
            snippet_id=snippet_id,
            text=text,
            norm_text=norm,
            suggestion_id=suggestion_id,
            conversation_id=conversation_id,
            status="pending",
            created_at=at,
        )
    )
    pk = result.inserted_primary_key
    return int(pk[0]) if pk else None


class Candidates:
    """Listing and deciding candidates of one knowledge store."""

    def __init__(self, store: Store, *, on_accept: Callable[[int], None] | None = None) -> None:
        self.store = store
        #: Called with the number of accepted candidates after each accept (automatic re-tuning).
        self.on_accept = on_accept

    def _select(self) -> Any:
        c = t.snippet_candidates.c
        return select(t.snippet_candidates, t.snippets.c.question.label("snippet_question")).select_from(
            t.snippet_candidates.outerjoin(t.snippets, t.snippets.c.id == c.snippet_id)
        )

    @staticmethod
    def _row(r: Any) -> Candidate:
        return Candidate(
            id=int(r.id),
            snippet_id=r.snippet_id,
            snippet_question=r.snippet_question,
            text=r.text,
            suggestion_id=r.suggestion_id,
            conversation_id=r.conversation_id,
            status=r.status,
            created_at=_aware(r.created_at) or datetime.now(UTC),
            decided_at=_aware(r.decided_at),
            decided_by=r.decided_by,
            reason=r.reason,
        )

    def list(
        self, status: str = "pending", *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Candidate], int]:
        if status not in STATUSES:
            raise ValidationError(
                f"状态必须是 {', '.join(STATUSES)} 之一", f"status must be one of {', '.join(STATUSES)}"
            )
        if not 1 <= limit <= 1000 or offset < 0:
            raise ValidationError("limit 必须在 1 到 1000 之间", "limit must be between 1 and 1000")
        c = t.snippet_candidates.c
        # Pending: oldest first (a queue); decided: newest decisions first.
        order = (c.id,) if status == "pending" else (c.decided_at.desc(), c.id.desc())
        with self.store.engine.connect() as conn:
            total = int(
                conn.execute(
                    select(func.count()).select_from(t.snippet_candidates).where(c.status == status)
                ).scalar_one()
            )
            rows = conn.execute(
                self._select().where(c.status == status).order_by(*order).limit(limit).offset(offset)
            )
            return [self._row(r) for r in rows], total

    def get(self, candidate_id: int) -> Candidate:
        with self.store.engine.connect() as conn:
            row = conn.execute(self._select().where(t.snippet_candidates.c.id == candidate_id)).first()
        if row is None:
            raise NotFoundError(f"候选问法 {candidate_id} 不存在", f"candidate {candidate_id} does not exist")
        return self._row(row)

    def _decide(self, candidate_id: int, status: str, actor: str, reason: str | None) -> Candidate:
        c = t.snippet_candidates.c
        with writing(self.store.engine) as conn:
            n = conn.execute(
                t.snippet_candidates.update()
                .where(c.id == candidate_id, c.status == "pending")
                .values(status=status, decided_at=datetime.now(UTC), decided_by=actor, reason=reason)
            ).rowcount
        if not n:
            current = self.get(candidate_id)  # 404 when unknown
            raise CandidateDecided(
                f"候选问法 {candidate_id} 已经处理过（{current.status}）",
                f"candidate {candidate_id} was already decided ({current.status})",
                details={"status": current.status},
            )
        return self.get(candidate_id)

    def accept(self, candidate_id: int, *, actor: str, reason: str | None = None) -> Candidate:
        """Append the candidate to its snippet's similar questions, then mark it accepted."""
        cand = self.get(candidate_id)
        if cand.status != "pending":
            raise CandidateDecided(
                f"候选问法 {candidate_id} 已经处理过（{cand.status}）",
                f"candidate {candidate_id} was already decided ({cand.status})",
                details={"status": cand.status},
            )
        self._append_similar(cand.snippet_id, cand.text, actor)
        decided = self._decide(candidate_id, "accepted", actor, reason)
        self._accepted()
        return decided

    def reject(self, candidate_id: int, *, actor: str, reason: str | None = None) -> Candidate:
        return self._decide(candidate_id, "rejected", actor, reason)

    def add_accepted(self, snippet_id: str, text: str, *, actor: str) -> Candidate:
        """An editor adds a similar question directly: recorded as an accepted candidate."""
        text = " ".join((text or "").split())
        if not text:
            raise ValidationError("相似问法不能为空", "the similar question must not be empty")
        if len(text) > MAX_QUESTION_CHARS:
            raise ValidationError(
                f"相似问法太长（最多 {MAX_QUESTION_CHARS} 个字符）",
                f"the similar question is too long (at most {MAX_QUESTION_CHARS} characters)",
            )
        self._append_similar(snippet_id, text, actor)
        now = datetime.now(UTC)
        with writing(self.store.engine) as conn:
            pk = conn.execute(
                t.snippet_candidates.insert().values(
                    snippet_id=snippet_id,
                    text=text,
                    norm_text=normalize(text),
                    status="accepted",
                    created_at=now,
                    decided_at=now,
                    decided_by=actor,
                    reason="added by an editor",
                )
            ).inserted_primary_key
        self._accepted()
        assert pk is not None
        return self.get(int(pk[0]))

    def _append_similar(self, snippet_id: str, text: str, actor: str) -> None:
        for _ in range(3):  # an edit by someone else in between: read again and retry
            s = self.store.get(snippet_id)
            if normalize(text) in {normalize(q) for q in (s.question, *s.similar_questions)}:
                return
            if len(s.similar_questions) >= MAX_SIMILAR:
                raise ValidationError(
                    f"知识条目 {snippet_id} 的相似问法已达上限 {MAX_SIMILAR}",
                    f"snippet {snippet_id!r} already has the most similar questions allowed ({MAX_SIMILAR})",
                )
            try:
                self.store.update(
                    snippet_id,
                    {"similar_questions": [*s.similar_questions, text]},
                    expected_version=s.version,
                    actor=actor,
                )
                return
            except ConflictError:
                continue
        raise ConflictError(
            f"知识条目 {snippet_id} 正在被频繁修改，请稍后再试",
            f"snippet {snippet_id!r} keeps changing; try again later",
        )

    def _accepted(self) -> None:
        if self.on_accept is not None:
            try:
                self.on_accept(self.count("accepted"))
            except Exception:  # re-tuning is best effort; the accept itself is done
                log.exception("after-accept hook failed")

    def count(self, status: str) -> int:
        with self.store.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(t.snippet_candidates)
                    .where(t.snippet_candidates.c.status == status)
                ).scalar_one()
            )

    def training_pairs(self) -> builtins.list[Pair]:
        """(customer message, snippet question) of the pending candidates: approved by an agent,
        not yet reviewed, so they train the model but are not searchable. Accepted ones are similar
        questions already, and rejected ones are left out."""
        c = t.snippet_candidates.c
        stmt = (
            select(c.text, c.snippet_id, t.snippets.c.question)
            .select_from(t.snippet_candidates.join(t.snippets, t.snippets.c.id == c.snippet_id))
            .where(c.status == "pending")
            .order_by(c.id)
        )
        with self.store.engine.connect() as conn:
            return [Pair(text, question, sid) for text, sid, question in conn.execute(stmt)]

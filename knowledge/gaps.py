"""Knowledge gaps: questions the knowledge base could not answer, grouped by meaning.

The suggestion service notes every escalated question, and every question whose best snippet had
low retrieval confidence, with :func:`record_gap_question` (in the transaction that stores the
suggestion). :func:`find_gaps` groups the unresolved ones of the last days by average-linkage
clustering (two groups merge while their questions are, on average, similar enough), each group led
by its earliest question (so a gap keeps its id as questions arrive). Biggest gaps first.

Similarity, with the service's own embedder (e5, alone or fused with the KB's tuned model; its
vectors are cached in the database like the index's): mostly *where the questions land in the
knowledge base* (the cosine of their soft top-5 snippets in the dense index: two customers whose
questions come closest to the same few snippets ask about the same thing, even in different
words), plus a fifth of the questions' own cosine (rescaled from the embedder's unrelated-text
level); a question near nothing in the KB (a real gap) groups by its own meaning alone. Without an embedder that
knows Chinese, TF-IDF over the analyzer's tokens. Measured on bq-dev, with the KB as it is and with
the questions' own snippets removed (every question a real gap): docs/benchmarks.md, "Issue 14:
knowledge gaps grouped by meaning" (``kefu eval gaps``), with the alternatives that lost.
An editor turns a gap into a new snippet in one step (:func:`gap_to_snippet`); its questions are
then resolved and the gap disappears.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import csr_matrix
from scipy.spatial.distance import squareform
from sqlalchemy import Connection, select

from knowledge import schema as t
from knowledge.direct import DirectStatement
from knowledge.e5 import E5Embedder
from knowledge.embedding import Embedder
from knowledge.encoders import FusedEmbedder
from knowledge.errors import NotFoundError, ValidationError
from knowledge.index import KnowledgeIndex, embed_cached_parts
from knowledge.io import snippet_from_dict
from knowledge.model import MAX_QUESTION_CHARS, MAX_SIMILAR, Snippet
from knowledge.store import Store, writing
from knowledge.text import Analyzer, normalize

REASONS = ("escalated", "low_confidence")
#: Average similarity from which two groups merge (chosen on bq-dev queries; the alternatives measured
#: since on a held-out half and on real gaps did not beat it on both: docs/benchmarks.md).
DEFAULT_THRESHOLD = 0.5
#: The same for TF-IDF alone (no embedder that knows Chinese).
LEXICAL_THRESHOLD = 0.4
#: Snippets of the KB that place a question (its neighbourhood), and how sharply the best counts:
#: weights exp((score - best) / temperature) (cosines of e5 are compressed near 1).
NEIGHBOURS = 5
NEIGHBOUR_TEMPERATURE = 0.02
#: Share of the questions' own cosine in the similarity (the rest: their KB neighbourhoods).
DIRECT_SHARE = 0.2
#: A neighbourhood counts only for a question that is near something in the KB: not below this
#: (rescaled) similarity of its closest text, fully from the second (e5: cosine 0.85 / 0.92; 95% of
#: bq-dev's questions are above 0.93). Questions near nothing group by their own meaning alone.
NEAR_FROM, NEAR_FULL = 0.4, 0.7
MAX_EXAMPLES = 5
#: The most recent open questions grouped (their similarity matrix is held in memory).
MAX_QUESTIONS = 3000


@dataclass(frozen=True)
class GapQuestion:
    id: int
    text: str
    reason: str
    conversation_id: str | None
    at: datetime


@dataclass
class Gap:
    id: str
    label: str
    questions: list[GapQuestion] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.questions)

    def example_texts(self, limit: int | None = None) -> list[str]:
        """Distinct texts, the most frequent first (ties: earliest)."""
        counts = Counter(normalize(q.text) for q in self.questions)
        seen: dict[str, str] = {}
        for q in self.questions:
            seen.setdefault(normalize(q.text), q.text)
        ordered = sorted(seen, key=lambda n: -counts[n])
        return [seen[n] for n in ordered][:limit]

    def to_dict(self) -> dict[str, Any]:
        reasons = Counter(q.reason for q in self.questions)
        recent = sorted(self.questions, key=lambda q: (q.at, q.id), reverse=True)
        return {
            "id": self.id,
            "label": self.label,
            "count": self.count,
            "examples": [
                {"text": q.text, "conversation_id": q.conversation_id, "at": q.at.isoformat()}
                for q in recent[:MAX_EXAMPLES]
            ],
            "reasons": {r: reasons.get(r, 0) for r in REASONS},
            "first_seen": min(q.at for q in self.questions).isoformat(),
            "last_seen": max(q.at for q in self.questions).isoformat(),
        }


def record_gap_question(
    conn: Connection,
    *,
    text: str,
    reason: str,
    conversation_id: str | None,
    suggestion_id: str | None,
    at: datetime,
    confidence_score: float | None = None,
    top_snippet_id: str | None = None,
) -> None:
    """Note a question the KB could not answer well, in the caller's transaction."""
    if reason not in REASONS or not text.strip():
        return
    _INSERT_GAP.execute(
        conn,
        dict(
            text=text[:MAX_QUESTION_CHARS],
            reason=reason,
            conversation_id=conversation_id,
            suggestion_id=suggestion_id,
            at=at,
            confidence_score=confidence_score,
            top_snippet_id=top_snippet_id,
        ),
    )


#: In every escalated suggestion's transaction (knowledge.direct).
_INSERT_GAP = DirectStatement.insert(t.gap_questions)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def open_questions(store: Store, *, days: float, now: datetime | None = None) -> list[GapQuestion]:
    """Unresolved questions of the last ``days`` days, oldest first (at most MAX_QUESTIONS, newest kept)."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    c = t.gap_questions.c
    stmt = (
        select(c.id, c.text, c.reason, c.conversation_id, c.at)
        .where(c.at >= since, c.resolved_snippet_id.is_(None))
        .order_by(c.at.desc(), c.id.desc())
        .limit(MAX_QUESTIONS)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = [GapQuestion(int(r.id), r.text, r.reason, r.conversation_id, _aware(r.at)) for r in rows]
    out.reverse()
    return out


def _tfidf_similarity(token_lists: list[list[str]]) -> np.ndarray:
    """Cosine similarity of every pair of texts by TF-IDF over their tokens (dense n x n)."""
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, toks in enumerate(token_lists):
        for tok, k in Counter(toks).items():
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
            vals.append(1 + math.log(k))
    n = len(token_lists)
    m = csr_matrix((vals, (rows, cols)), shape=(n, max(1, len(vocab))), dtype=np.float32)
    df = np.bincount(cols, minlength=m.shape[1]) if cols else np.zeros(m.shape[1])
    m = m.multiply(np.log((1 + n) / (1 + df)) + 1).tocsr()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = csr_matrix(m.multiply(1 / np.where(norms > 0, norms, 1)[:, None]))
    return np.asarray((m @ m.T).toarray(), dtype=np.float32)


def _neighbourhoods(index: KnowledgeIndex, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each question's soft top-``NEIGHBOURS`` snippets in the dense index, as unit rows over the
    snippets found (a sparse profile, dense here: a few thousand questions), and the score of each
    question's closest text."""
    rows: list[dict[str, float]] = []
    with index.lock:
        for v in vectors:
            scores, ids = index.dense.search(v, NEIGHBOURS * 4)
            best: dict[str, float] = {}
            for sc, tid in zip(scores.tolist(), ids.tolist(), strict=True):
                text = index.texts.get(int(tid))
                if text is not None and text.snippet_id not in best:
                    best[text.snippet_id] = sc
                if len(best) >= NEIGHBOURS:
                    break
            rows.append(best)
    cols: dict[str, int] = {}
    for r in rows:
        for sid in r:
            cols.setdefault(sid, len(cols))
    out = np.zeros((len(rows), max(1, len(cols))), dtype=np.float32)
    for i, r in enumerate(rows):
        if r:
            top = max(r.values())
            for sid, sc in r.items():
                out[i, cols[sid]] = math.exp((sc - top) / NEIGHBOUR_TEMPERATURE)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    closest = np.array([max(r.values(), default=-1.0) for r in rows], dtype=np.float32)
    return np.asarray(out / np.where(norms > 0, norms, 1), dtype=np.float32), closest


def similarity(
    texts: list[str],
    analyzer: Analyzer,
    embedder: Embedder | None = None,
    *,
    index: KnowledgeIndex | None = None,
    cache: Store | None = None,
) -> np.ndarray:
    """Pairwise similarity (0..1) of ``texts`` by meaning (see the module docstring); TF-IDF
    without an embedder. ``index``: the KB's index built with ``embedder``, for the neighbourhoods;
    ``cache``: a store whose embedding cache is used and extended."""
    if embedder is None:
        return _tfidf_similarity([analyzer.tokens(x) for x in texts])
    vecs, _ = embed_cached_parts(embedder, cache, list(texts))
    floor = float(getattr(embedder, "similarity_floor", 0.0))
    direct = np.clip((vecs @ vecs.T - floor) / (1 - floor), 0.0, 1.0)
    if index is None or index.embedder is not embedder or not index.dense.ntotal:
        return np.asarray(direct, dtype=np.float32)
    near, closest = _neighbourhoods(index, vecs)
    placed = np.clip(((closest - floor) / (1 - floor) - NEAR_FROM) / (NEAR_FULL - NEAR_FROM), 0.0, 1.0)
    share = (1 - DIRECT_SHARE) * np.minimum(placed[:, None], placed[None, :])
    return np.asarray(share * (near @ near.T) + (1 - share) * direct, dtype=np.float32)


def cluster(
    texts: list[str],
    analyzer: Analyzer,
    embedder: Embedder | None = None,
    *,
    threshold: float | None = None,
    index: KnowledgeIndex | None = None,
    cache: Store | None = None,
) -> list[list[int]]:
    """Average-linkage groups of ``texts`` (given oldest first): lists of indexes, each in order and
    led by its first; groups ordered by their first. ``threshold``: the average similarity from which
    groups merge (default: ``DEFAULT_THRESHOLD``, or ``LEXICAL_THRESHOLD`` without an embedder)."""
    if not texts:
        return []
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if embedder is not None else LEXICAL_THRESHOLD
    if len(texts) == 1:
        return [[0]]
    sim = similarity(texts, analyzer, embedder, index=index, cache=cache).astype(np.float64)
    dist = np.clip(1.0 - (sim + sim.T) / 2, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="average"), 1.0 - threshold, "distance")
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def find_gaps(
    store: Store,
    analyzer: Analyzer,
    embedder: Embedder | None = None,
    *,
    days: float = 30,
    limit: int = 20,
    now: datetime | None = None,
    threshold: float | None = None,
    index: KnowledgeIndex | None = None,
) -> list[Gap]:
    """The open gaps of the last ``days`` days, biggest first (ties: most recent first)."""
    if not 0 < days <= 3650:
        raise ValidationError("days 必须在 1 到 3650 之间", "days must be between 1 and 3650")
    if not 1 <= limit <= 500:
        raise ValidationError("limit 必须在 1 到 500 之间", "limit must be between 1 and 500")
    questions = open_questions(store, days=days, now=now)
    groups = cluster(
        [q.text for q in questions], analyzer, embedder, threshold=threshold, index=index, cache=store
    )
    gaps = [Gap(f"gap-{questions[g[0]].id}", questions[g[0]].text, [questions[i] for i in g]) for g in groups]
    gaps.sort(key=lambda g: (-g.count, -max(q.at for q in g.questions).timestamp()))
    return gaps[:limit]


def meaning_embedder(embedder: Embedder) -> Embedder | None:
    """The service's embedder if it knows Chinese meaning (e5, alone or fused with the KB's tuned
    model, or a tuned model alone); None for the bundled English model (TF-IDF then groups)."""
    if isinstance(embedder, E5Embedder | FusedEmbedder) or getattr(embedder, "kb_meta", None):
        return embedder
    return None


def gap_to_snippet(
    store: Store,
    analyzer: Analyzer,
    embedder: Embedder | None,
    gap_id: str,
    fields: dict[str, Any],
    *,
    actor: str,
    days: float = 30,
    now: datetime | None = None,
    index: KnowledgeIndex | None = None,
) -> Snippet:
    """Create a snippet answering gap ``gap_id`` (its similar questions default to the gap's
    messages; its status to published, so it answers at once) and resolve the gap's questions."""
    gaps = find_gaps(store, analyzer, embedder, days=days, limit=500, now=now, index=index)
    gap = next((g for g in gaps if g.id == gap_id), None)
    if gap is None:
        raise NotFoundError(
            f"知识缺口 {gap_id} 不存在或已处理（请刷新缺口列表）",
            f"gap {gap_id!r} does not exist or was handled already (reload the gaps)",
        )
    data = dict(fields)
    if not isinstance(data.get("question"), str) or not data["question"].strip():
        raise ValidationError("请给出问题 question", "give the question")
    if data.get("similar_questions") is None:
        q = normalize(data["question"])
        data["similar_questions"] = [x for x in gap.example_texts(MAX_SIMILAR) if normalize(x) != q]
    data.setdefault("status", "published")
    snippet = snippet_from_dict(data, source="request", location="body", default_status="published")
    created = store.add(snippet, actor=actor)
    with writing(store.engine) as conn:
        conn.execute(
            t.gap_questions.update()
            .where(t.gap_questions.c.id.in_([q.id for q in gap.questions]))
            .values(resolved_snippet_id=created.id)
        )
    return created

"""Hybrid retrieval: BM25 and dense scores fused per snippet, with filters and a confidence label.

A snippet is scored by its best-matching text (its question or one of its similar questions). The
dense side counts only as much as the embedder understands the query (``Embedder.coverage``): the
bundled English model gives Chinese queries no weight at all, so Chinese rests on BM25 until a KB
model is tuned (``kefu kb tune``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knowledge.index import IndexedText, KnowledgeIndex, RowLayout, sorted_union
from knowledge.model import Snippet, SnippetFilter
from knowledge.store import Store

CONFIDENCE_LEVELS = ("high", "medium", "low")
#: The fields ``kefu kb tune`` fits on held-out pairs and stores with the model.
TUNED_FIELDS = ("fusion", "dense_weight", "second_weight", "high", "medium")


@dataclass
class RetrievalConfig:
    """How scores are fused and labelled; every field has a ``KEFU_RETRIEVAL_*`` setting."""

    fusion: str = "weighted"  # "weighted" (normalised scores) or "rrf" (reciprocal rank)
    dense_weight: float = 0.7  # share of the dense score when the embedder fully covers the query
    rrf_k: int = 60
    min_coverage: float = 0.5  # below this share of known tokens the dense score is ignored
    high: float = 0.65  # confidence score thresholds (see docs/benchmarks.md for how they were chosen)
    medium: float = 0.36
    answer_weight: float = 0.5  # weight of an answer's BM25 score, added to its best question's
    answer_confidence: float = 0.65  # the most confidence an answer's words alone can give
    dense_pool: int = 200  # texts taken from FAISS per query before fusion
    #: A query whose tokens have at most this many postings (every query of a KB of a few thousand
    #: snippets) gets the exact BM25 of every text (``index.LexicalIndex.search``).
    lexical_exact: int = 20_000
    #: Past that, the postings read to find candidate texts (the query's rarest tokens first); those
    #: texts and every text of the snippets the dense search found are scored exactly, the rest not
    #: at all (docs/benchmarks.md: at 100,000 snippets this keeps bq-dev's hit@5).
    lexical_budget: int = 2_000
    #: Weight of a snippet's second-best text in the dense score (0: best text only). More than one
    #: matching paraphrase is more evidence; ``kefu kb tune`` fits it on held-out pairs.
    second_weight: float = 0.0
    sync_interval_s: float = (
        0.0  # seconds between checks of the database for a new KB revision (0: every search)
    )

    def __post_init__(self) -> None:
        if self.fusion not in ("weighted", "rrf"):
            raise ValueError("fusion must be 'weighted' or 'rrf'")
        if not 0 <= self.second_weight <= 1:
            raise ValueError("second_weight must be between 0 and 1")
        if not 0 <= self.dense_weight <= 1:
            raise ValueError("dense_weight must be between 0 and 1")
        if not 0 <= self.medium <= self.high <= 1:
            raise ValueError("confidence thresholds must satisfy 0 <= medium <= high <= 1")
        if self.lexical_budget < 1 or self.lexical_exact < 1:
            raise ValueError("lexical_budget and lexical_exact must be at least 1")

    def tuned(self) -> dict[str, Any]:
        """The fields ``kefu kb tune`` fits (``TUNED_FIELDS``), as reports show and models store them."""
        return {name: getattr(self, name) for name in TUNED_FIELDS}


@dataclass
class Hit:
    snippet: Snippet
    matched_text: str
    matched_field: str
    score: float
    bm25: float
    dense: float | None
    lexical_match: float
    confidence_score: float
    confidence: str

    @property
    def snippet_id(self) -> str:
        return self.snippet.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "snippet_id": self.snippet.id,
            "kind": self.snippet.kind,
            "question": self.snippet.question,
            "answer": self.snippet.answer,
            "matched_text": self.matched_text,
            "matched_field": self.matched_field,
            "score": round(self.score, 4),
            "bm25": round(self.bm25, 4),
            "dense": None if self.dense is None else round(self.dense, 4),
            "lexical_match": round(self.lexical_match, 4),
            "confidence_score": round(self.confidence_score, 4),
            "confidence": self.confidence,
        }


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    dense_weight: float
    latency_ms: float
    kb_revision: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def confidence(self) -> str:
        return self.hits[0].confidence if self.hits else "low"

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "confidence": self.confidence,
            "dense_weight": round(self.dense_weight, 3),
            "kb_revision": self.kb_revision,
            "latency_ms": round(self.latency_ms, 2),
            "hits": [h.to_dict() for h in self.hits],
        }


@dataclass(frozen=True)
class _Scored:
    """One query scored against one generation of the index: the snippets it found (lexically or
    in the dense pool), as arrays aligned with ``cand``, their ordinals in ascending order."""

    qtokens: list[str]
    cand: np.ndarray  # int64 snippet ordinals, sorted
    lex: np.ndarray  # BM25 of the best question text plus the answer's (float64)
    #: The row that matched: the best question (the first of equals), else the answer, else -1.
    lex_row: np.ndarray
    coverage: float
    dw: float
    dense: np.ndarray  # best dense score in the pool, -1.0 where none
    dense_tid: np.ndarray
    fused: np.ndarray
    complete: bool  # the lexical stage read every posting of the query (exact BM25 everywhere)


class HybridRetriever:
    def __init__(
        self, index: KnowledgeIndex, config: RetrievalConfig | None = None, store: Store | None = None
    ):
        self.index = index
        self.config = config or RetrievalConfig()
        self.store = store
        self._last: tuple[tuple[str, int, int], _Scored] | None = None
        self._profiles: tuple[dict[str, float], dict[int, _TextWeights]] = ({}, {})

    def label(self, confidence_score: float) -> str:
        if confidence_score >= self.config.high:
            return "high"
        if confidence_score >= self.config.medium:
            return "medium"
        return "low"

    def _dense_weight(self, coverage: float) -> float:
        cfg = self.config
        if coverage >= cfg.min_coverage and cfg.dense_weight > 0:
            return cfg.dense_weight * (coverage - cfg.min_coverage) / (1 - cfg.min_coverage or 1)
        return 0.0

    def _maybe_sync(self) -> None:
        if self.store is not None and time.monotonic() - self.index.last_sync >= self.config.sync_interval_s:
            self.index.sync(self.store)

    def search(
        self, query: str, k: int = 5, flt: SnippetFilter | None = None, *, sync: bool = True
    ) -> SearchResult:
        """The ``k`` best snippets that pass ``flt``. ``sync=False`` skips the check for a new KB
        revision, for a caller that searched an instant before (a second filter on the same query)."""
        t0 = time.perf_counter()
        if sync:
            self._maybe_sync()
        flt = flt or SnippetFilter()
        idx = self.index
        with idx.lock:
            lay = idx.layout
            if _excludes_all(lay, flt):  # e.g. promotions asked for, and the KB has none
                # the main search just before (the pipeline's promotion search) knows it already
                last = self._last
                if last is not None and last[0] == (query, id(idx), idx.generation):
                    coverage = last[1].coverage
                else:
                    coverage = idx.embedder.coverage(query)
                return SearchResult(
                    query=query,
                    hits=[],
                    dense_weight=self._dense_weight(coverage),
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    kb_revision=idx.kb_revision,
                    stats={"coverage": coverage, "candidates": 0},
                )
            sc = self._scored(query)
            hits: list[Hit] = []
            allowed = _prefilter(lay, flt, sc.cand)
            qw = _QueryWeights(sc.qtokens, idx.lexical.idf)
            for i in _best_first(sc.fused, allowed, k):
                # The filter is applied lazily, best first, until k pass.
                o = int(sc.cand[i])
                sid = idx.snippet_order[o]
                if not flt.accepts(idx.snippets[sid]):
                    continue
                row = int(sc.lex_row[i])
                lex_hit = (float(sc.lex[i]), int(idx.lexical.row_ids[row])) if row >= 0 else None
                dense_hit = (float(sc.dense[i]), int(sc.dense_tid[i])) if sc.dense[i] > -1.0 else None
                hits.append(self._hit(sid, float(sc.fused[i]), lex_hit, dense_hit, sc.dw, qw))
                if len(hits) >= k:
                    break
            revision = idx.kb_revision
        return SearchResult(
            query=query,
            hits=hits,
            dense_weight=sc.dw,
            latency_ms=(time.perf_counter() - t0) * 1000,
            kb_revision=revision,
            stats={"coverage": sc.coverage, "candidates": int(sc.cand.size), "exact_bm25": sc.complete},
        )

    def _scored(self, query: str) -> _Scored:
        """The lexical, dense and fused scores of the snippets ``query`` finds (the caller holds the
        index lock); nothing is computed per snippet of the whole KB.

        The last query's scores are kept until the index changes: a caller that searches the same text
        again with another filter (the suggestion pipeline looks for promotions after its main search)
        pays for the filter and the hits only. Nothing else is cached.
        """
        idx = self.index
        key = (query, id(idx), idx.generation)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        cfg = self.config
        lay = idx.layout
        qtokens = list(idx.analyzer.cached_tokens(query))

        # Dense: counts only as much as the model knows the query's tokens.
        coverage = idx.embedder.coverage(query)
        dw = self._dense_weight(coverage)
        d_owner = np.zeros(0, dtype=np.int64)
        d_score = np.zeros(0, dtype=np.float64)
        d_tid = np.zeros(0, dtype=np.int64)
        second: tuple[np.ndarray, np.ndarray] | None = None
        if dw > 0 and idx.dense.ntotal and lay.dense_ids.size:
            ds, di = idx.dense.search(idx.embedder.encode_query(query), cfg.dense_pool)
            ds = _rescaled(ds, float(getattr(idx.embedder, "similarity_floor", 0.0)))
            pos = np.minimum(np.searchsorted(lay.dense_ids, di), lay.dense_ids.size - 1)
            known = lay.dense_ids[pos] == di
            ds, di, owner = ds[known].astype(np.float64), di[known], lay.dense_owner[pos[known]]
            # Each snippet's best text (the first of equals in FAISS order), as a loop would keep it.
            order = np.lexsort((np.arange(ds.size), -ds))
            _, first = np.unique(owner[order], return_index=True)
            best = order[first]
            best = best[ds[best] > -1.0]
            d_owner, d_score, d_tid = owner[best], ds[best], di[best]
            if cfg.second_weight > 0:
                second = _second_best(owner[order], ds[order])

        # Lexical: the rows that match (index.LexicalIndex.search: every one, or on a large KB those
        # with the query's rarer tokens and every text of the snippets the dense search found), each
        # snippet's best question and its answer.
        rows, scores, complete = idx.lexical.search(
            qtokens,
            exact=cfg.lexical_exact,
            budget=cfg.lexical_budget,
            also=lay.rows_of(d_owner) if d_owner.size else None,
        )
        is_q = rows < lay.n_questions
        q_rows, q_scores = rows[is_q], scores[is_q]
        q_owner = lay.q_owner[q_rows]  # non-decreasing: a snippet's questions are one run of rows
        q_best_owner, q_best, q_best_row = _group_best(q_owner, q_scores, q_rows)
        a_rows, a_scores = rows[~is_q], scores[~is_q]
        a_owner = lay.answer_owner[a_rows - lay.n_questions]

        cand = sorted_union(q_best_owner, a_owner, d_owner)
        m = cand.size
        lex_best = np.zeros(m, dtype=np.float64)
        lex_best[np.searchsorted(cand, q_best_owner)] = q_best
        answer = np.zeros(m, dtype=np.float64)
        a_at = np.searchsorted(cand, a_owner)
        answer[a_at] = a_scores
        lex = lex_best + answer
        lex_row = np.full(m, -1, dtype=np.int64)
        lex_row[a_at] = a_rows
        lex_row[np.searchsorted(cand, q_best_owner)] = q_best_row
        dense = np.full(m, -1.0, dtype=np.float64)
        dense_tid = np.zeros(m, dtype=np.int64)
        d_at = np.searchsorted(cand, d_owner)
        dense[d_at], dense_tid[d_at] = d_score, d_tid
        dense_rank = dense  # what the fusion ranks by (dense, plus second-text evidence if configured)
        if second is not None:
            s_owner, s_score = second
            s_at = np.searchsorted(cand, s_owner)
            ok = s_at < m
            ok[ok] = cand[s_at[ok]] == s_owner[ok]
            extra = np.zeros(m, dtype=np.float64)
            extra[s_at[ok]] = s_score[ok]
            dense_rank = dense + cfg.second_weight * extra
        if cfg.fusion == "weighted":
            max_lex = float(lex.max()) if m else 0.0
            lex_norm = lex / max_lex if max_lex > 0 else lex
            fused = (1 - dw) * lex_norm + dw * np.clip(dense_rank, 0.0, None)
        else:
            fused = np.zeros(m, dtype=np.float64)
            for part, weight in ((lex, 1 - dw), (dense_rank, dw)):
                has = np.flatnonzero(part > (0 if part is lex else -1.0))
                ranked = has[np.argsort(-part[has], kind="stable")]
                fused[ranked] += weight / (cfg.rrf_k + np.arange(1, ranked.size + 1))
        sc = _Scored(
            qtokens=qtokens,
            cand=cand,
            lex=lex,
            lex_row=lex_row,
            coverage=coverage,
            dw=dw,
            dense=dense,
            dense_tid=dense_tid,
            fused=fused,
            complete=complete,
        )
        self._last = (key, sc)
        return sc

    def _profile(self, text: IndexedText) -> _TextWeights:
        """A text's token set and IDF total, kept until the lexical index (its IDF) is rebuilt: the
        confidence of a hit then costs as much as the query's tokens, not the (long) answer's."""
        idf = self.index.lexical.idf
        if self._profiles[0] is not idf or len(self._profiles[1]) > 50_000:
            self._profiles = (idf, {})
        cache = self._profiles[1]
        p = cache.get(text.id)
        if p is None or p.tokens is not text.tokens:
            ts = frozenset(text.tokens)
            p = _TextWeights(text.tokens, ts, sum(idf.get(x, 0.0) for x in ts))
            cache[text.id] = p
        return p

    def _hit(
        self,
        sid: str,
        score: float,
        lex: tuple[float, int] | None,
        dense: tuple[float, int] | None,
        dw: float,
        q: _QueryWeights,
    ) -> Hit:
        idx = self.index
        lex_text = idx.texts[lex[1]] if lex else None
        dense_text = idx.texts[dense[1]] if dense else None
        lm_lex = q.dice(self._profile(lex_text)) if lex_text and lex_text.field != "answer" else 0.0
        lm_dense = q.dice(self._profile(dense_text)) if dense_text else 0.0
        # An answer that contains the query's words supports the snippet, but never makes it "high"
        # on its own (answers are long; a question that was anticipated is stronger evidence).
        answer = next(
            (idx.texts[i] for i in idx.by_snippet.get(sid, ()) if idx.texts[i].field == "answer"), None
        )
        lm_answer = self.config.answer_confidence * q.coverage(self._profile(answer)) if answer else 0.0
        dense_score = dense[0] if dense else None
        # The text shown as "matched" is the one that contributed most to the fused score.
        use_dense = dense_text is not None and (
            lex_text is None or dw * max(dense_score or 0, 0) > (1 - dw) * lm_lex
        )
        chosen = dense_text if use_dense else lex_text
        assert chosen is not None
        lexical_match = lm_dense if use_dense else max(lm_lex, lm_answer)
        confidence_score = (1 - dw) * max(lm_lex, lm_dense, lm_answer) + dw * max(dense_score or 0.0, 0.0)
        return Hit(
            snippet=idx.snippets[sid],
            matched_text=chosen.text,
            matched_field=chosen.field,
            score=score,
            bm25=lex[0] if lex else 0.0,
            dense=dense_score,
            lexical_match=lexical_match,
            confidence_score=confidence_score,
            confidence=self.label(confidence_score),
        )


def _rescaled(scores: np.ndarray, floor: float) -> np.ndarray:
    """Cosines on a 0..1 scale where 0 is what the model gives unrelated texts (its
    ``similarity_floor``): e5 gives unrelated Chinese questions about 0.8, so its raw cosines would
    barely move a fusion with BM25 or a confidence threshold. Kept above -1 (-1 marks "no score")."""
    if floor <= 0:
        return scores
    return np.maximum((scores - floor) / (1.0 - floor), -0.999).astype(scores.dtype, copy=False)


def _group_best(
    owner: np.ndarray, score: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run of equal ``owner`` (non-decreasing): the owner, its best score (float64) and the row of
    the first best score, as ``np.argmax`` over the snippet's rows would pick it."""
    if not owner.size:
        return owner.astype(np.int64), np.zeros(0, dtype=np.float64), rows.astype(np.int64)
    head = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = np.maximum.reduceat(score, head)
    at_best = np.flatnonzero(score == np.repeat(best, np.diff(np.r_[head, score.size])))
    first = at_best[np.r_[True, owner[at_best][1:] != owner[at_best][:-1]]]
    return owner[head].astype(np.int64), best.astype(np.float64), rows[first].astype(np.int64)


def _second_best(owner: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The snippets with a second text in the dense pool and its score (clipped at 0); ``owner`` and
    ``score`` are sorted by descending score. Several matching paraphrases are more evidence than one."""
    g = np.argsort(owner, kind="stable")  # grouped by snippet, still best first within a group
    og, sg = owner[g], score[g]
    if not og.size:
        return og, sg
    head = np.r_[True, og[1:] != og[:-1]]
    sec = np.r_[False, head[:-1]] & ~head
    return og[sec], np.clip(sg[sec], 0.0, None)


@dataclass(frozen=True)
class _TextWeights:
    tokens: tuple[str, ...]
    token_set: frozenset[str]
    total: float  # IDF summed over the distinct tokens


class _QueryWeights:
    """IDF-weighted overlap of a query's tokens with a text's: ``dice`` (how much of each the other
    covers, 0..1) and ``coverage`` (the share of the query the text contains)."""

    def __init__(self, q: list[str], idf: dict[str, float]) -> None:
        self.qs = set(q)
        self.w = {x: idf.get(x, 0.0) for x in self.qs}
        self.total = sum(self.w.values())

    def _inter(self, t: _TextWeights) -> float:
        ts = t.token_set
        return sum(v for x, v in self.w.items() if x in ts)

    def dice(self, t: _TextWeights) -> float:
        if not self.qs or not t.token_set:
            return 0.0
        total = self.total + t.total
        return 0.0 if total <= 0 or math.isnan(total) else 2 * self._inter(t) / total

    def coverage(self, t: _TextWeights) -> float:
        return self._inter(t) / self.total if self.total > 0 else 0.0


def _excludes_all(lay: RowLayout, flt: SnippetFilter) -> bool:
    """The filter asks for a status or kinds that no snippet of the index has."""
    if flt.status and flt.status not in lay.statuses:
        return True
    return bool(flt.kinds) and not any(kind in lay.kinds for kind in flt.kinds)


def _prefilter(lay: RowLayout, flt: SnippetFilter, cand: np.ndarray) -> np.ndarray:
    """Which of the snippets ``cand`` the filter's kind and status accept; the rest of the filter is
    checked per hit."""
    mask = np.ones(cand.size, dtype=bool)
    if flt.status:
        code = lay.statuses.get(flt.status)
        mask &= lay.status_code[cand] == code if code is not None else False
    if flt.kinds:
        codes = [lay.kinds[kind] for kind in flt.kinds if kind in lay.kinds]
        mask &= np.isin(lay.kind_code[cand], codes)
    return mask


def _best_first(fused: np.ndarray, eligible: np.ndarray, k: int) -> Iterator[int]:
    """Positions of the eligible entries by fused score, best first (ties: lower position first).

    Only the top few are sorted (``argpartition``); the rest is sorted only if the caller reads past
    them (a filter that rejects many snippets).
    """
    idxs = np.flatnonzero(eligible)
    m = max(4 * k, 64)
    if idxs.size <= 4 * m:
        yield from idxs[np.lexsort((idxs, -fused[idxs]))].tolist()
        return
    vals = fused[idxs]
    threshold = vals[np.argpartition(-vals, m - 1)[:m]].min()
    top = idxs[vals >= threshold]  # every tie at the threshold too
    yield from top[np.lexsort((top, -fused[top]))].tolist()
    rest = idxs[vals < threshold]
    yield from rest[np.lexsort((rest, -fused[rest]))].tolist()

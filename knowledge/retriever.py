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

from knowledge.index import IndexedText, KnowledgeIndex, RowLayout
from knowledge.model import Snippet, SnippetFilter
from knowledge.store import Store
from knowledge.text import normalize

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
    """One query scored against every snippet of one generation of the index (arrays by ordinal)."""

    qtokens: list[str]
    scores: np.ndarray  # BM25 of every row (float32)
    layout: RowLayout
    lex_best: np.ndarray
    answer: np.ndarray
    lex: np.ndarray
    coverage: float
    dw: float
    dense: np.ndarray
    dense_tid: np.ndarray
    found: np.ndarray  # bool: matched lexically or in the dense pool
    fused: np.ndarray
    candidates: int

    def lex_row(self, o: int) -> int:
        """The row that matched: the snippet's best question (the first of equals), else its answer."""
        lay = self.layout
        if self.lex_best[o] > 0:
            start = int(lay.q_start[o])
            return start + int(np.argmax(self.scores[start : int(lay.q_start[o + 1])]))
        return int(lay.answer_row[o]) if self.answer[o] > 0 else -1


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

    def search(self, query: str, k: int = 5, flt: SnippetFilter | None = None) -> SearchResult:
        t0 = time.perf_counter()
        self._maybe_sync()
        flt = flt or SnippetFilter()
        idx = self.index
        with idx.lock:
            lay = idx.layout
            allowed = _prefilter(lay, flt)
            if allowed is not None and not allowed.any():  # e.g. promotions asked for, and the KB has none
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
            eligible = sc.found if allowed is None else sc.found & allowed
            qw = _QueryWeights(sc.qtokens, idx.lexical.idf)
            for o in _best_first(sc.fused, eligible, k):
                # The filter is applied lazily, best first, until k pass.
                sid = idx.snippet_order[o]
                if not flt.accepts(idx.snippets[sid]):
                    continue
                row = sc.lex_row(o)
                lex_hit = (float(sc.lex[o]), int(idx.lexical.row_ids[row])) if row >= 0 else None
                dense_hit = (float(sc.dense[o]), int(sc.dense_tid[o])) if sc.dense[o] > -1.0 else None
                hits.append(self._hit(sid, float(sc.fused[o]), lex_hit, dense_hit, sc.dw, qw))
                if len(hits) >= k:
                    break
            revision = idx.kb_revision
        return SearchResult(
            query=query,
            hits=hits,
            dense_weight=sc.dw,
            latency_ms=(time.perf_counter() - t0) * 1000,
            kb_revision=revision,
            stats={"coverage": sc.coverage, "candidates": sc.candidates},
        )

    def _scored(self, query: str) -> _Scored:
        """Every snippet's lexical, dense and fused score for ``query`` (the caller holds the index lock).

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
        qtokens = idx.analyzer.tokens(normalize(query), normalized=True)
        n = len(idx.snippet_order)
        # Lexical: each snippet's best question text, plus what its answer adds. The rows are laid out
        # by snippet (index.RowLayout): one maximum.at and one gather, no sorting of rows.
        scores = idx.lexical.scores(qtokens)
        nq = lay.n_questions
        best_q = np.zeros(n, dtype=np.float32)
        np.maximum.at(best_q, lay.q_owner, scores[:nq])  # faster than reduceat over many short runs
        lex_best = best_q.astype(np.float64)
        answer = np.zeros(n, dtype=np.float64)
        if lay.answer_owner.size:
            answer[lay.answer_owner] = scores[nq:]
        lex = lex_best + answer

        # Dense: counts only as much as the model knows the query's tokens.
        coverage = idx.embedder.coverage(query)
        dw = self._dense_weight(coverage)
        dense = np.full(n, -1.0, dtype=np.float64)
        dense_tid = np.zeros(n, dtype=np.int64)
        dense_rank = dense  # what the fusion ranks by (dense, plus second-text evidence if configured)
        if dw > 0 and idx.dense.ntotal and lay.dense_ids.size:
            ds, di = idx.dense.search(idx.embedder.encode_query(query), cfg.dense_pool)
            pos = np.minimum(np.searchsorted(lay.dense_ids, di), lay.dense_ids.size - 1)
            known = lay.dense_ids[pos] == di
            ds, di, owner = ds[known].astype(np.float64), di[known], lay.dense_owner[pos[known]]
            # Each snippet's best text (the first of equals in FAISS order), as a loop would keep it.
            order = np.lexsort((np.arange(ds.size), -ds))
            _, first = np.unique(owner[order], return_index=True)
            best = order[first]
            best = best[ds[best] > -1.0]
            dense[owner[best]] = ds[best]
            dense_tid[owner[best]] = di[best]
            if cfg.second_weight > 0:
                dense_rank = dense + cfg.second_weight * _second_best(owner[order], ds[order], n)
        found = (lex > 0) | (dense > -1.0)
        if cfg.fusion == "weighted":
            max_lex = float(lex.max()) if n else 0.0
            lex_norm = lex / max_lex if max_lex > 0 else lex
            fused = (1 - dw) * lex_norm + dw * np.clip(dense_rank, 0.0, None)
        else:
            found_ids = np.flatnonzero(found)
            fused = np.zeros(n, dtype=np.float64)
            for part, weight in ((lex, 1 - dw), (dense_rank, dw)):
                has = found_ids[part[found_ids] > (0 if part is lex else -1.0)]
                ranked = has[np.argsort(-part[has], kind="stable")]
                fused[ranked] += weight / (cfg.rrf_k + np.arange(1, ranked.size + 1))
        sc = _Scored(
            qtokens=qtokens,
            scores=scores,
            layout=lay,
            lex_best=lex_best,
            answer=answer,
            lex=lex,
            coverage=coverage,
            dw=dw,
            dense=dense,
            dense_tid=dense_tid,
            found=found,
            fused=fused,
            candidates=int(np.count_nonzero(found)),
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


def _second_best(owner: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Each snippet's second-best dense score in the pool (0 if it has none); ``owner``/``score`` are
    sorted by descending score. Several matching paraphrases are more evidence than one."""
    g = np.argsort(owner, kind="stable")  # grouped by snippet, still best first within a group
    og, sg = owner[g], score[g]
    head = np.r_[True, og[1:] != og[:-1]] if og.size else np.zeros(0, dtype=bool)
    sec = np.r_[False, head[:-1]] & ~head if og.size else head
    out = np.zeros(n, dtype=np.float64)
    out[og[sec]] = np.clip(sg[sec], 0.0, None)
    return out


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


def _prefilter(lay: RowLayout, flt: SnippetFilter) -> np.ndarray | None:
    """Snippets whose kind and status the filter accepts (None: all); the rest is checked per hit."""
    mask: np.ndarray | None = None
    if flt.status:
        code = lay.statuses.get(flt.status)
        mask = lay.status_code == code if code is not None else np.zeros(lay.status_code.size, dtype=bool)
    if flt.kinds:
        codes = [lay.kinds[kind] for kind in flt.kinds if kind in lay.kinds]
        kinds = np.isin(lay.kind_code, codes)
        mask = kinds if mask is None else mask & kinds
    return mask


def _best_first(fused: np.ndarray, eligible: np.ndarray, k: int) -> Iterator[int]:
    """Ordinals of the eligible snippets by fused score, best first (ties: lower ordinal first).

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

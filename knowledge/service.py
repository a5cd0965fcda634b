"""One knowledge base, opened: store, embedder, analyzer, indexes and retriever together.

The CLI and the web service both open a KB this way; heavy parts (the model, the indexes) are
created once here and shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import faiss

from knowledge import index as index_module
from knowledge.embedding import BUNDLED_MODEL, Embedder, SentenceTransformerEmbedder
from knowledge.index import KnowledgeIndex
from knowledge.retriever import HybridRetriever
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.text import Analyzer

log = logging.getLogger(__name__)

ACTIVE_MODEL_KEY = "embedding_model"
TERMS_KEY = "terms"


def kb_terms(store: Store) -> list[str]:
    """Words the segmenter must keep whole: the KB's own terms and its product names."""
    terms = set(json.loads(store.get_meta(TERMS_KEY) or "[]"))
    terms.update(s.product for s in store.all() if s.product)
    return sorted(terms)


def active_model(store: Store, settings: KnowledgeSettings) -> str:
    """The embedding model to use: the setting, else the KB's tuned model, else the bundled one."""
    if settings.embedding_model:
        return settings.embedding_model
    tuned = store.get_meta(ACTIVE_MODEL_KEY)
    if tuned and Path(tuned).is_dir():
        return tuned
    if tuned:
        log.warning("tuned model %s is missing on this machine; using the bundled model", tuned)
    return BUNDLED_MODEL


class KnowledgeBase:
    def __init__(
        self,
        settings: KnowledgeSettings | None = None,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or KnowledgeSettings()
        faiss.omp_set_num_threads(max(1, self.settings.faiss_threads))
        index_module.SEARCH_THREADS = max(1, self.settings.faiss_threads)
        self.store = store or Store(self.settings.database_url)
        self.embedder = embedder or SentenceTransformerEmbedder(active_model(self.store, self.settings))
        self.analyzer = Analyzer(self.settings.analyzer, kb_terms(self.store))
        self.index = KnowledgeIndex(
            self.embedder,
            self.analyzer,
            hnsw_threshold=self.settings.hnsw_threshold,
            answer_weight=self.settings.retrieval.answer_weight,
        )
        self.retriever = HybridRetriever(self.index, self.settings.retrieval, self.store)
        self.opened = ""
        # Edits made through this process reach its index at once; other replicas poll the revision.
        self.store.on_change(self._on_change)

    def _on_change(self, _revision: int) -> None:
        if self.index.kb_revision >= 0:  # not before the index is opened
            self.index.sync(self.store)

    def open_index(self, *, progress: bool = False, log_fn: Callable[[str], None] = log.info) -> str:
        self.opened = self.index.open(self.store, self.settings.index_dir, progress=progress, log_fn=log_fn)
        return self.opened

    def save_index(self) -> Path:
        return self.index.save(self.settings.index_dir)

    def close(self) -> None:
        self.store.close()

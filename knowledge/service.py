"""One knowledge base, opened: store, embedder, analyzer, indexes and retriever together.

The CLI and the web service both open a KB this way; heavy parts (the model, the indexes) are
created once here and shared.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss

from knowledge import index as index_module
from knowledge.candidates import Candidates
from knowledge.embedding import BUNDLED_MODEL, Embedder, EmbeddingModelError
from knowledge.encoders import E5_WEIGHT_KEY, fuse, load_embedder
from knowledge.errors import KefuError
from knowledge.index import KnowledgeIndex
from knowledge.model_store import ACTIVE_MODEL_KEY, DB_PREFIX, ModelStore
from knowledge.retriever import TUNED_FIELDS, HybridRetriever, RetrievalConfig
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.text import Analyzer

log = logging.getLogger(__name__)

TERMS_KEY = "terms"
#: The number of accepted candidates when automatic re-tuning last started.
AUTO_TUNE_KEY = "auto_tune_accepted"
__all__ = ["ACTIVE_MODEL_KEY", "TERMS_KEY", "KnowledgeBase", "active_model", "kb_terms"]


def kb_terms(store: Store) -> list[str]:
    """Words the segmenter must keep whole: the KB's own terms and its product names."""
    terms = set(json.loads(store.get_meta(TERMS_KEY) or "[]"))
    terms.update(s.product for s in store.all() if s.product)
    return sorted(terms)


def resolve_model_ref(store: Store, settings: KnowledgeSettings, ref: str | None) -> str | None:
    """A tuned model reference as a loadable path (``db:<id>`` is unpacked from the database); None
    when there is none or it cannot be loaded here (logged)."""
    if ref and ref.startswith(DB_PREFIX):
        try:
            return str(ModelStore(store, settings.models_dir).local_path(ref[len(DB_PREFIX) :]))
        except KefuError as e:
            log.warning("tuned model %s cannot be loaded (%s); searching without it", ref, e)
            return None
    if ref and Path(ref).is_dir():  # a local directory (models tuned before they were stored)
        return ref
    if ref:
        log.warning("tuned model %s is missing on this machine; searching without it", ref)
    return None


def general_encoder(settings: KnowledgeSettings) -> Embedder | None:
    """The general sentence encoder (``KEFU_ENCODER``, e5 by default), or None when it is switched off
    or cannot load on this machine: the documented fallback is the KB's tuned model, else the
    bundled model, with BM25 (logged, not fatal)."""
    name = settings.encoder.strip()
    if name.lower() in ("", "none", "off"):
        return None
    try:
        return load_embedder(name, threads=settings.encoder_threads)
    except EmbeddingModelError as e:
        log.warning("%s; falling back to the KB-tuned model and BM25", e.message_en)
        return None


def model_embedder(store: Store, settings: KnowledgeSettings, ref: str | None) -> Embedder:
    """The embedder of a KB whose active tuned model is ``ref``: the setting if one is given; else
    the general encoder fused with the tuned model with the weight the tune fitted (a model tuned
    before e5 existed: alone); either one alone when the other is missing; else the bundled model."""
    if settings.embedding_model:
        return load_embedder(settings.embedding_model, threads=settings.encoder_threads)
    path = resolve_model_ref(store, settings, ref)
    tuned = load_embedder(path) if path else None
    general = general_encoder(settings)
    meta: Any = getattr(tuned, "kb_meta", None) or {}
    weight = meta.get(E5_WEIGHT_KEY) if isinstance(meta, dict) else None
    if tuned is not None and general is not None and weight is None:
        general = None
    chosen = fuse(general, tuned, float(weight) if weight is not None else 0.0)
    return chosen if chosen is not None else load_embedder(BUNDLED_MODEL)


def active_model(store: Store, settings: KnowledgeSettings) -> Embedder:
    """The embedder to use now: see :func:`model_embedder`."""
    return model_embedder(store, settings, store.get_meta(ACTIVE_MODEL_KEY))


def tuned_retrieval(settings: KnowledgeSettings, embedder: Embedder) -> RetrievalConfig:
    """The settings' retrieval config with the fusion and thresholds tuned with the model (``kefu kb
    tune`` stores them in the model), except for the fields set explicitly (``KEFU_RETRIEVAL_*``)."""
    meta: Any = getattr(embedder, "kb_meta", None) or {}
    tuned = meta.get("retrieval") if isinstance(meta, dict) else None
    if not settings.use_tuned_retrieval or not isinstance(tuned, dict):
        return settings.retrieval
    values = {k: v for k, v in tuned.items() if k in TUNED_FIELDS and k not in settings.retrieval_explicit}
    try:
        return replace(settings.retrieval, **values)
    except (TypeError, ValueError) as e:
        log.warning("ignoring the model's tuned retrieval settings %s: %s", values, e)
        return settings.retrieval


def _share_analyzer(embedder: Embedder, analyzer: Analyzer) -> None:
    share = getattr(embedder, "share_analyzer", None)
    if share is not None:
        share(analyzer)


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
        #: Follow the KB's active model (``kefu kb tune`` on any replica) unless one was given.
        self.follows_model = embedder is None and not self.settings.embedding_model
        self.model_ref = self.store.get_meta(ACTIVE_MODEL_KEY) or ""
        self.embedder = embedder or active_model(self.store, self.settings)
        self.analyzer = Analyzer(self.settings.analyzer, kb_terms(self.store))
        _share_analyzer(self.embedder, self.analyzer)
        self.index = self._new_index(self.embedder)
        self.retriever = HybridRetriever(
            self.index, tuned_retrieval(self.settings, self.embedder), self.store
        )
        self.opened = ""
        self._switch_lock = threading.Lock()
        self.switching: threading.Thread | None = None
        self.auto_tune: threading.Thread | None = None
        self.last_auto_tune: dict[str, Any] | None = None
        # Edits made through this process reach its index at once; other replicas poll the revision.
        self.store.on_change(self._on_change)

    def _new_index(self, embedder: Embedder) -> KnowledgeIndex:
        index = KnowledgeIndex(
            embedder,
            self.analyzer,
            hnsw_threshold=self.settings.hnsw_threshold,
            answer_weight=self.settings.retrieval.answer_weight,
        )
        index.on_revision = self._on_revision
        return index

    def _on_change(self, _revision: int) -> None:
        if self.index.kb_revision >= 0:  # not before the index is opened
            self.index.sync(self.store)

    def _on_revision(self, _revision: int) -> None:
        """A new KB revision: if the active model changed (a tune or rollback anywhere), swap it in,
        in the background; searches keep using the current model until the new index is ready."""
        if not self.follows_model:
            return
        ref = self.store.get_meta(ACTIVE_MODEL_KEY) or ""
        with self._switch_lock:
            if ref == self.model_ref or (self.switching is not None and self.switching.is_alive()):
                return
            self.switching = threading.Thread(
                target=self._switch_quietly, args=(ref,), name="kefu-model-switch", daemon=True
            )
            self.switching.start()

    def _switch_quietly(self, ref: str) -> None:
        try:
            self.switch_model(ref)
        except Exception:  # a broken model must not take the service down: keep the current one
            log.exception("could not switch to model %s; keeping the current one", ref)
            self.model_ref = ref  # do not retry on every revision

    def switch_model(self, ref: str) -> None:
        """Load model ``ref``, index the KB with it, then swap embedder, index and fusion settings."""
        embedder = model_embedder(self.store, self.settings, ref or None)
        _share_analyzer(embedder, self.analyzer)
        index = self._new_index(embedder)
        index.build(self.store)
        config = tuned_retrieval(self.settings, embedder)
        self.embedder, self.index = embedder, index
        self.retriever.index, self.retriever.config = index, config
        self.model_ref = ref
        log.info("switched to embedding model %s (%s)", ref or "bundled", embedder.model_id)
        if self.opened:
            try:
                self.save_index()
            except OSError as e:
                log.warning("could not save the index after the model switch: %s", e)
        index.sync(self.store)  # edits made while it was building

    # -- learning from approvals -------------------------------------------------------------------

    def candidates(self) -> Candidates:
        return Candidates(self.store, on_accept=self._maybe_auto_tune)

    def _maybe_auto_tune(self, accepted: int) -> None:
        """After ``auto_tune_after`` more accepted candidates, re-tune in the background (one replica
        claims the job in the database); the model is switched only if it is better."""
        every = self.settings.auto_tune_after
        if every <= 0:
            return
        last = self.store.get_meta(AUTO_TUNE_KEY)
        if accepted - int(last or 0) < every:
            return
        if not self.store.compare_and_set_meta(AUTO_TUNE_KEY, last, str(accepted)):
            return  # another replica (or thread) claimed it
        self.auto_tune = threading.Thread(target=self._auto_tune, name="kefu-auto-tune", daemon=True)
        self.auto_tune.start()

    def _auto_tune(self) -> None:
        from knowledge.tune_cmd import TuneOptions, run_tune

        try:
            report = run_tune(self.settings, TuneOptions(show_progress=False), store=self.store, say=log.info)
            log.info(
                "automatic re-tuning: %s (held-out new %s, current %s)",
                f"switched to {report.get('switched_to')}"
                if report["switched"]
                else "kept the current model",
                report.get("new"),
                report.get("current"),
            )
            self.last_auto_tune = report
        except Exception:
            log.exception("automatic re-tuning failed; the current model stays")

    def open_index(self, *, progress: bool = False, log_fn: Callable[[str], None] = log.info) -> str:
        self.opened = self.index.open(self.store, self.settings.index_dir, progress=progress, log_fn=log_fn)
        return self.opened

    def save_index(self) -> Path:
        return self.index.save(self.settings.index_dir)

    def close(self) -> None:
        self.store.close()

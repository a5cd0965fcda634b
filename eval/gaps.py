"""Gap grouping benchmark: labelled questions grouped as knowledge gaps, scored pair by pair.

``kefu eval gaps`` treats every query of a retrieval queries file as an unanswered question, groups
them with :func:`knowledge.gaps.cluster` exactly as the service groups its gaps (the KB's embedder
and index), and compares the groups with the queries' true snippets: two questions belong together
when they expect the same snippet. Pairwise precision, recall and F1 over all pairs of questions.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.retrieval import Query, _import, _settings, _share_vectors, read_queries
from knowledge.gaps import cluster, meaning_embedder
from knowledge.io import read_snippets
from knowledge.service import KnowledgeBase, general_encoder
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.tune_cmd import TuneOptions, run_tune
from knowledge.tuning import TuningError


def pair_scores(groups: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """Pairwise precision / recall / F1 of ``groups`` against ``labels`` (same label: same group)."""
    true_pairs = sum(n * (n - 1) // 2 for n in Counter(labels).values())
    pred_pairs = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    right = sum(n * (n - 1) // 2 for g in groups for n in Counter(labels[i] for i in g).values())
    p = right / pred_pairs if pred_pairs else 0.0
    r = right / true_pairs if true_pairs else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f1, 4),
        "groups": len(groups),
        "questions": len(labels),
        "true_pairs": true_pairs,
    }


def _score(kb: KnowledgeBase, queries: list[Query], threshold: float | None) -> dict[str, Any]:
    embedder = meaning_embedder(kb.embedder)
    groups = cluster(
        [q.query for q in queries],
        kb.analyzer,
        embedder,
        threshold=threshold,
        index=kb.index,
        cache=kb.store,
    )
    out = pair_scores(groups, [q.expected_ids[0] for q in queries])
    out["similarity"] = "tf-idf" if embedder is None else f"meaning: {embedder.model_id}"
    return out


def evaluate_gaps(
    queries_path: Path,
    *,
    kb_path: Path | None = None,
    tune: bool = True,
    threshold: float | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    vector_cache: Path | None = None,
) -> dict[str, Any]:
    """Group the queries as gaps against ``kb_path`` loaded into a temporary store (tuned first, as
    ``kefu eval retrieval`` does, unless ``tune`` is off), or, without ``kb_path``, against the
    configured deployment (its KB, model and index as served). ``vector_cache``: a database file
    keeping the general encoder's vectors between runs (as ``kefu eval retrieval``)."""
    say = progress or (lambda _m: None)
    queries = [q for q in read_queries(queries_path) if q.expected_ids]
    if kb_path is None:
        kb = KnowledgeBase(KnowledgeSettings())
        try:
            say(kb.open_index())
            return _score(kb, queries, threshold)
        finally:
            kb.close()
    snippets = read_snippets(kb_path)
    with tempfile.TemporaryDirectory(prefix="kefu-gaps-") as tmp:
        root = Path(tmp)
        store = _import(root, snippets)
        cache: Store | None = None
        try:
            settings = _settings(root, store, KnowledgeSettings().analyzer, None, frozenset())
            general = general_encoder(settings)
            texts = [t for s in snippets for _, t in s.texts()] + [q.query for q in queries]
            if vector_cache and general is not None:
                cache = Store(f"sqlite:///{vector_cache}")
                _share_vectors(cache, store, general, texts)
            if tune:
                say("tuning the KB model (kefu kb tune) in the temporary store")
                opts = TuneOptions(seed=seed, show_progress=False, force=True)
                try:
                    run_tune(settings, opts, store=store, say=say)
                except TuningError as e:
                    say(f"no tune: {e.message_en}")
            kb = KnowledgeBase(settings, store=store)
            say("building the indexes")
            kb.index.build(store)
            say(f"grouping {len(queries)} questions")
            out = _score(kb, queries, threshold)
            if cache is not None and general is not None:
                _share_vectors(store, cache, general, texts)
            return out
        finally:
            store.close()
            if cache is not None:
                cache.close()

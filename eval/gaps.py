"""Gap grouping benchmark: labelled questions grouped as knowledge gaps, scored pair by pair.

``kefu eval gaps`` treats every query of a retrieval queries file as an unanswered question, groups
them with :func:`knowledge.gaps.cluster` exactly as the service groups its gaps (the KB's embedder
and index), and compares the groups with the queries' true snippets: two questions belong together
when they expect the same snippet. Pairwise precision, recall and F1 over all pairs of questions.

The questions are also split once, by a hash of their expected snippet id, into a tuning half and a
test half (:func:`half_of`): candidate groupings are compared on the tuning half's score only.
All questions are grouped together (as the service would); a half's score counts the true pairs
within it and every grouped pair with a member in it (a pair across the halves is wrong by
construction: the halves share no snippet). ``without_expected`` removes every snippet the queries
expect from the KB first: each question is then a real gap (its intent is not in the KB).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.retrieval import Query, _import, _settings, _share_vectors, read_queries
from knowledge.gaps import cluster, meaning_embedder
from knowledge.io import read_snippets
from knowledge.model import Snippet
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
    return {
        **_prf(right, pred_pairs, true_pairs),
        "groups": len(groups),
        "questions": len(labels),
        "true_pairs": true_pairs,
    }


def _prf(right: int, pred_pairs: int, true_pairs: int) -> dict[str, float]:
    p = right / pred_pairs if pred_pairs else 0.0
    r = right / true_pairs if true_pairs else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


HALVES = ("tune", "test")


def half_of(snippet_id: str) -> str:
    """The half of the questions that expect ``snippet_id``: "tune" or "test" (fixed, by hash)."""
    return HALVES[hashlib.sha256(snippet_id.encode()).digest()[0] % 2]


def half_scores(groups: list[list[int]], labels: list[str], half: str) -> dict[str, Any]:
    """Pairwise precision / recall / F1 of the questions of one half (see the module docstring)."""
    inside = [half_of(x) == half for x in labels]
    true_pairs = sum(
        n * (n - 1) // 2 for n in Counter(x for x, k in zip(labels, inside, strict=True) if k).values()
    )
    pred_pairs = right = 0
    for g in groups:
        out = sum(1 for i in g if not inside[i])
        pred_pairs += len(g) * (len(g) - 1) // 2 - out * (out - 1) // 2
        right += sum(n * (n - 1) // 2 for n in Counter(labels[i] for i in g if inside[i]).values())
    return {**_prf(right, pred_pairs, true_pairs), "questions": sum(inside), "true_pairs": true_pairs}


def without_expected_snippets(snippets: list[Snippet], queries: list[Query]) -> list[Snippet]:
    """``snippets`` but those any of ``queries`` expects: every question becomes a real gap."""
    expected = {x for q in queries for x in q.expected_ids}
    return [s for s in snippets if s.id not in expected]


def _score(kb: KnowledgeBase, queries: list[Query], threshold: float | None) -> dict[str, Any]:
    embedder = meaning_embedder(kb.embedder)
    t0 = time.perf_counter()
    groups = cluster(
        [q.query for q in queries],
        kb.analyzer,
        embedder,
        threshold=threshold,
        index=kb.index,
        cache=kb.store,
    )
    seconds = time.perf_counter() - t0
    labels = [q.expected_ids[0] for q in queries]
    out = pair_scores(groups, labels)
    for half in HALVES:
        out[half] = half_scores(groups, labels, half)
    out["seconds"] = round(seconds, 2)
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
    without_expected: bool = False,
) -> dict[str, Any]:
    """Group the queries as gaps against ``kb_path`` loaded into a temporary store (tuned first, as
    ``kefu eval retrieval`` does, unless ``tune`` is off), or, without ``kb_path``, against the
    configured deployment (its KB, model and index as served). ``vector_cache``: a database file
    keeping the general encoder's vectors between runs (as ``kefu eval retrieval``);
    ``without_expected``: drop the snippets the queries expect from the KB file first (every question
    a real gap)."""
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
    if without_expected:
        snippets = without_expected_snippets(snippets, queries)
        say(f"{len(snippets)} snippets left without those the queries expect")
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

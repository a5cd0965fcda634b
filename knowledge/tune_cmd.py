"""``kefu kb tune``: train a KB model, compare it with the current one on held-out pairs, switch if better."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from knowledge.embedding import Embedder, SentenceTransformerEmbedder
from knowledge.index import KnowledgeIndex
from knowledge.model import Snippet, SnippetFilter
from knowledge.retriever import HybridRetriever
from knowledge.service import ACTIVE_MODEL_KEY, active_model, kb_terms
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.text import Analyzer
from knowledge.tuning import Pair, TuneParams, kb_pairs, split_pairs, train_static_model

PREVIOUS_MODEL_KEY = "embedding_model_previous"


def held_out_scores(
    embedder: Embedder,
    snippets: list[Snippet],
    test: list[Pair],
    settings: KnowledgeSettings,
    terms: list[str],
) -> dict[str, float]:
    """Recall@5 and MRR@10 of hybrid retrieval for the held-out anchors (removed from the index)."""
    held = {(p.snippet_id, p.anchor) for p in test}
    visible = [
        replace(s, similar_questions=tuple(q for q in s.similar_questions if (s.id, q) not in held))
        for s in snippets
    ]
    index = KnowledgeIndex(embedder, Analyzer(settings.analyzer, terms))
    index.build_from(visible)
    retriever = HybridRetriever(index, settings.retrieval)
    flt = SnippetFilter(status=None, valid_on=None)
    r5 = mrr = 0.0
    for p in test:
        ids = [h.snippet_id for h in retriever.search(p.anchor, k=10, flt=flt).hits]
        if p.snippet_id in ids:
            rank = ids.index(p.snippet_id) + 1
            mrr += 1 / rank
            r5 += rank <= 5
    n = max(1, len(test))
    return {"recall@5": round(r5 / n, 4), "mrr@10": round(mrr / n, 4), "n": len(test)}


def tune(
    settings: KnowledgeSettings, *, seed: int = 0, epochs: int = 3, held_out: float = 0.1, force: bool = False
) -> int:
    store = Store(settings.database_url)
    try:
        snippets = [s for s in store.all() if s.status != "archived"]
        terms = kb_terms(store)
        pairs = kb_pairs(snippets)
        params = TuneParams(epochs=epochs, seed=seed, analyzer=settings.analyzer)
        texts = [t for s in snippets for _, t in s.texts()]
        train, test = split_pairs(pairs, held_out, seed)
        print(f"训练样本 pairs: {len(pairs)} ({len(train)} train, {len(test)} held out)", file=sys.stderr)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        models = settings.models_dir.resolve()
        report: dict[str, object] = {"pairs": len(pairs), "held_out": len(test)}
        if test:
            probe_dir = train_static_model(
                texts, train, models / f".probe-{stamp}", params=params, terms=terms, show_progress=True
            )
            candidate = held_out_scores(
                SentenceTransformerEmbedder(str(probe_dir)), snippets, test, settings, terms
            )
            current_name = active_model(store, settings)
            current = held_out_scores(
                SentenceTransformerEmbedder(current_name), snippets, test, settings, terms
            )
            import shutil

            shutil.rmtree(probe_dir, ignore_errors=True)
            report.update({"current_model": current_name, "current": current, "new": candidate})
            better = (candidate["mrr@10"], candidate["recall@5"]) > (current["mrr@10"], current["recall@5"])
        else:
            better = False
            report["note"] = "no held-out pairs: nothing to compare"
        switch = better or force
        if switch:
            final = train_static_model(
                texts, pairs, models / f"kb-static-{stamp}", params=params, terms=terms
            )
            previous = store.get_meta(ACTIVE_MODEL_KEY)
            if previous:
                store.set_meta(PREVIOUS_MODEL_KEY, previous)
            store.set_meta(ACTIVE_MODEL_KEY, str(Path(final)))
            report["switched_to"] = str(final)
        report["switched"] = switch
        print(json.dumps(report, ensure_ascii=False, indent=2))
        if not switch:
            print(
                "新模型没有更好，保持当前模型（--force 可强制切换）/ the new model is not better; kept the current "
                "one (use --force to switch anyway)",
                file=sys.stderr,
            )
    finally:
        store.close()
    return 0

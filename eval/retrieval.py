"""Retrieval benchmark: a KB file and a queries file in, recall@k, MRR@10 and latency out.

``kefu eval retrieval`` loads the KB into a fresh temporary store, builds the indexes the way the
service does (by default after running ``kefu kb tune`` in that store: model, fusion and confidence
thresholds), runs every query and reports recall@1/5/10, MRR@10, per-query latency p50/p95 and the
number of queries. ``kefu eval learning-curve`` simulates agents' approvals (see
:func:`learning_curve`).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.candidates import record_candidate
from knowledge.embedding import Embedder
from knowledge.encoders import load_embedder
from knowledge.errors import ImportFailed, Problem
from knowledge.io import read_snippets
from knowledge.model import Snippet, SnippetFilter
from knowledge.retriever import RetrievalConfig
from knowledge.service import KnowledgeBase, general_encoder
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store, writing
from knowledge.tune_cmd import TuneOptions, run_tune
from knowledge.tuning import TuningError


@dataclass(frozen=True)
class Query:
    query: str
    expected_ids: tuple[str, ...]


def read_queries(path: Path) -> list[Query]:
    problems: list[Problem] = []
    out: list[Query] = []
    try:
        lines = Path(path).read_text("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ImportFailed(
            problems=[
                Problem(Path(path).name, f"byte {e.start}", None, "文件不是 UTF-8 编码", "file is not UTF-8")
            ]
        ) from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(
                Problem(Path(path).name, f"line {n}", None, f"JSON 格式错误：{e.msg}", f"bad JSON: {e.msg}")
            )
            continue
        q, ids = (obj.get("query"), obj.get("expected_ids")) if isinstance(obj, dict) else (None, None)
        if not isinstance(q, str) or not q.strip():
            problems.append(
                Problem(Path(path).name, f"line {n}", "query", "缺少查询文本", "query text missing")
            )
        elif not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append(
                Problem(
                    Path(path).name,
                    f"line {n}",
                    "expected_ids",
                    "应为编号列表",
                    "must be a list of snippet ids",
                )
            )
        else:
            out.append(Query(q, tuple(ids)))
    if problems:
        raise ImportFailed(problems=problems)
    return out


@dataclass
class RetrievalReport:
    metrics: dict[str, float]
    per_query: list[dict[str, Any]] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)


def _import(root: Path, snippets: list[Snippet]) -> Store:
    store = Store(f"sqlite:///{root / 'kb.db'}")
    store.import_snippets(snippets, actor="eval")
    return store


def _settings(
    root: Path, store: Store, analyzer: str, config: RetrievalConfig | None, explicit: frozenset[str]
) -> KnowledgeSettings:
    return KnowledgeSettings(
        database_url=store.url,
        index_dir=root / "index",
        models_dir=root / "models",
        analyzer=analyzer,
        retrieval=config or RetrievalConfig(),
        retrieval_explicit=explicit,
        embedding_model="",
        auto_tune_after=0,
    )


def _share_vectors(src: Store, dst: Store, embedder: Embedder, texts: list[str]) -> int:
    """Copy ``embedder``'s cached vectors of ``texts`` from one store to another; how many."""
    found = src.cached_vectors(embedder.model_id, [embedder.input_key(t) for t in texts])
    dst.store_vectors(embedder.model_id, found)
    return len(found)


def _run_queries(kb: KnowledgeBase, queries: list[Query], k: int) -> tuple[list[dict[str, Any]], list[float]]:
    flt = SnippetFilter(valid_on=None)
    kb.retriever.search(queries[0].query if queries else "warm-up", k=k, flt=flt)
    per_query = []
    latencies = []
    for q in queries:
        res = kb.retriever.search(q.query, k=k, flt=flt)
        latencies.append(res.latency_ms)
        ids = [h.snippet_id for h in res.hits]
        rank = next((i + 1 for i, sid in enumerate(ids) if sid in q.expected_ids), None)
        per_query.append(
            {"query": q.query, "expected_ids": list(q.expected_ids), "rank": rank, "top": ids[:5]}
        )
    return per_query, latencies


def evaluate(
    kb_path: Path,
    queries_path: Path,
    *,
    k: int = 10,
    tune: bool = True,
    model: str = "",
    analyzer: str = "wcb",
    config: RetrievalConfig | None = None,
    explicit: frozenset[str] = frozenset(),
    tune_options: TuneOptions | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str], None] | None = None,
    vector_cache: Path | None = None,
) -> RetrievalReport:
    """``tune``: run ``kefu kb tune`` in the temporary store first (model, fusion and thresholds fitted
    on held-out pairs, stored and activated as in production); the fields in ``explicit`` keep the
    value of ``config`` instead of the tuned one. ``model`` (without ``tune``): that embedding model
    instead of the KB's default (e5). ``vector_cache``: a database file that keeps the general
    encoder's vectors between runs (e5 takes about a minute for 5,000 texts)."""
    say = progress or (lambda _m: None)
    snippets = read_snippets(kb_path)
    queries = read_queries(queries_path)
    with tempfile.TemporaryDirectory(prefix="kefu-eval-") as tmp:
        root = Path(tmp)
        store = _import(root, snippets)
        cache: Store | None = None
        try:
            setup: dict[str, Any] = {"snippets": len(snippets), "analyzer": analyzer}
            settings = _settings(root, store, analyzer, config, explicit)
            general = general_encoder(settings)
            texts = [t for s in snippets for _, t in s.texts()]
            if vector_cache and general is not None:
                cache = Store(f"sqlite:///{vector_cache}")
                setup["vectors_from_cache"] = _share_vectors(cache, store, general, texts)
            if embedder is None and tune:
                say("tuning the KB model (kefu kb tune) in the temporary store")
                opts = tune_options or TuneOptions(show_progress=False)
                report = run_tune(settings, replace(opts, force=True), store=store, say=say)
                setup["tune"] = report
            elif embedder is None and model:
                embedder = load_embedder(model)
            kb = KnowledgeBase(settings, store=store, embedder=embedder)
            setup["model"] = kb.embedder.model_id
            cfg = kb.retriever.config
            setup["retrieval"] = cfg.tuned()
            say("building the indexes")
            kb.index.build(store)
            say(f"running {len(queries)} queries")
            per_query, latencies = _run_queries(kb, queries, k)
            if cache is not None and general is not None:
                _share_vectors(store, cache, general, texts)
        finally:
            store.close()
            if cache is not None:
                cache.close()
    return RetrievalReport(metrics=_metrics(per_query, latencies), per_query=per_query, setup=setup)


def evaluate_deployment(
    queries_path: Path, *, k: int = 10, progress: Callable[[str], None] | None = None
) -> RetrievalReport:
    """The configured deployment as a replica serves it: its store, active model and saved index (or
    one built now if it is missing or stale); nothing is imported or tuned."""
    say = progress or (lambda _m: None)
    queries = read_queries(queries_path)
    settings = KnowledgeSettings()
    kb = KnowledgeBase(settings)
    try:
        say(kb.open_index(progress=True))
        cfg = kb.retriever.config
        setup: dict[str, Any] = {
            "snippets": len(kb.index.snippets),
            "analyzer": settings.analyzer,
            "model": kb.embedder.model_id,
            "database": settings.database_url,
            "retrieval": {
                **cfg.tuned(),
                "lexical_exact": cfg.lexical_exact,
                "lexical_budget": cfg.lexical_budget,
            },
        }
        say(f"running {len(queries)} queries")
        per_query, latencies = _run_queries(kb, queries, k)
    finally:
        kb.close()
    return RetrievalReport(metrics=_metrics(per_query, latencies), per_query=per_query, setup=setup)


def learning_curve(
    kb_path: Path,
    queries_path: Path,
    *,
    seed: int = 0,
    analyzer: str = "wcb",
    tune_options: TuneOptions | None = None,
    progress: Callable[[str], None] | None = None,
    vector_cache: Path | None = None,
) -> dict[str, Any]:
    """Simulated agent approvals: half of the queries (seeded) become accepted candidate similar
    questions of their expected snippet, as if agents had approved answers to them; the other half
    is measured before, after the candidates are accepted (indexed at once), and after re-tuning.

    The measured half is never seen by a tune or accepted as a candidate. The re-tuned model is
    measured whether or not the tune's own held-out comparison would switch to it (``would_switch``),
    so that the curve shows what re-tuning does. Each stage is also split into the measured questions
    whose snippet received candidates (``seen``) and the rest (``unseen``): what was learnt, and what
    it cost the other snippets. ``vector_cache``: as for :func:`evaluate`."""
    say = progress or (lambda _m: None)
    snippets = read_snippets(kb_path)
    queries = read_queries(queries_path)
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    learn = [queries[i] for i in order[:half]]
    test = [queries[i] for i in order[half:]]
    taught = {q.expected_ids[0] for q in learn if q.expected_ids}
    seen = [q for q in test if taught.intersection(q.expected_ids)]
    unseen = [q for q in test if not taught.intersection(q.expected_ids)]
    opts = tune_options or TuneOptions(show_progress=False, seed=seed)
    out: dict[str, Any] = {
        "learn": len(learn),
        "test": len(test),
        "test_seen": len(seen),
        "test_unseen": len(unseen),
        "seed": seed,
    }

    def stage(kb: KnowledgeBase) -> dict[str, Any]:
        per_query, latencies = _run_queries(kb, test, 10)
        seen_q = {q.query for q in seen}
        split = {
            part: _metrics([p for p in per_query if (p["query"] in seen_q) == (part == "seen")], [])
            for part in ("seen", "unseen")
        }
        return {**_metrics(per_query, latencies), "split": split}

    with tempfile.TemporaryDirectory(prefix="kefu-curve-") as tmp:
        root = Path(tmp)
        store = _import(root, snippets)
        general = cache = None
        texts = [t for s in snippets for _, t in s.texts()] + [q.query for q in learn]
        try:
            settings = _settings(root, store, analyzer, None, frozenset())
            general = general_encoder(settings)
            if vector_cache and general is not None:
                cache = Store(f"sqlite:///{vector_cache}")
                out["vectors_from_cache"] = _share_vectors(cache, store, general, texts)
            say("tuning the KB model on the KB alone")
            out["tune_before"] = _tune_or_none(settings, replace(opts, force=True), store, say)
            kb = KnowledgeBase(settings, store=store)
            kb.follows_model = False  # measured as it is; kb2 below loads the re-tuned model
            kb.index.build(store)
            out["before"] = stage(kb)
            say(f"accepting {len(learn)} candidate similar questions")
            out["accepted"] = _accept_all(kb, learn)
            out["after_accept"] = stage(kb)
            say("re-tuning with the accepted candidates")
            tuned = _tune_or_none(settings, replace(opts, force=True), store, say)
            out["tune_after"] = tuned
            out["would_switch"] = bool(
                tuned
                and "new" in tuned
                and (tuned["new"]["mrr@10"], tuned["new"]["recall@5"])
                > (tuned["current"]["mrr@10"], tuned["current"]["recall@5"])
            )
            kb2 = KnowledgeBase(settings, store=store)
            kb2.index.build(store)
            out["after_tune"] = stage(kb2)
            if cache is not None and general is not None:
                _share_vectors(store, cache, general, texts)
        finally:
            store.close()
            if cache is not None:
                cache.close()
    return out


def _tune_or_none(
    settings: KnowledgeSettings, opts: TuneOptions, store: Store, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """``kefu kb tune`` in the curve's store; None when the KB has too few pairs to train on (the
    general encoder and BM25 then search alone)."""
    try:
        return run_tune(settings, opts, store=store, say=say)
    except TuningError as e:
        say(f"no tune: {e.message_en}")
        return None


def _accept_all(kb: KnowledgeBase, learn: list[Query]) -> int:
    """Record each learning query as a candidate of its expected snippet and accept it, as agents
    approving and an editor reviewing would; returns how many were accepted."""
    at = datetime.now(UTC)
    with writing(kb.store.engine) as conn:
        ids = [
            record_candidate(
                conn,
                snippet_id=q.expected_ids[0],
                text=q.query,
                suggestion_id=None,
                conversation_id=None,
                at=at,
            )
            for q in learn
            if q.expected_ids
        ]
    cands = kb.candidates()
    accepted = 0
    for cid in ids:
        if cid is not None:
            cands.accept(cid, actor="eval")
            accepted += 1
    return accepted


def _metrics(per_query: list[dict[str, Any]], latencies: list[float]) -> dict[str, float]:
    n = len(per_query)
    ranks = [q["rank"] for q in per_query]

    def recall(k: int) -> float:
        return sum(1 for r in ranks if r is not None and r <= k) / n if n else float("nan")

    mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / n if n else float("nan")
    return {
        "recall@1": round(recall(1), 4),
        "recall@5": round(recall(5), 4),
        "recall@10": round(recall(10), 4),
        "mrr@10": round(mrr, 4),
        "latency_ms_p50": round(statistics.median(latencies), 3) if latencies else float("nan"),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3) if latencies else float("nan"),
        "n_queries": n,
    }

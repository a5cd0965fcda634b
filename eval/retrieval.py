"""Retrieval benchmark: a KB file and a queries file in, recall@k, MRR@10 and latency out.

``kefu eval retrieval`` loads the KB into a fresh temporary store, builds the indexes the way the
service does (by default after tuning the KB model as ``kefu kb tune`` would), runs every query
and reports recall@1/5/10, MRR@10, per-query latency p50/p95 and the number of queries.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.embedding import BUNDLED_MODEL, Embedder, SentenceTransformerEmbedder
from knowledge.errors import ImportFailed, Problem
from knowledge.io import read_snippets
from knowledge.model import SnippetFilter
from knowledge.retriever import RetrievalConfig
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.tuning import TuneParams, kb_pairs, train_static_model


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


def evaluate(
    kb_path: Path,
    queries_path: Path,
    *,
    k: int = 10,
    tune: bool = True,
    model: str = BUNDLED_MODEL,
    analyzer: str = "wcb",
    config: RetrievalConfig | None = None,
    tune_params: TuneParams | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetrievalReport:
    say = progress or (lambda _m: None)
    snippets = read_snippets(kb_path)
    queries = read_queries(queries_path)
    with tempfile.TemporaryDirectory(prefix="kefu-eval-") as tmp:
        root = Path(tmp)
        store = Store(f"sqlite:///{root / 'kb.db'}")
        try:
            store.import_snippets(snippets, actor="eval")
            setup: dict[str, Any] = {"snippets": len(snippets), "analyzer": analyzer}
            if embedder is None:
                if tune:
                    pairs = kb_pairs(snippets)
                    say(f"tuning the KB model on {len(pairs)} question/similar-question pairs")
                    texts = [t for s in snippets for _, t in s.texts()]
                    params = tune_params or TuneParams(analyzer=analyzer)
                    path = train_static_model(texts, pairs, root / "model", params=params)
                    model = str(path)
                    setup["tuned_pairs"] = len(pairs)
                embedder = SentenceTransformerEmbedder(model)
            setup["model"] = embedder.model_id
            settings = KnowledgeSettings(
                database_url=store.url,
                index_dir=root / "index",
                analyzer=analyzer,
                retrieval=config or RetrievalConfig(),
            )
            kb = KnowledgeBase(settings, store=store, embedder=embedder)
            say("building the indexes")
            kb.index.build(store)
            flt = SnippetFilter(valid_on=None)
            kb.retriever.search(queries[0].query if queries else "warm-up", k=k, flt=flt)
            say(f"running {len(queries)} queries")
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
        finally:
            store.close()
    return RetrievalReport(metrics=_metrics(per_query, latencies), per_query=per_query, setup=setup)


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

"""``kefu kb tune``: train a KB model, fit fusion and confidence thresholds, switch only if better.

One run: gather pairs (the snippets' question/similar-question pairs, the agents' approved
(customer message, cited snippet) pairs that await review, an optional pairs file), hold a share of
the similar questions back, train a static model on the rest, and measure both the new and the
current model on the held-out questions (each removed from the index first, so it is a question
the KB has never seen). The fusion of dense and BM25 scores and the confidence thresholds are fitted
on the same held-out questions and stored with the model. The new model is stored in the database
and switched to only when it retrieves better (or with ``--force``); the previous one stays for
``kefu kb tune --rollback``.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from knowledge.candidates import Candidates
from knowledge.e5 import E5Embedder
from knowledge.embedding import KEFU_MODEL_FILE, Embedder, SentenceTransformerEmbedder
from knowledge.encoders import E5_WEIGHT_KEY, fuse
from knowledge.errors import ImportFailed, Problem
from knowledge.index import KnowledgeIndex
from knowledge.model import Snippet, SnippetFilter
from knowledge.model_store import DB_PREFIX, ModelStore
from knowledge.retriever import HybridRetriever, RetrievalConfig
from knowledge.service import active_model, general_encoder, kb_terms, tuned_retrieval
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.text import Analyzer, normalize
from knowledge.tuning import (
    MIN_PAIRS,
    Pair,
    TuneParams,
    kb_pairs,
    pair_key,
    split_pairs,
    train_static_model,
)

#: Fusions tried on the held-out questions (the best MRR@10 wins; ties: the first):
#: (fusion, dense weight, second-text weight, hubness weight).
FUSION_GRID: tuple[tuple[str, float, float, float], ...] = tuple(
    (fusion, dw, second, hub)
    for hub in (0.0, 0.5)
    for second in (0.0, 0.25)
    for fusion, dw in (
        ("weighted", 0.6),
        ("weighted", 0.7),
        ("weighted", 0.8),
        ("weighted", 0.9),
        ("rrf", 0.5),
        ("rrf", 0.7),
    )
)
#: Shares of e5 in its fusion with the new static model tried on the held-out questions (0: the
#: static model alone). The best (MRR@10, then recall@5) is stored with the model.
E5_WEIGHTS = (0.0, 0.5, 0.7, 0.85, 0.95)
#: The fusions each e5 share is first measured with; the whole ``FUSION_GRID`` is then tried with
#: the best share only (5 x 4 + 24 searches of each held-out question instead of 5 x 24: the tune of
#: bq-dev took 655-735 s with every share times every fusion, docs/benchmarks.md).
SHARE_GRID: tuple[tuple[str, float, float, float], ...] = tuple(
    ("weighted", dw, second, 0.0) for dw in (0.8, 0.9) for second in (0.0, 0.25)
)
#: The e5 share when nothing is held out to fit it (``--held-out 0``): what the tune chose on bq-dev.
DEFAULT_E5_WEIGHT = 0.85
#: Where a tuned model's metadata keeps the ``pair_key`` of every pair its tune trained on or held
#: out: the next tune holds out only other pairs, so that its comparison with this model is fair.
SEEN_PAIRS_KEY = "seen_pairs"
#: Fewer held-out probes than this: keep the configured confidence thresholds.
MIN_PROBES_FOR_THRESHOLDS = 30
#: "high" is the lowest score from which the top hit was right this often on held-out questions.
HIGH_PRECISION = 0.9


@dataclass
class TuneOptions:
    seed: int = 0
    epochs: int | None = None
    held_out: float = 0.1
    force: bool = False
    pairs_file: Path | None = None
    show_progress: bool = True


def read_pairs_file(path: Path) -> list[Pair]:
    """JSONL ``{"anchor", "positive"}``; any error names the line and reads nothing."""
    problems: list[Problem] = []
    out: list[Pair] = []
    name = Path(path).name
    try:
        lines = Path(path).read_text("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ImportFailed(
            problems=[
                Problem(
                    name,
                    "file",
                    None,
                    f"无法读取文件（需要 UTF-8）：{e}",
                    f"cannot read the file (UTF-8 needed): {e}",
                )
            ]
        ) from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(name, f"line {n}", None, f"JSON 格式错误：{e.msg}", f"bad JSON: {e.msg}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(name, f"line {n}", None, "应为 JSON 对象", "must be a JSON object"))
            continue
        bad = [k for k in ("anchor", "positive") if not isinstance(obj.get(k), str) or not obj[k].strip()]
        for k in bad:
            problems.append(Problem(name, f"line {n}", k, "缺少文本", "text missing"))
        if not bad:
            out.append(Pair(obj["anchor"].strip(), obj["positive"].strip(), None))
    if problems:
        raise ImportFailed(problems=problems)
    return out


def _owner_of_texts(snippets: Sequence[Snippet]) -> dict[str, str]:
    owner: dict[str, str] = {}
    for s in snippets:
        for _, text in s.texts():
            owner.setdefault(normalize(text), s.id)
    return owner


def seen_pairs(embedder: Embedder) -> frozenset[str]:
    """The ``pair_key`` of the pairs the model ``embedder`` searches with was trained or fitted on
    (empty for a model tuned before they were stored, or for no tuned model)."""
    meta: Any = getattr(embedder, "kb_meta", None) or {}
    keys = meta.get(SEEN_PAIRS_KEY) if isinstance(meta, dict) else None
    return frozenset(str(k) for k in keys) if isinstance(keys, list) else frozenset()


# -- held-out measurement ----------------------------------------------------------------------------


@dataclass
class Probe:
    """One held-out question searched: was the right snippet found, where, and how confident."""

    rank: int | None
    top_correct: bool
    score: float  # the top hit's confidence score
    answerable: bool


def _visible(
    snippets: Sequence[Snippet], test: Sequence[Pair], drop: frozenset[str] | set[str] = frozenset()
) -> list[Snippet]:
    held = {(p.snippet_id, p.anchor) for p in test}
    return [
        replace(s, similar_questions=tuple(q for q in s.similar_questions if (s.id, q) not in held))
        for s in snippets
        if s.id not in drop
    ]


def _probes(retriever: HybridRetriever, test: Sequence[Pair], answerable: bool) -> list[Probe]:
    flt = SnippetFilter(status=None, valid_on=None)
    out = []
    for p in test:
        hits = retriever.search(p.anchor, k=10, flt=flt).hits
        ids = [h.snippet_id for h in hits]
        rank = ids.index(p.snippet_id) + 1 if p.snippet_id in ids else None
        out.append(Probe(rank, rank == 1, hits[0].confidence_score if hits else 0.0, answerable))
    return out


def _figures(probes: Sequence[Probe]) -> dict[str, float]:
    ans = [p for p in probes if p.answerable]
    n = max(1, len(ans))
    return {
        "recall@5": round(sum(1 for p in ans if p.rank is not None and p.rank <= 5) / n, 4),
        "mrr@10": round(sum(1 / p.rank for p in ans if p.rank is not None) / n, 4),
        "n": len(ans),
    }


def fit_thresholds(probes: Sequence[Probe], default: RetrievalConfig) -> dict[str, Any]:
    """``medium`` separates right from wrong top hits best (Youden's J), so that "low" means the
    top hit is most likely wrong (escalate); ``high`` is the lowest score from which the top hit was
    right at least ``HIGH_PRECISION`` of the time. Probes include unanswerable questions (their
    snippet removed from the index), whose top hit is always wrong."""
    if len(probes) < MIN_PROBES_FOR_THRESHOLDS:
        return {"high": default.high, "medium": default.medium, "fitted": False}
    right = sorted(p.score for p in probes if p.top_correct)
    wrong = sorted(p.score for p in probes if not p.top_correct)
    if not right or not wrong:
        return {"high": default.high, "medium": default.medium, "fitted": False}
    cuts = sorted({round(p.score, 4) for p in probes})
    best_j, medium = -1.0, default.medium
    for c in cuts:
        tpr = sum(1 for s in right if s >= c) / len(right)
        fpr = sum(1 for s in wrong if s >= c) / len(wrong)
        if tpr - fpr > best_j:
            best_j, medium = tpr - fpr, c
    medium = min(max(medium, 0.05), 0.95)
    high = None
    for c in cuts:
        above = [p for p in probes if p.score >= c]
        if (
            c >= medium
            and len(above) >= 5
            and sum(p.top_correct for p in above) / len(above) >= HIGH_PRECISION
        ):
            high = c
            break
    if high is None:
        high = max(medium, min(0.99, max(right[-1], wrong[-1]) + 0.01))
    return {"high": round(high, 4), "medium": round(medium, 4), "fitted": True}


def _label_report(probes: Sequence[Probe], cfg: RetrievalConfig) -> dict[str, Any]:
    """How the labels behave on held-out questions: how often each level's top hit was right."""
    out: dict[str, Any] = {}
    for level in ("high", "medium", "low"):
        sel = [
            p
            for p in probes
            if (level == "high" and p.score >= cfg.high)
            or (level == "medium" and cfg.medium <= p.score < cfg.high)
            or (level == "low" and p.score < cfg.medium)
        ]
        out[level] = {
            "n": len(sel),
            "top_right": round(sum(p.top_correct for p in sel) / len(sel), 4) if sel else None,
        }
    unans = [p for p in probes if not p.answerable]
    out["unanswerable_low"] = (
        round(sum(1 for p in unans if p.score < cfg.medium) / len(unans), 4) if unans else None
    )
    return out


def measure(
    embedder: Embedder,
    snippets: Sequence[Snippet],
    test: Sequence[Pair],
    settings: KnowledgeSettings,
    terms: Sequence[str],
    *,
    config: RetrievalConfig | None = None,
    fit: bool = False,
    seed: int = 0,
    cache: Store | None = None,
    grid: Sequence[tuple[str, float, float, float]] = FUSION_GRID,
) -> dict[str, Any]:
    """Held-out figures of ``embedder`` with ``config`` (or, with ``fit``, the best fusion of ``grid``
    and fitted thresholds). Each held-out question is removed from the index before it is searched."""
    analyzer = Analyzer(settings.analyzer, terms)
    index = KnowledgeIndex(embedder, analyzer, answer_weight=settings.retrieval.answer_weight)
    index.build_from(_visible(snippets, test), cache=cache)
    base = config or settings.retrieval
    configs = (
        [replace(base, fusion=f, dense_weight=w, second_weight=b, hub_weight=h) for f, w, b, h in grid]
        if fit
        else [base]
    )
    scored = []
    for cfg in configs:
        probes = _probes(HybridRetriever(index, cfg), test, True)
        scored.append((_figures(probes), cfg, probes))
    figures, cfg, probes = max(scored, key=lambda x: _rank(x[0]))
    # Unanswerable questions: half of the held-out snippets removed from the index altogether.
    owners = sorted({p.snippet_id for p in test if p.snippet_id})
    dropped = set(random.Random(seed).sample(owners, len(owners) // 2)) if owners else set()
    unans_test = [p for p in test if p.snippet_id in dropped]
    if unans_test:
        index.remove_snippets(dropped)
        probes = probes + _probes(HybridRetriever(index, cfg), unans_test, False)
    if fit:
        th = fit_thresholds(probes, cfg)
        cfg = replace(cfg, high=th["high"], medium=th["medium"])
    return {
        **figures,
        "retrieval": cfg.tuned(),
        "labels": _label_report(probes, cfg),
    }


def _rank(figures: dict[str, Any]) -> tuple[float, float]:
    """How held-out figures are compared when choosing: MRR@10, then recall@5."""
    return (figures["mrr@10"], figures["recall@5"])


def _best_fusion(
    general: Embedder | None,
    static: Embedder,
    snippets: Sequence[Snippet],
    test: Sequence[Pair],
    settings: KnowledgeSettings,
    terms: Sequence[str],
    seed: int,
    store: Store,
) -> tuple[dict[str, Any], float | None]:
    """The held-out figures of the best mix of the general encoder and the new static model (each
    mix with its best fusion and fitted thresholds), and its e5 share (None without e5)."""
    if general is None:
        return measure(static, snippets, test, settings, terms, fit=True, seed=seed), None
    tried: list[tuple[dict[str, Any], float]] = []

    def at_share(w: float, grid: Sequence[tuple[str, float, float, float]]) -> dict[str, Any]:
        embedder = fuse(general, static, w, cache_kb=False)
        assert embedder is not None
        # e5's vectors come from the store's cache; the new static model's are not stored yet
        cache = None if embedder is static else store
        return measure(embedder, snippets, test, settings, terms, fit=True, seed=seed, cache=cache, grid=grid)

    for w in E5_WEIGHTS:
        tried.append((at_share(w, SHARE_GRID), w))

    best, weight = max(tried, key=lambda x: _rank(x[0]))
    # the whole grid at the best share (it contains ``SHARE_GRID``: never worse than the first pass)
    best = max([best, at_share(weight, FUSION_GRID)], key=_rank)
    shares = {str(w): {"recall@5": f["recall@5"], "mrr@10": f["mrr@10"]} for f, w in tried}
    shares[str(weight)] = {"recall@5": best["recall@5"], "mrr@10": best["mrr@10"]}
    return {**best, "e5_weights": shares}, weight


# -- the command -------------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_tune(
    settings: KnowledgeSettings,
    opts: TuneOptions | None = None,
    *,
    store: Store | None = None,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Train, measure, store and (if better or forced) activate a KB model; returns the report."""
    opts = opts or TuneOptions()
    own_store = store is None
    store = store or Store(settings.database_url)
    started = time.perf_counter()
    try:
        snippets = [s for s in store.all() if s.status != "archived"]
        terms = kb_terms(store)
        defaults = TuneParams()
        params = TuneParams(seed=opts.seed, analyzer=settings.analyzer, epochs=opts.epochs or defaults.epochs)
        kb = kb_pairs(snippets, siblings=params.sibling_pairs)
        approved = Candidates(store).training_pairs()
        extra = read_pairs_file(opts.pairs_file) if opts.pairs_file else []
        owner = _owner_of_texts(snippets)
        extra = [replace(p, snippet_id=owner.get(normalize(p.positive))) for p in extra]
        current_embedder = active_model(store, settings)
        seen = seen_pairs(current_embedder)
        train, test = split_pairs(kb, opts.held_out, opts.seed, seen=seen)
        train = train + approved + extra
        say(
            f"训练样本 pairs: {len(kb)} from similar questions ({len(test)} held out), "
            f"{len(approved)} from approved replies, {len(extra)} from the pairs file"
        )
        general = None if settings.embedding_model else general_encoder(settings)
        report: dict[str, Any] = {
            "pairs": {"similar_questions": len(kb), "approved": len(approved), "file": len(extra)},
            "held_out": len(test),
            # pairs the current model was trained or fitted on: never held out (leakage-free)
            "seen_by_current": len(seen),
        }
        if len(train) < MIN_PAIRS and general is not None:
            # The usual first import of a company FAQ: nothing to train a KB model on. e5 needs no
            # training; it searches with the fusion and thresholds chosen for it on another KB.
            report.update(
                {
                    "switched": False,
                    "model": general.model_id,
                    "retrieval": tuned_retrieval(settings, general).tuned(),
                    "note": "no similar questions to train on: the KB searches with the general "
                    "encoder and BM25, with their default fusion and thresholds",
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            say(
                f"没有相似问法可训练，知识库使用通用语义模型 {general.model_id} 与 BM25 / no similar "
                f"questions to train on: the KB searches with {general.model_id} and BM25"
            )
            return report
        texts = [t for s in snippets for _, t in s.texts()]
        corpus = [(s.id, t) for s in snippets for _, t in s.texts()]
        models = ModelStore(store, settings.models_dir)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        model_id = f"kb-static-{stamp}"
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=settings.models_dir))
        try:
            path = train_static_model(
                texts,
                train,
                tmp / "model",
                params=params,
                terms=terms,
                show_progress=opts.show_progress,
                corpus=corpus,
            )
            report["train_seconds"] = round(time.perf_counter() - started, 1)
            static = SentenceTransformerEmbedder(str(path))
            weight: float | None = None
            if test:
                if isinstance(general, E5Embedder):
                    general.warm([p.anchor for p in test])
                new, weight = _best_fusion(general, static, snippets, test, settings, terms, opts.seed, store)
                current = measure(
                    current_embedder,
                    snippets,
                    test,
                    settings,
                    terms,
                    config=tuned_retrieval(settings, current_embedder),
                    seed=opts.seed,
                    cache=store,  # the live index cached the current model's vectors
                )
                report.update(
                    {
                        "current_model": store.get_meta("embedding_model") or current_embedder.model_id,
                        "current": current,
                        "new": new,
                    }
                )
                better = (new["mrr@10"], new["recall@5"]) > (current["mrr@10"], current["recall@5"])
                retrieval = new["retrieval"]
            else:
                better = False
                retrieval = None
                weight = DEFAULT_E5_WEIGHT if general is not None else None
                report["note"] = "no held-out pairs: nothing to compare"
            switch = better or opts.force
            meta_file = path / KEFU_MODEL_FILE
            meta = json.loads(meta_file.read_text("utf-8"))
            meta.update(
                {
                    "id": model_id,
                    "held_out": report.get("new"),
                    "current_at_tune": report.get("current"),
                    SEEN_PAIRS_KEY: sorted(seen | {pair_key(p) for p in [*train, *test]}),
                }
            )
            if retrieval is not None:
                meta["retrieval"] = retrieval
            if weight is not None:
                meta[E5_WEIGHT_KEY] = weight
            meta_file.write_text(json.dumps(meta, ensure_ascii=False, indent=2), "utf-8")
            if switch:
                stored = models.save(path, model_id, meta)
                # This process keeps the trained directory as its unpacked copy.
                final = models.cache_dir / model_id
                if not final.exists():
                    path.rename(final)
                    (final / ".kefu-sha256").write_text(stored.sha256)
                models.activate(stored.ref)
                report["switched_to"] = stored.ref
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report["switched"] = switch
        report["seconds"] = round(time.perf_counter() - started, 1)
        return report
    finally:
        if own_store:
            store.close()


def tune(settings: KnowledgeSettings, opts: TuneOptions | None = None) -> int:
    report = run_tune(settings, opts)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    if not report["switched"] and "model" not in report:
        _say(
            "新模型没有更好，保持当前模型（--force 可强制切换）/ the new model is not better; kept the current "
            "one (use --force to switch anyway)"
        )
    return 0


def rollback(settings: KnowledgeSettings) -> int:
    store = Store(settings.database_url)
    try:
        ref = ModelStore(store, settings.models_dir).rollback()
    finally:
        store.close()
    print(f"已回退到 / rolled back to {ref}")
    return 0


def list_models(settings: KnowledgeSettings) -> int:
    store = Store(settings.database_url)
    try:
        models = ModelStore(store, settings.models_dir)
        active, previous = models.active_ref(), models.previous_ref()
        for m in models.list():
            mark = "*" if m.ref == active else ("<" if m.ref == previous else " ")
            held = m.meta.get("held_out") or {}
            print(
                f"{mark} {m.id}  {m.created_at:%Y-%m-%d %H:%M} UTC  {m.size / 1e6:.1f} MB  "
                f"recall@5 {held.get('recall@5', '-')}  mrr@10 {held.get('mrr@10', '-')}"
            )
        if active and not active.startswith(DB_PREFIX):
            print(f"* {active} (a local directory)")
        print("(* active, < previous: kefu kb tune --rollback)")
    finally:
        store.close()
    return 0

"""``kefu eval ...``: evaluators."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from knowledge.embedding import BUNDLED_MODEL
from knowledge.retriever import RetrievalConfig
from knowledge.settings import KnowledgeSettings


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate retrieval, norms and drafts (评估)")
    es = ev.add_subparsers(dest="eval_cmd", required=True, metavar="COMMAND")
    p = es.add_parser("retrieval", help="recall@k, MRR@10 and latency of retrieval on a KB and queries")
    p.add_argument("--kb", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the metrics")
    tune = p.add_mutually_exclusive_group()
    tune.add_argument(
        "--tune",
        action="store_true",
        help="run kefu kb tune in the temporary store first: model, fusion, thresholds (the default)",
    )
    tune.add_argument(
        "--no-tune",
        action="store_true",
        help="use the configured embedding model as it is instead of tuning a KB model first",
    )
    p.add_argument("--epochs", type=int, help="training epochs of the tune (default: kefu kb tune's)")
    p.add_argument(
        "--model", default="", help="embedding model for --no-tune (default: KEFU_EMBEDDING_MODEL or bundled)"
    )
    p.add_argument("--analyzer", help="BM25 tokens: c, cb, wc, wcb, w (default: KEFU_ANALYZER or wcb)")
    p.add_argument("--fusion", choices=("weighted", "rrf"))
    p.add_argument("--dense-weight", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-query", type=Path, help="write every query's rank and top hits to this JSONL file")

    p = es.add_parser(
        "learning-curve",
        help="simulated approvals: half the queries become accepted similar questions; measure the other half",
    )
    p.add_argument("--kb", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--analyzer", help="BM25 tokens (default: KEFU_ANALYZER or wcb)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")

    p = es.add_parser("norms", help="check replies (JSONL) against the service norms")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--dialogues",
        action="store_true",
        help="FILE holds conversations ({session_id, turns: [{role, text}]}): report each rule over the agent turns",
    )
    p.add_argument(
        "--examples", type=int, default=0, help="with --dialogues: show N flagged replies per rule"
    )

    p = es.add_parser(
        "intents", help="intent and routing accuracy on a labelled set (JSONL: text, intent, route)"
    )
    p.add_argument("file", nargs="?", help="labelled messages (default: eval/data/intents_zh.jsonl)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run_eval(args: argparse.Namespace) -> int:
    if args.eval_cmd == "norms":
        from eval.norms import cli_main, jddc_main

        if args.dialogues:
            return jddc_main(args.file, args.json, args.examples)
        return cli_main(args.file, args.json)
    if args.eval_cmd == "intents":
        from eval.intents import cli_main as intents_main

        return intents_main(args.file, args.json)
    if args.eval_cmd == "learning-curve":
        return _learning_curve(args)
    return _retrieval(args)


def _learning_curve(args: argparse.Namespace) -> int:
    from eval.retrieval import learning_curve
    from knowledge.tune_cmd import TuneOptions

    out = learning_curve(
        args.kb,
        args.queries,
        seed=args.seed,
        analyzer=args.analyzer or KnowledgeSettings().analyzer,
        tune_options=TuneOptions(seed=args.seed, show_progress=False),
        progress=lambda m: print(m, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
        return 0
    print(f"learned from {out['accepted']} accepted candidates; measured on {out['test']} other queries")
    print(f"{'stage':<34} recall@1 recall@5 recall@10  MRR@10")
    for stage, label in (
        ("before", "before (KB tuned alone)"),
        ("after_accept", "after accepting (indexed at once)"),
        ("after_tune", "after re-tuning"),
    ):
        m = out[stage]
        print(
            f"{label:<34} {m['recall@1']:.4f}   {m['recall@5']:.4f}   {m['recall@10']:.4f}    {m['mrr@10']:.4f}"
        )
    print(f"re-tuned model switched: {out['tune_after']['switched']}")
    return 0


def _retrieval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from eval.retrieval import evaluate
    from knowledge.tune_cmd import TuneOptions

    settings = KnowledgeSettings()
    config: RetrievalConfig = settings.retrieval
    explicit = set(settings.retrieval_explicit)
    if args.fusion:
        config = replace(config, fusion=args.fusion)
        explicit.add("fusion")
    if args.dense_weight is not None:
        config = replace(config, dense_weight=args.dense_weight)
        explicit.add("dense_weight")
    analyzer = args.analyzer or settings.analyzer
    report = evaluate(
        args.kb,
        args.queries,
        k=args.k,
        tune=not args.no_tune,
        model=args.model or settings.embedding_model or BUNDLED_MODEL,
        analyzer=analyzer,
        config=config,
        explicit=frozenset(explicit),
        tune_options=TuneOptions(seed=args.seed, epochs=args.epochs, show_progress=False),
        progress=lambda m: print(m, file=sys.stderr),
    )
    m = report.metrics
    if args.per_query:
        with args.per_query.open("w", encoding="utf-8") as f:
            for q in report.per_query:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")
    r = report.setup.get("retrieval", {})
    print(
        f"model: {report.setup.get('model')}   analyzer: {analyzer}   fusion: {r.get('fusion')} "
        f"(dense weight {r.get('dense_weight')}, second text {r.get('second_weight')})   thresholds: high {r.get('high')} medium {r.get('medium')}"
    )
    tuned = report.setup.get("tune")
    if tuned:
        print(
            f"tuned in {tuned['seconds']} s (training {tuned.get('train_seconds')} s); held-out: {tuned.get('new')}"
        )
    print(f"queries: {m['n_queries']}   snippets: {report.setup.get('snippets')}")
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10"):
        print(f"{key:<10} {m[key]:.4f}")
    print(f"latency p50 {m['latency_ms_p50']:.2f} ms   p95 {m['latency_ms_p95']:.2f} ms")
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}))
    return 0

"""``kefu eval ...``: evaluators."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowledge.errors import KefuError
from knowledge.retriever import RetrievalConfig
from knowledge.settings import KnowledgeSettings

if TYPE_CHECKING:
    from eval.retrieval import RetrievalReport


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate retrieval, norms and drafts (评估)")
    es = ev.add_subparsers(dest="eval_cmd", required=True, metavar="COMMAND")
    p = es.add_parser("retrieval", help="recall@k, MRR@10 and latency of retrieval on a KB and queries")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kb", type=Path, help="a KB file, loaded (and tuned) into a temporary store")
    src.add_argument(
        "--deployment",
        action="store_true",
        help="the configured deployment as it serves: KEFU_DATABASE_URL's KB, its active model and "
        "saved index (KEFU_INDEX_DIR), nothing imported or tuned",
    )
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
        "--model",
        default="",
        help="embedding model for --no-tune (default: KEFU_EMBEDDING_MODEL, else the KB default: "
        "KEFU_ENCODER, e5)",
    )
    _add_vector_cache(p)
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
    _add_vector_cache(p)
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")

    p = es.add_parser(
        "gaps",
        help="group a queries file's questions as knowledge gaps; pairwise precision/recall/F1 against "
        "their expected snippets",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kb", type=Path, help="a KB file, loaded (and tuned) into a temporary store")
    src.add_argument(
        "--deployment", action="store_true", help="the configured deployment's KB, model and index"
    )
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--no-tune", action="store_true", help="with --kb: do not run kefu kb tune first")
    p.add_argument("--threshold", type=float, help="average similarity from which groups merge")
    p.add_argument(
        "--without-expected",
        action="store_true",
        help="with --kb: remove the snippets the queries expect first (every question a real gap)",
    )
    p.add_argument("--seed", type=int, default=0)
    _add_vector_cache(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

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
    p.add_argument(
        "--jddc",
        choices=("test", "tune"),
        help="measure a half of the labelled real JD.com messages (FILE: their labels, default "
        "eval/data/intents_jddc.jsonl; the text is read from ../shared/data)",
    )
    p.add_argument("--dialogues", help="with --jddc: the dialogues (default ../shared/data/jddc-sample)")
    p.add_argument(
        "--rules-only", action="store_true", help="without the semantic classifier (rules and examples only)"
    )

    add_drafts_parser(es)
    add_transcripts_parser(es)


def _add_vector_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vector-cache",
        type=Path,
        default=Path("var/eval/vectors.db"),
        help="database file keeping the general encoder's vectors between runs (default %(default)s)",
    )
    p.add_argument("--no-vector-cache", action="store_true", help="encode every text again")


def run_eval(args: argparse.Namespace) -> int:
    if args.eval_cmd == "norms":
        from eval.norms import cli_main, jddc_main

        if args.dialogues:
            return jddc_main(args.file, args.json, args.examples)
        return cli_main(args.file, args.json)
    if args.eval_cmd == "intents":
        from eval.intents import cli_main as intents_main

        return intents_main(
            args.file, args.json, jddc=args.jddc, dialogues=args.dialogues, rules_only=args.rules_only
        )
    if args.eval_cmd == "drafts":
        return run_drafts(args)
    if args.eval_cmd == "transcripts":
        return run_transcripts(args)
    if args.eval_cmd == "learning-curve":
        return _learning_curve(args)
    if args.eval_cmd == "gaps":
        return _gaps(args)
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
        vector_cache=None if args.no_vector_cache else _cache_file(args.vector_cache),
    )
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
        return 0
    print(
        f"learned from {out['accepted']} accepted candidates; measured on {out['test']} other queries "
        f"({out['test_seen']} whose snippet received candidates, {out['test_unseen']} whose did not)"
    )
    print(f"{'stage':<34} recall@1 recall@5 recall@10  MRR@10   recall@5 seen / unseen")
    for stage, label in (
        ("before", "before (KB tuned alone)"),
        ("after_accept", "after accepting (indexed at once)"),
        ("after_tune", "after re-tuning"),
    ):
        m = out[stage]
        split = m["split"]
        print(
            f"{label:<34} {m['recall@1']:.4f}   {m['recall@5']:.4f}   {m['recall@10']:.4f}    {m['mrr@10']:.4f}"
            f"   {split['seen']['recall@5']:.4f} / {split['unseen']['recall@5']:.4f}"
        )
    print(f"the re-tune's own held-out comparison would switch to the re-tuned model: {out['would_switch']}")
    return 0


def _gaps(args: argparse.Namespace) -> int:
    from eval.gaps import evaluate_gaps

    out = evaluate_gaps(
        args.queries,
        kb_path=args.kb,
        tune=not args.no_tune,
        threshold=args.threshold,
        seed=args.seed,
        progress=lambda m: print(m, file=sys.stderr),
        vector_cache=None if args.no_vector_cache or not args.kb else _cache_file(args.vector_cache),
        without_expected=args.without_expected,
    )
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"similarity: {out['similarity']}")
    print(
        f"{out['questions']} questions ({out['true_pairs']} pairs with the same snippet) -> {out['groups']} groups"
        f" in {out['seconds']:.1f} s"
    )
    for name, part in (("all", out), ("tuning half", out["tune"]), ("test half", out["test"])):
        print(
            f"{name:>12}: pairwise precision {part['precision']:.4f}   recall {part['recall']:.4f}"
            f"   F1 {part['f1']:.4f}"
        )
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
    if args.deployment:
        from eval.retrieval import evaluate_deployment

        report = evaluate_deployment(args.queries, k=args.k, progress=lambda m: print(m, file=sys.stderr))
        return _print_retrieval(args, report, report.setup.get("analyzer", analyzer))
    report = evaluate(
        args.kb,
        args.queries,
        k=args.k,
        tune=not args.no_tune,
        model=args.model or settings.embedding_model,
        analyzer=analyzer,
        config=config,
        explicit=frozenset(explicit),
        tune_options=TuneOptions(seed=args.seed, epochs=args.epochs, show_progress=False),
        progress=lambda m: print(m, file=sys.stderr),
        vector_cache=None if args.no_vector_cache else _cache_file(args.vector_cache),
    )
    return _print_retrieval(args, report, analyzer)


def _cache_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _print_retrieval(args: argparse.Namespace, report: RetrievalReport, analyzer: str) -> int:
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


# -- kefu eval drafts / transcripts (eval/drafts.py, eval/transcripts.py, eval/report.py) -------------


def add_drafts_parser(es: argparse._SubParsersAction) -> None:
    p = es.add_parser(
        "drafts",
        help="run cases through the suggestion pipeline and score the drafts (norms, grounding, intents, ...)",
        description="Score the service's drafts: every case goes through the suggestion pipeline as the API "
        "runs it, against a temporary store holding the KB. Writes report.json, report.md and report.html.",
    )
    p.add_argument(
        "--dataset",
        type=Path,
        help="cases JSONL, or conversations JSONL (one case per customer turn); default: eval/data/drafts_cases.jsonl",
    )
    p.add_argument("--kb", type=Path, help="knowledge base file (JSONL, CSV, XLSX, MD); default: the demo KB")
    p.add_argument("--drafter", choices=("template", "llm"), default="template")
    p.add_argument("--report", type=Path, required=True, metavar="DIR", help="directory for the report files")
    p.add_argument("--baseline", type=Path, metavar="OLD.json", help="an older report.json to compare with")
    p.add_argument(
        "--fail-under",
        nargs="+",
        default=[],
        metavar="METRIC=VALUE",
        help="exit 1 when a metric is below its bar, e.g. error_rule_pass=1 groundedness=1 intent_accuracy=0.9",
    )
    p.add_argument(
        "--at", help="the service clock, ISO 8601 (default: a working-day morning, 2026-11-26T10:00+08:00)"
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N cases")
    p.add_argument(
        "--judge-model", help="LLM judge model (or KEFU_JUDGE_MODEL); off unless a model and URL are set"
    )
    p.add_argument("--judge-base-url", help="LLM judge endpoint, OpenAI-compatible (or KEFU_JUDGE_BASE_URL)")


def add_transcripts_parser(es: argparse._SubParsersAction) -> None:
    p = es.add_parser(
        "transcripts",
        help="quality inspection (质检) of real conversations: rule violation rates, response times, worst cases",
        description="FILE is JSONL: {session_id, agent_id?, turns: [{role: user|agent, text, at?, agent_id?}]}.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--report", type=Path, required=True, metavar="DIR", help="directory for the report files")
    p.add_argument("--baseline", type=Path, metavar="OLD.json", help="an older report.json to compare with")
    p.add_argument("--fail-under", nargs="+", default=[], metavar="METRIC=VALUE")
    p.add_argument(
        "--worst", type=int, default=20, help="how many of the worst conversations to show (default 20)"
    )


def _problems(e: Exception) -> int:
    from eval.drafts import DatasetProblems

    if isinstance(e, DatasetProblems):
        for prob in e.problems[:50]:
            print(prob, file=sys.stderr)
        if len(e.problems) > 50:
            print(f"... {len(e.problems) - 50} more", file=sys.stderr)
        print(f"错误 error: {e}", file=sys.stderr)
    else:
        print(f"错误 error: {e}", file=sys.stderr)
    return 2


def _progress(desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(desc=desc, unit=unit, file=sys.stderr, disable=None)


def _finish(report: dict[str, Any], args: argparse.Namespace, bars: list[tuple[str, float]]) -> int:
    from eval import report as rep

    if args.baseline:
        rep.compare(report, rep.load_baseline(args.baseline), str(args.baseline))
    try:
        failures = rep.check_bars(report, bars)
    except ValueError as e:
        print(f"错误 error: {e}", file=sys.stderr)
        return 2
    report["fail_under"] = {"bars": dict(bars), "failures": failures}
    paths = rep.write(report, args.report)
    width = max(len(n) for n in report["metrics"]) if report["metrics"] else 10
    for name, m in report["metrics"].items():
        delta = rep.fmt_delta(m, name)
        print(f"{name:<{width}}  {rep.fmt(m['value'], name):>8}  {delta:>8}  {m.get('reason', '')}")
    print(f"failing cases: {len(report['failing'])}")
    print("report: " + ", ".join(str(p) for p in paths))
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


def _norms() -> Any:
    from prompts import load_norms
    from suggest.settings import NormsSettings

    return load_norms(NormsSettings().norms)


def _check_bar_names(bars: list[tuple[str, float]], known: list[str]) -> None:
    """Unknown metric names fail before any work is done."""
    unknown = [n for n, _ in bars if n not in known]
    if unknown:
        raise ValueError(
            f"未知指标：{', '.join(unknown)}；可用：{', '.join(known)} / "
            f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(known)}"
        )


def run_drafts(args: argparse.Namespace) -> int:
    from eval import drafts
    from eval import report as rep
    from eval.judge import Judge, JudgeSettings

    try:
        bars = rep.parse_bars(args.fail_under)
        if args.baseline:
            rep.load_baseline(args.baseline)  # a bad baseline fails before the long run
        at = drafts.parse_at(args.at) if args.at else None
        dataset = args.dataset or drafts.BUNDLED_CASES
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit 应为正整数 / --limit must be a positive number")
        cases, fmt = drafts.read_dataset(dataset, limit=args.limit)
        judge_settings = JudgeSettings.from_env(args.judge_base_url, args.judge_model)
        _check_bar_names(bars, [m.name for m in drafts.draft_metrics(_norms(), judge=judge_settings.enabled)])
        say = lambda m: print(m, file=sys.stderr)  # noqa: E731
        say(f"{len(cases)} cases from {dataset} ({fmt})")
        with drafts.environment(args.kb, drafter=args.drafter, at=at, progress=say) as env:
            with _progress("drafts", "case") as bar:
                bar.total = len(cases)
                outcomes = drafts.run_cases(env, cases, progress=lambda _i, _n: bar.update(1))
            judged = judge_settings.enabled
            if judged:
                judge = Judge(judge_settings, env.norms)
                with _progress("judge", "case") as bar:
                    bar.total = len(outcomes)
                    drafts.judge_outcomes(outcomes, judge, env, progress=lambda _i, _n: bar.update(1))
            runs = drafts.score_outcomes(outcomes, env.norms, judge=judged)
            setup = {**env.setup, "judge": judge_settings.model if judged else None}
            report = drafts.build_report(outcomes, runs, setup, env.norms, str(dataset))
    except (ValueError, KefuError) as e:
        return _problems(e)
    try:
        return _finish(report, args, bars)
    except ValueError as e:
        return _problems(e)


def run_transcripts(args: argparse.Namespace) -> int:
    from eval import report as rep
    from eval import transcripts
    from prompts import load_norms
    from suggest.settings import NormsSettings

    try:
        bars = rep.parse_bars(args.fail_under)
        if args.baseline:
            rep.load_baseline(args.baseline)
        norms = load_norms(NormsSettings().norms)
        _check_bar_names(
            bars,
            [m.name for m in transcripts.reply_metrics(norms)]
            + [m.name for m in transcripts.conversation_metrics()],
        )
        convs = transcripts.read_conversations(args.file)
        print(f"{len(convs)} conversations from {args.file}", file=sys.stderr)
        ins = transcripts.run_inspection(convs, norms, worst=args.worst)
        report = transcripts.build_report(ins, norms, str(args.file))
        return _finish(report, args, bars)
    except (ValueError, KefuError) as e:
        return _problems(e)

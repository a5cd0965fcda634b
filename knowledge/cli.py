"""``kefu kb ...``: the content staff's command line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from knowledge.errors import ConflictError, KefuError, ValidationError
from knowledge.io import FORMATS, read_snippets, snippet_from_dict, write_snippets
from knowledge.model import CONTENT_FIELDS, KINDS, STATUSES, Snippet, SnippetFilter
from knowledge.service import ACTIVE_MODEL_KEY, TERMS_KEY, KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store


def default_actor() -> str:
    return os.environ.get("KEFU_ACTOR") or os.environ.get("USER") or "cli"


def demo_kb_path() -> Path:
    return Path(str(resources.files("knowledge") / "data" / "demo_kb.jsonl"))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="snippet", file=sys.stderr, disable=None)


def add_kb_parser(sub: argparse._SubParsersAction) -> None:
    kb = sub.add_parser("kb", help="knowledge base: import, edit, search, tune (知识库管理)")
    ks = kb.add_subparsers(dest="kb_cmd", required=True, metavar="COMMAND")

    p = ks.add_parser("import", help="import a JSONL, CSV, XLSX or Markdown file (one transaction)")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--actor", default=default_actor())
    p.add_argument(
        "--no-index", action="store_true", help="only write the database; the server indexes later"
    )

    p = ks.add_parser("export", help="export the knowledge base to a file (format from the extension)")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--status", choices=STATUSES)

    p = ks.add_parser("list", help="list snippets")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--product")
    p.add_argument("--tag")
    p.add_argument("--query", "-q", help="substring of id, question or answer")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")

    p = ks.add_parser("show", help="show one snippet")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = ks.add_parser("add", help="add a snippet (from flags or --file with one JSON object)")
    p.add_argument("--file", type=Path, help="a JSON file with the snippet (JSONL format fields)")
    p.add_argument("--id")
    p.add_argument("--kind", choices=KINDS, default="faq")
    p.add_argument("--question")
    p.add_argument("--answer", default="")
    p.add_argument("--similar", action="append", default=[], help="a similar question (repeatable)")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.add_argument("--product")
    p.add_argument("--status", choices=STATUSES, default="draft")
    p.add_argument("--valid-from")
    p.add_argument("--valid-to")
    p.add_argument("--actor", default=default_actor())

    p = ks.add_parser("edit", help="edit a snippet: --set FIELD=VALUE, --add-similar, or in $EDITOR")
    p.add_argument("id")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets")
    p.add_argument("--add-similar", action="append", default=[])
    p.add_argument("--version", type=int, help="the version you read (refused if it changed since)")
    p.add_argument("--actor", default=default_actor())

    for name, hlp in (("publish", "publish a snippet"), ("archive", "archive a snippet")):
        p = ks.add_parser(name, help=hlp)
        p.add_argument("id")
        p.add_argument("--version", type=int)
        p.add_argument("--actor", default=default_actor())

    p = ks.add_parser("rm", help="delete a snippet (its history stays)")
    p.add_argument("id")
    p.add_argument("--version", type=int)
    p.add_argument("--actor", default=default_actor())

    p = ks.add_parser("history", help="revisions of a snippet: who, when, what")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = ks.add_parser("reindex", help="rebuild the search indexes from the database")
    p.add_argument("--full", action="store_true", help="ignore the saved index and rebuild everything")

    p = ks.add_parser("search", help="hit testing: what a query retrieves, with scores and confidence")
    p.add_argument("text")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--kind", action="append", choices=KINDS, default=[])
    p.add_argument("--product", action="append", default=[])
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--any-status", action="store_true", help="also drafts and archived snippets")
    p.add_argument("--json", action="store_true")

    ks.add_parser("stats", help="counts by kind and status, index and model")

    p = ks.add_parser("terms", help="words the segmenter keeps whole (product names are added automatically)")
    p.add_argument("--add", nargs="+", default=[])
    p.add_argument("--rm", nargs="+", default=[])

    p = ks.add_parser("tune", help="train a KB-specific embedding model and switch to it if it is better")
    p.add_argument("--force", action="store_true", help="switch even if it is not better")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="training epochs (default: chosen by measurement)")
    p.add_argument("--held-out", type=float, default=0.1, help="share of pairs kept back to compare models")
    p.add_argument("--pairs", type=Path, help='extra training pairs: JSONL {"anchor": ..., "positive": ...}')
    p.add_argument("--rollback", action="store_true", help="switch back to the previous model")
    p.add_argument("--list", action="store_true", help="list the stored models (* active, < previous)")

    p = ks.add_parser("candidates", help="candidate similar questions from approved replies: review them")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--accept", type=int, metavar="ID", help="add it to its snippet's similar questions")
    g.add_argument("--reject", type=int, metavar="ID")
    p.add_argument("--reason", help="why (kept with the decision)")
    p.add_argument("--status", choices=("pending", "accepted", "rejected"), default="pending")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--actor", default=default_actor())

    p = ks.add_parser("gaps", help="knowledge gaps: escalated and low-confidence questions, grouped")
    p.add_argument("--days", type=float, default=30, help="questions of the last N days")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = ks.add_parser("bootstrap", help="first start: migrate, import the demo KB if empty, tune, index")
    p.add_argument("--kb", type=Path, help="the file to import when the KB is empty (default: demo KB)")


def run_kb(args: argparse.Namespace) -> int:
    settings = KnowledgeSettings()
    cmd = args.kb_cmd
    if cmd in ("export", "list", "show", "history", "stats", "terms"):
        store = Store(settings.database_url)
        try:
            return _READERS[cmd](store, args)
        finally:
            store.close()
    if cmd == "import":
        return _import(settings, args)
    if cmd == "tune":
        return _tune(settings, args)
    if cmd == "candidates":
        return _candidates(settings, args)
    if cmd == "gaps":
        return _gaps(settings, args)
    if cmd == "bootstrap":
        return _bootstrap(settings, args.kb)
    kb = KnowledgeBase(settings)
    try:
        return _WRITERS[cmd](kb, args)
    finally:
        kb.close()


# -- readers ----------------------------------------------------------------------------------------


def _export(store: Store, args: argparse.Namespace) -> int:
    items = store.list_snippets(status=args.status)
    n = write_snippets(items, args.path, args.format)
    print(f"已导出 {n} 条 / exported {n} snippets -> {args.path}")
    return 0


def _list(store: Store, args: argparse.Namespace) -> int:
    items = store.list_snippets(
        kind=args.kind,
        status=args.status,
        product=args.product,
        tag=args.tag,
        query=args.query,
        limit=args.limit,
    )
    if args.json:
        _print_json([s.to_dict() for s in items])
        return 0
    for s in items:
        print(f"{s.id:<32} {s.kind:<10} {s.status:<9} v{s.version:<3} {s.question[:40]}")
    print(f"({len(items)})")
    return 0


def _format_snippet(s: Snippet) -> str:
    lines = [
        f"{s.id}  [{s.kind}, {s.status}, v{s.version}]",
        f"问题 question: {s.question}",
    ]
    if s.similar_questions:
        lines.append("相似问法 similar:")
        lines += [f"  - {q}" for q in s.similar_questions]
    lines.append(f"答案 answer: {s.answer}")
    if s.tags:
        lines.append(f"标签 tags: {', '.join(s.tags)}")
    if s.product:
        lines.append(f"产品 product: {s.product}")
    if s.valid_from or s.valid_to:
        lines.append(f"有效期 valid: {s.valid_from or '...'} ~ {s.valid_to or '...'}")
    lines.append(f"更新 updated: {s.updated_at:%Y-%m-%d %H:%M} UTC by {s.updated_by}" if s.updated_at else "")
    return "\n".join(line for line in lines if line)


def _show(store: Store, args: argparse.Namespace) -> int:
    s = store.get(args.id)
    if args.json:
        _print_json(s.to_dict())
    else:
        print(_format_snippet(s))
    return 0


def _history(store: Store, args: argparse.Namespace) -> int:
    revs = store.history(args.id)
    if args.json:
        _print_json([r.__dict__ for r in revs])
        return 0
    for r in revs:
        print(
            f"v{r.version:<3} {r.at:%Y-%m-%d %H:%M:%S} UTC  {r.action:<7} by {r.actor}  (KB revision {r.kb_revision})"
        )
        for fld, (old, new) in r.changes.items():
            if r.action in ("create", "import") and old is None:
                print(f"    {fld}: {json.dumps(new, ensure_ascii=False)}")
            else:
                print(
                    f"    {fld}: {json.dumps(old, ensure_ascii=False)} -> {json.dumps(new, ensure_ascii=False)}"
                )
    return 0


def _stats(store: Store, _args: argparse.Namespace) -> int:
    items = store.all()
    by: dict[str, dict[str, int]] = {}
    for s in items:
        by.setdefault(s.kind, {}).setdefault(s.status, 0)
        by[s.kind][s.status] += 1
    today = date.today()
    faqs = [s for s in items if s.kind == "faq"]
    out = {
        "snippets": len(items),
        "by_kind_and_status": by,
        "texts_indexed": sum(len(s.texts()) for s in items),
        "faq_with_3_similar": sum(1 for s in faqs if len(s.similar_questions) >= 3),
        "faq_total": len(faqs),
        "without_answer": sum(1 for s in items if not s.answer.strip()),
        "expired": sum(1 for s in items if s.valid_to and s.valid_to < today),
        "not_yet_valid": sum(1 for s in items if s.valid_from and s.valid_from > today),
        "kb_revision": store.revision(),
        "tuned_model": store.get_meta(ACTIVE_MODEL_KEY),
        "terms": json.loads(store.get_meta(TERMS_KEY) or "[]"),
    }
    _print_json(out)
    return 0


def _terms(store: Store, args: argparse.Namespace) -> int:
    terms = set(json.loads(store.get_meta(TERMS_KEY) or "[]"))
    terms |= {t.strip() for t in args.add if t.strip()}
    terms -= set(args.rm)
    if args.add or args.rm:
        store.set_meta(TERMS_KEY, json.dumps(sorted(terms), ensure_ascii=False))
        print(
            "已更新；下次启动或 kefu kb reindex 时生效 / updated; takes effect at the next start or reindex"
        )
    for t in sorted(terms):
        print(t)
    return 0


_READERS = {
    "export": _export,
    "list": _list,
    "show": _show,
    "history": _history,
    "stats": _stats,
    "terms": _terms,
}

# -- writers ----------------------------------------------------------------------------------------


def _import(settings: KnowledgeSettings, args: argparse.Namespace) -> int:
    items = read_snippets(args.path, args.format)
    kb = KnowledgeBase(settings)
    try:
        bar = _progress(len(items), "导入 import")
        report = kb.store.import_snippets(items, actor=args.actor, progress=bar.update)
        bar.close()
        print(
            f"已导入 {args.path}: 新增 {len(report.created)}，更新 {len(report.updated)}，未变 {len(report.unchanged)} / "
            f"imported: {len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged (KB revision {report.kb_revision})"
        )
        if not args.no_index:
            print(kb.open_index(progress=True, log_fn=lambda _m: None))
    finally:
        kb.close()
    return 0


def _snippet_from_args(args: argparse.Namespace) -> Snippet:
    if args.file:
        try:
            obj = json.loads(Path(args.file).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValidationError(
                f"无法读取 {args.file}：{e}；请给出一个 UTF-8 编码的 JSON 对象文件",
                f"cannot read {args.file}: {e}; give a UTF-8 file with one JSON object",
            ) from e
        if not isinstance(obj, dict):
            raise ValidationError("文件内容必须是一个 JSON 对象", "the file must hold one JSON object")
        return snippet_from_dict(obj, source=str(args.file), location="object", default_status="draft")
    if not args.id or not args.question:
        raise ValidationError(
            "请给出 --id 和 --question（或 --file）", "give --id and --question (or --file)"
        )
    return Snippet(
        id=args.id,
        kind=args.kind,
        question=args.question,
        answer=args.answer,
        similar_questions=tuple(args.similar),
        tags=tuple(args.tags),
        product=args.product,
        status=args.status,
        valid_from=date.fromisoformat(args.valid_from) if args.valid_from else None,
        valid_to=date.fromisoformat(args.valid_to) if args.valid_to else None,
    )


def _add(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    s = kb.store.add(_snippet_from_args(args), actor=args.actor)
    _reindex_quietly(kb)
    print(f"已添加 / added {s.id} (v{s.version}, {s.status})")
    return 0


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in CONTENT_FIELDS:
            raise ValidationError(
                f"--set 需要 字段=值，字段是 {', '.join(CONTENT_FIELDS)} 之一：{item!r}",
                f"--set needs FIELD=VALUE with FIELD one of {', '.join(CONTENT_FIELDS)}: {item!r}",
            )
        if key in ("similar_questions", "tags"):
            changes[key] = [x.strip() for x in value.split("|") if x.strip()]
        elif key in ("product", "valid_from", "valid_to"):
            changes[key] = value or None
        else:
            changes[key] = value
    return changes


def _edit(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    current = kb.store.get(args.id)
    version = args.version if args.version is not None else current.version
    changes = _parse_sets(args.sets)
    if args.add_similar:
        base = changes.get("similar_questions", list(current.similar_questions))
        changes["similar_questions"] = base + [q for q in args.add_similar if q not in base]
    if not changes:
        changes = _edit_in_editor(current)
        if not changes:
            print("没有修改 / nothing changed")
            return 0
    try:
        s = kb.store.update(args.id, changes, expected_version=version, actor=args.actor)
    except ConflictError:
        saved = _save_rejected_edit(args.id, changes)
        print(
            f"你的修改已保存在 {saved}，重新读取后可以再应用 / your change is saved in {saved}",
            file=sys.stderr,
        )
        raise
    _reindex_quietly(kb)
    print(f"已保存 / saved {s.id} v{s.version}")
    return 0


def _save_rejected_edit(snippet_id: str, changes: dict[str, Any]) -> Path:
    folder = Path("var/rejected-edits")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{snippet_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(changes, ensure_ascii=False, indent=2, default=str), "utf-8")
    return path


def _edit_in_editor(current: Snippet) -> dict[str, Any]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor or not sys.stdin.isatty():
        raise ValidationError(
            "请用 --set 字段=值 修改，或设置 EDITOR 后在终端里运行",
            "use --set FIELD=VALUE, or set EDITOR and run it in a terminal",
        )
    content = {k: v for k, v in current.content().items() if k != "id"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(content, f, ensure_ascii=False, indent=2)
        path = f.name
    subprocess.call([*editor.split(), path])
    edited = json.loads(Path(path).read_text("utf-8"))
    return {k: v for k, v in edited.items() if k in CONTENT_FIELDS and v != content.get(k)}


def _set_status(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    status = "published" if args.kb_cmd == "publish" else "archived"
    current = kb.store.get(args.id)
    version = args.version if args.version is not None else current.version
    s = kb.store.set_status(args.id, status, expected_version=version, actor=args.actor)
    _reindex_quietly(kb)
    print(f"{s.id}: {status} (v{s.version})")
    return 0


def _rm(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    current = kb.store.get(args.id)
    version = args.version if args.version is not None else current.version
    kb.store.delete(args.id, expected_version=version, actor=args.actor)
    _reindex_quietly(kb)
    print(f"已删除 / deleted {args.id} (历史保留 / history kept: kefu kb history {args.id})")
    return 0


def _reindex_quietly(kb: KnowledgeBase) -> None:
    """Bring the saved index up to date so the next start of the service loads it as it is."""
    kb.open_index(log_fn=lambda _m: None)


def _reindex(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.full:
        kb.index.build(kb.store, progress=True)
        kb.save_index()
        how = f"rebuilt {len(kb.index.texts)} texts ({kb.index.embedded_last} newly embedded)"
    else:
        how = kb.open_index(progress=True, log_fn=lambda _m: None)
    print(f"{how}; model {kb.embedder.model_id}; {time.perf_counter() - started:.1f}s")
    return 0


def _search(kb: KnowledgeBase, args: argparse.Namespace) -> int:
    kb.open_index(log_fn=lambda _m: None)
    flt = SnippetFilter.hit_testing(
        kinds=args.kind, products=args.product, tags=args.tag, any_status=args.any_status
    )
    res = kb.retriever.search(args.text, k=args.k, flt=flt)
    if args.json:
        _print_json(res.to_dict())
        return 0
    print(f"查询 query: {args.text}   置信度 confidence: {res.confidence}   ({res.latency_ms:.1f} ms)")
    if not res.hits:
        print("没有命中 / no hits")
    for i, h in enumerate(res.hits, 1):
        dense = "-" if h.dense is None else f"{h.dense:.3f}"
        print(
            f"{i}. {h.snippet_id}  [{h.confidence} {h.confidence_score:.2f}]  score {h.score:.3f}  bm25 {h.bm25:.2f}  dense {dense}"
        )
        print(f"   命中 matched ({h.matched_field}): {h.matched_text}")
        print(f"   问题 question: {h.snippet.question}")
    return 0


_WRITERS = {
    "add": _add,
    "edit": _edit,
    "publish": _set_status,
    "archive": _set_status,
    "rm": _rm,
    "reindex": _reindex,
    "search": _search,
}


def _bootstrap(settings: KnowledgeSettings, kb_file: Path | None) -> int:
    store = Store(settings.database_url)
    try:
        if store.count() == 0:
            path = kb_file or demo_kb_path()
            items = read_snippets(path)
            report = store.import_snippets(items, actor="bootstrap")
            print(f"导入示例知识库 / imported {path.name}: {len(report.created)} snippets")
        tuned = store.get_meta(ACTIVE_MODEL_KEY)
    finally:
        store.close()
    missing = tuned and not tuned.startswith("db:") and not Path(tuned).is_dir()
    if not settings.embedding_model and (not tuned or missing):
        from knowledge.tune_cmd import TuneOptions, run_tune

        tuned_report = run_tune(settings, TuneOptions(force=True))
        new = tuned_report.get("new") or {}
        if tuned_report.get("note") and not tuned_report.get("switched"):
            print(f"知识库模型 / KB model: {tuned_report['note']}")
        else:
            print(
                f"已训练知识库模型 / tuned the KB model {tuned_report.get('switched_to')} in {tuned_report['seconds']} s "
                f"(held-out recall@5 {new.get('recall@5', '-')}, MRR@10 {new.get('mrr@10', '-')})"
            )
    kb = KnowledgeBase(settings)
    try:
        print(kb.open_index(progress=True, log_fn=lambda _m: None))
    finally:
        kb.close()
    return 0


def _tune(settings: KnowledgeSettings, args: argparse.Namespace) -> int:
    from knowledge.tune_cmd import TuneOptions, list_models, rollback, tune

    if args.rollback:
        return rollback(settings)
    if args.list:
        return list_models(settings)
    if not 0 <= args.held_out < 0.9:
        raise ValidationError("--held-out 必须在 0 到 0.9 之间", "--held-out must be between 0 and 0.9")
    if args.epochs is not None and not 1 <= args.epochs <= 1000:
        raise ValidationError("--epochs 必须在 1 到 1000 之间", "--epochs must be between 1 and 1000")
    opts = TuneOptions(
        seed=args.seed, epochs=args.epochs, held_out=args.held_out, force=args.force, pairs_file=args.pairs
    )
    return tune(settings, opts)


def _candidates(settings: KnowledgeSettings, args: argparse.Namespace) -> int:
    from knowledge.candidates import Candidates

    kb = KnowledgeBase(settings) if (args.accept or args.reject) else None
    store = kb.store if kb is not None else Store(settings.database_url)
    try:
        cands = Candidates(store)
        if args.accept or args.reject:
            if args.accept:
                c = cands.accept(args.accept, actor=args.actor, reason=args.reason)
                assert kb is not None
                _reindex_quietly(kb)
                print(f"已采纳 / accepted {c.id}: 「{c.text}」 -> {c.snippet_id}")
            else:
                c = cands.reject(args.reject, actor=args.actor, reason=args.reason)
                print(f"已拒绝 / rejected {c.id}: 「{c.text}」")
            return 0
        items, total = cands.list(args.status, limit=args.limit)
        if args.json:
            _print_json({"items": [c.to_dict() for c in items], "total": total})
            return 0
        for c in items:
            print(f"{c.id:>5}  {c.created_at:%Y-%m-%d %H:%M}  {c.snippet_id:<28} 「{c.text}」")
            print(f"       问题 question: {c.snippet_question or '(已删除 / deleted)'}")
        print(f"({len(items)} / {total} {args.status})")
        if args.status == "pending" and items:
            print("kefu kb candidates --accept ID | --reject ID [--reason ...]")
    finally:
        (kb.close() if kb is not None else store.close())
    return 0


def _gaps(settings: KnowledgeSettings, args: argparse.Namespace) -> int:
    from knowledge.gaps import find_gaps, meaning_embedder

    kb = KnowledgeBase(settings)
    try:
        kb.open_index()  # where the questions land in the KB groups them (knowledge/gaps.py)
        embedder = meaning_embedder(kb.embedder)
        gaps = find_gaps(kb.store, kb.analyzer, embedder, days=args.days, limit=args.limit, index=kb.index)
        if args.json:
            _print_json({"items": [g.to_dict() for g in gaps]})
            return 0
        if not gaps:
            print(f"最近 {args.days:g} 天没有知识缺口 / no gaps in the last {args.days:g} days")
        for g in gaps:
            d = g.to_dict()
            reasons = ", ".join(f"{k} {v}" for k, v in d["reasons"].items() if v)
            print(f"{d['count']:>4}x  {g.id:<12} 「{g.label}」  ({reasons}; last {d['last_seen'][:16]})")
            for ex in g.example_texts(4):
                if ex != g.label:
                    print(f"         - {ex}")
        if gaps:
            print("POST /v1/knowledge/gaps/{id}/snippet turns a gap into a snippet (kefu kb add works too)")
    finally:
        kb.close()
    return 0


def handle_error(e: KefuError) -> int:
    print(f"错误 error [{e.code}]: {e}", file=sys.stderr)
    return 2 if isinstance(e, ValidationError) or e.code in ("import_failed",) else 1

"""Draft evaluation: customer messages in, the service's drafts scored against the norms and the KB.

``kefu eval drafts --dataset CASES.jsonl`` runs every case through ``SuggestionPipeline`` built the
way ``suggest.app.create_app`` builds it (same norms, intents, guard, drafter, workflow), against a
temporary SQLite store holding the KB file (the demo KB by default) with a KB embedding model tuned
as ``kefu kb bootstrap`` tunes it. The service clock is fixed (``--at``, by default a working-day
morning) so working hours and promotion dates, and so the drafts, do not depend on when it runs.

A case, one JSON object a line::

    {"id": "returns-1", "history": [{"role": "customer"|"agent"|"user", "text": "...", "at"?: "..."}],
     "customer_message": "...", "customer_waited_s"?: 90, "expected_ids"?: ["faq-returns-7d"],
     "expected_intent"?: "after_sales", "must_escalate"?: false, "reference_reply"?: "..."}

A file of conversations (``{"session_id", "turns": [...]}``, the transcript format) is read as one
case per customer turn, with the turns before it as history and the agent's next reply as reference.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eval.metrics import (
    NAN,
    FunctionMetric,
    Metric,
    MetricRun,
    Score,
    histogram,
    mean_of,
    na,
    percentile,
    ratio,
    run_metrics,
    sum_details,
)
from eval.passes import FOLLOW_UP_AFTER_S, PASSES, PassDraft, PassResult, openings_once, out_of_hours_at
from eval.similarity import char_f1, rouge_l
from knowledge.errors import KefuError, Problem
from prompts import CheckContext, Norms, Violation
from prompts.intents import INTENTS
from prompts.templates import LLM_TEMPLATES
from suggest.guard import Guard

#: A Thursday morning in working hours (Asia/Shanghai) while the demo KB's 双12 promotion runs.
DEFAULT_AT = "2026-11-26T10:00:00+08:00"
DEMO_KB = Path(__file__).resolve().parents[1] / "knowledge" / "data" / "demo_kb.jsonl"
BUNDLED_CASES = Path(__file__).resolve().parent / "data" / "drafts_cases.jsonl"
#: History turns of a case kept in report.json (the last ones).
HISTORY_KEPT = 6
#: Plans whose drafts come from the norms' templates alone and cite no snippet.
UNCITED_KINDS = ("complaint", "suggestion", "customer_info", "greeting", "closing")
LATENCY_EDGES_MS = (0, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
CASE_KEYS = frozenset(
    {
        "id",
        "history",
        "customer_message",
        "customer_waited_s",
        "expected_ids",
        "expected_intent",
        "must_escalate",
        "reference_reply",
        "note",
    }
)


class DatasetProblems(KefuError):
    """The dataset has bad lines; nothing was evaluated."""

    code = "bad_dataset"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(
            f"数据集有 {len(problems)} 处错误，未做任何评估",
            f"the dataset has {len(problems)} problem(s); nothing was evaluated",
        )


@dataclass(frozen=True)
class HistoryTurn:
    role: str  # customer or agent
    text: str
    at: str | None = None


@dataclass(frozen=True)
class DraftCase:
    id: str
    customer_message: str
    history: tuple[HistoryTurn, ...] = ()
    customer_waited_s: float | None = None
    expected_ids: tuple[str, ...] | None = None
    expected_intent: str | None = None
    must_escalate: bool | None = None
    reference_reply: str | None = None
    line: int = 0
    source: str = ""  # where a case from a transcript came from (session and turn)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [asdict(t) for t in self.history]
        return d


# -- reading -----------------------------------------------------------------------------------------


def _bad(name: str, line: int, field_: str | None, zh: str, en: str) -> Problem:
    return Problem(name, f"line {line}", field_, zh, en)


def _history(obj: Any, name: str, line: int, problems: list[Problem]) -> tuple[HistoryTurn, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        problems.append(_bad(name, line, "history", "history 应为列表", "history must be a list of turns"))
        return ()
    out = []
    for i, t in enumerate(obj):
        if isinstance(t, str):  # a bare string is a customer turn
            out.append(HistoryTurn("customer", t))
            continue
        role = t.get("role") if isinstance(t, dict) else None
        text = t.get("text") if isinstance(t, dict) else None
        if role not in ("customer", "user", "agent") or not isinstance(text, str):
            problems.append(
                _bad(
                    name,
                    line,
                    f"history[{i}]",
                    "每一轮应为 {role: customer|agent, text}",
                    "each turn must be {role: customer|agent, text}",
                )
            )
            continue
        at = t.get("at")
        out.append(HistoryTurn("customer" if role == "user" else role, text, str(at) if at else None))
    return tuple(out)


def case_from(obj: Any, name: str, line: int, problems: list[Problem]) -> DraftCase | None:
    """One case from a parsed JSON line; problems are appended (bilingual, with the field)."""
    n0 = len(problems)
    if not isinstance(obj, dict):
        problems.append(_bad(name, line, None, "应为 JSON 对象", "expected a JSON object"))
        return None
    unknown = sorted(set(obj) - CASE_KEYS)
    if unknown:
        problems.append(
            _bad(
                name,
                line,
                unknown[0],
                f"未知字段：{', '.join(unknown)}",
                f"unknown field(s): {', '.join(unknown)}",
            )
        )
    cid = obj.get("id")
    if not isinstance(cid, str | int) or isinstance(cid, bool) or not str(cid).strip():
        problems.append(_bad(name, line, "id", "缺少 id", "id is missing"))
    msg = obj.get("customer_message")
    if not isinstance(msg, str) or not msg.strip():
        problems.append(
            _bad(
                name, line, "customer_message", "缺少客户消息", "customer_message must be a non-empty string"
            )
        )
    waited = obj.get("customer_waited_s")
    if waited is not None and (
        isinstance(waited, bool)
        or not isinstance(waited, int | float)
        or not math.isfinite(waited)
        or waited < 0
    ):
        problems.append(
            _bad(name, line, "customer_waited_s", "应为非负的秒数", "must be a finite number of seconds >= 0")
        )
    ids = obj.get("expected_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        problems.append(_bad(name, line, "expected_ids", "应为编号列表", "must be a list of snippet ids"))
    intent = obj.get("expected_intent")
    if intent is not None and intent not in INTENTS:
        problems.append(
            _bad(
                name,
                line,
                "expected_intent",
                f"未知意图 {intent!r}，可用：{', '.join(INTENTS)}",
                f"unknown intent {intent!r}; one of {', '.join(INTENTS)}",
            )
        )
    esc = obj.get("must_escalate")
    if esc is not None and not isinstance(esc, bool):
        problems.append(_bad(name, line, "must_escalate", "应为 true 或 false", "must be true or false"))
    ref = obj.get("reference_reply")
    if ref is not None and not isinstance(ref, str):
        problems.append(_bad(name, line, "reference_reply", "应为字符串", "must be a string"))
    history = _history(obj.get("history"), name, line, problems)
    if len(problems) > n0:
        return None
    return DraftCase(
        id=str(cid),
        customer_message=msg,  # type: ignore[arg-type]
        history=history,
        customer_waited_s=None if waited is None else float(waited),
        expected_ids=None if ids is None else tuple(ids),
        expected_intent=intent,
        must_escalate=esc,
        reference_reply=ref or None,
        line=line,
    )


def read_dataset_text(path: str | Path) -> str:
    """A dataset file's text (a BOM is dropped); a missing or unreadable file is a ``DatasetProblems``."""
    name = Path(path).name
    try:
        return Path(path).read_text("utf-8-sig")
    except FileNotFoundError:
        raise DatasetProblems(
            [Problem(name, "file", None, f"文件不存在：{path}", f"file not found: {path}")]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetProblems([Problem(name, "file", None, f"无法读取：{e}", f"cannot read: {e}")]) from None


def read_dataset(path: Path, *, limit: int | None = None) -> tuple[list[DraftCase], str]:
    """Cases (or conversations, one case per customer turn); any bad line rejects the whole file.

    Returns the cases and the format read (``cases`` or ``transcripts``).
    """
    from eval.transcripts import cases_from_conversations, conversation_from

    name = Path(path).name
    text = read_dataset_text(path)
    problems: list[Problem] = []
    cases: list[DraftCase] = []
    conversations = []
    fmt = ""
    seen: set[str] = set()
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(_bad(name, n, None, f"JSON 格式错误：{e.msg}", f"bad JSON: {e.msg}"))
            continue
        kind = "transcripts" if isinstance(obj, dict) and "turns" in obj else "cases"
        if fmt and kind != fmt:
            problems.append(
                _bad(
                    name,
                    n,
                    None,
                    "同一文件不能混合用例和对话",
                    "cases and conversations cannot be mixed in one file",
                )
            )
            continue
        fmt = fmt or kind
        if kind == "transcripts":
            conv = conversation_from(obj, name, n, problems)
            if conv is not None:
                conversations.append(conv)
            continue
        case = case_from(obj, name, n, problems)
        if case is not None:
            if case.id in seen:
                problems.append(_bad(name, n, "id", f"id 重复：{case.id}", f"duplicate id: {case.id}"))
            seen.add(case.id)
            cases.append(case)
    if problems:
        raise DatasetProblems(problems)
    if fmt == "transcripts":
        cases = cases_from_conversations(conversations)
    if not cases:
        raise DatasetProblems([Problem(name, "file", None, "文件中没有用例", "the file holds no cases")])
    return (cases[:limit] if limit else cases), fmt or "cases"


# -- the pipeline, built as the service builds it ----------------------------------------------------


@dataclass
class Environment:
    pipeline: Any  # suggest.pipeline.SuggestionPipeline
    norms: Norms
    snippets: dict[str, str]  # id -> question and answer (the text a citation stands for)
    setup: dict[str, Any]


def parse_at(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--at 应为 ISO 8601 时间，例如 {DEFAULT_AT} / --at must be an ISO 8601 time, e.g. {DEFAULT_AT}"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@contextmanager
def environment(
    kb_path: Path | None = None,
    *,
    drafter: str = "template",
    at: datetime | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[Environment]:
    """A temporary store with the KB, a tuned KB model, the indexes and the pipeline (as the API has it)."""
    from knowledge.io import read_snippets
    from knowledge.service import KnowledgeBase
    from knowledge.settings import KnowledgeSettings
    from knowledge.store import Store
    from knowledge.tune_cmd import TuneOptions, run_tune
    from suggest.app import make_drafter
    from suggest.clock import FixedClock
    from suggest.pipeline import SuggestionPipeline
    from suggest.settings import Settings
    from suggest.storage import SuggestStore
    from suggest.workflow import Workflow
    from suggest.workflow_store import WorkflowStore

    settings = Settings()
    if drafter == "llm" and not settings.llm.enabled:
        raise ValueError(
            "--drafter llm 需要设置 KEFU_LLM_BASE_URL 和 KEFU_LLM_MODEL / "
            "--drafter llm needs KEFU_LLM_BASE_URL and KEFU_LLM_MODEL"
        )
    kb_file = kb_path or DEMO_KB
    snippets = read_snippets(kb_file)
    from eval.intents import semantic_for_eval
    from prompts import load_norms
    from prompts.intents import default_intents, load_intents

    norms = load_norms(settings.norms.norms)
    src = settings.norms.intents
    intents = semantic_for_eval(default_intents(src) if src in ("zh", "en") else load_intents(src))
    with tempfile.TemporaryDirectory(prefix="kefu-eval-drafts-") as tmp:
        root = Path(tmp)
        store = Store(f"sqlite:///{root / 'kefu.db'}")
        kb = None
        try:
            store.import_snippets(snippets, actor="eval")
            ks = KnowledgeSettings(
                database_url=store.url,
                index_dir=root / "index",
                models_dir=root / "models",
                analyzer=settings.knowledge.analyzer,
                retrieval=settings.knowledge.retrieval,
                embedding_model=settings.knowledge.embedding_model,
            )
            t0 = time.perf_counter()
            tuned: dict[str, Any] | None = None
            if not ks.embedding_model:
                # exactly as `kefu kb bootstrap` (make serve) does: `kefu kb tune --force`, which trains
                # the KB model and fits fusion and confidence thresholds on held-out pairs
                progress("tuning the KB model (kefu kb tune --force)")
                report = run_tune(ks, TuneOptions(force=True, show_progress=False), store=store, say=progress)
                tuned = (report.get("new") or {}).get("retrieval")
            tune_s = time.perf_counter() - t0
            kb = KnowledgeBase(ks, store=store)
            progress("building the indexes")
            kb.open_index()
            when = at or parse_at(DEFAULT_AT)
            clock = FixedClock(when)
            suggest_store = SuggestStore(store.engine)
            workflow = Workflow(kb, WorkflowStore(store.engine), norms, clock, settings.workflow)
            pipeline = SuggestionPipeline(
                kb,
                suggest_store,
                norms,
                intents,
                settings.suggest,
                drafter=make_drafter(settings) if drafter == "llm" else None,
                clock=clock,
                workflow=workflow,
            )
            embedder = kb.embedder
            setup = {
                "kb": str(kb_file),
                "snippets": len(snippets),
                "drafter": drafter,
                "llm_model": settings.llm.model if drafter == "llm" else None,
                "embedding_model": embedder.model_id,
                "tune_s": round(tune_s, 2),
                "retrieval": kb.retriever.config.tuned(),
                "retrieval_fitted": tuned is not None,
                "at": when.isoformat(),
                "norms": norms.source,
            }
            yield Environment(
                pipeline=pipeline,
                norms=norms,
                snippets={s.id: f"{s.question}\n{s.answer}" for s in snippets},
                setup=setup,
            )
        finally:
            store.close()


# -- running -----------------------------------------------------------------------------------------


@dataclass
class DraftResult:
    """One draft as the service returned it, re-checked by the evaluator."""

    text: str
    kind: str
    citations: list[str]
    violations: list[Violation]
    facts: list[str]
    ungrounded: list[str]
    source: str = "template"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "source": self.source,
            "citations": self.citations,
            "violations": [v.to_dict() for v in self.violations],
            "facts": self.facts,
            "ungrounded": self.ungrounded,
        }


@dataclass
class CaseOutcome:
    case: DraftCase
    response: dict[str, Any] | None
    drafts: list[DraftResult] = field(default_factory=list)
    latency_ms: float = NAN
    error: str | None = None
    judge: dict[str, Score] = field(default_factory=dict)
    #: the same case out of hours and as a follow-up (eval.passes), by pass name
    variants: dict[str, CaseOutcome] = field(default_factory=dict)

    @property
    def intent(self) -> str | None:
        return None if self.response is None else self.response["intent"]["label"]

    @property
    def route(self) -> str | None:
        return None if self.response is None else self.response.get("route")

    @property
    def escalated(self) -> bool | None:
        return None if self.response is None else bool(self.response["escalate"])

    @property
    def hit_ids(self) -> list[str]:
        if self.response is None:
            return []
        return [h["snippet_id"] for h in self.response["retrieval"]["hits"]]


def norms_corpus(norms: Norms) -> str:
    """What the norms themselves state (their reply templates, routing, hours): facts that come from
    here are the company's own and need no snippet (the complaint template's 24 小时, ...)."""
    parts = [str(v) for v in asdict(norms.routing).values()]
    parts += [str(v) for v in norms.variables.values()]
    for name, t in norms.templates.items():
        if name in LLM_TEMPLATES:
            continue
        parts.append(t.text.format_map({**norms.variables, **{p: " " for p in t.placeholders}}))
    return "\n".join(parts)


def evaluate_case(
    env: Environment,
    case: DraftCase,
    index: int,
    guard: Guard,
    corpus: str,
    *,
    conversation_id: str | None = None,
) -> CaseOutcome:
    from suggest.drafting import Turn
    from suggest.pipeline import SuggestionRequest

    req = SuggestionRequest(
        conversation_id=conversation_id or f"eval-{index}-{case.id}"[:128],
        customer_message=case.customer_message,
        history=[Turn(t.role, t.text, t.at) for t in case.history],
        customer_waited_s=case.customer_waited_s,
    )
    t0 = time.perf_counter()
    try:
        response = env.pipeline.suggest(req)
    except KefuError as e:
        return CaseOutcome(case, None, error=f"{e.code}: {e}")
    latency = (time.perf_counter() - t0) * 1000
    ctx = CheckContext(
        first_reply=response["first_reply"],
        customer_waited_s=response["customer_waited_s"],
        greeted=not response["first_reply"],
    )
    # the drafts are in the customer's language: checked by the norms they were written with
    norms = env.pipeline.norms_by_language.get(response.get("language"), env.norms)
    if norms is not env.norms:  # (English cases: a few; the guard's regexes compile in microseconds)
        guard, corpus = Guard(norms), norms_corpus(norms)
    drafts = []
    for d in response["drafts"]:
        cited = [c["snippet_id"] for c in d["citations"]]
        sources = [env.snippets.get(sid, "") for sid in cited] + [corpus]
        drafts.append(
            DraftResult(
                text=d["text"],
                kind=d["kind"],
                citations=cited,
                violations=norms.check(d["text"], ctx),
                facts=guard.facts(d["text"]),
                ungrounded=guard.ungrounded(d["text"], sources),
                source=d.get("source", "template"),
            )
        )
    return CaseOutcome(case, response, drafts, latency)


def run_cases(
    env: Environment,
    cases: Sequence[DraftCase],
    *,
    progress: Callable[[int, int], None] | None = None,
    passes: bool = True,
) -> list[CaseOutcome]:
    """Every case at the fixed time, and (``passes``) out of hours and as a follow-up (eval.passes)."""
    guard = Guard(env.norms)
    corpus = norms_corpus(env.norms)
    clock = env.pipeline.clock
    at = clock.now()
    evening = out_of_hours_at(env.norms, at)
    out = []
    for i, case in enumerate(cases):
        clock.set(at)
        outcome = evaluate_case(env, case, i, guard, corpus)
        if passes:
            outcome.variants = _variants(env, case, i, guard, corpus, evening)
        out.append(outcome)
        if progress is not None:
            progress(i + 1, len(cases))
    clock.set(at)
    return out


def _variants(
    env: Environment, case: DraftCase, index: int, guard: Guard, corpus: str, evening: datetime
) -> dict[str, CaseOutcome]:
    """The case in a new conversation out of hours, then again a minute after the agent approved the
    first draft of that reply."""
    clock = env.pipeline.clock
    conv = f"eval-{index}-{case.id}"[:120] + "-ooh"
    clock.set(evening)
    closed = evaluate_case(env, case, index, guard, corpus, conversation_id=conv)
    variants = {"out_of_hours": closed}
    if closed.response is None or not closed.response["drafts"]:
        return variants
    first = closed.response["drafts"][0]
    env.pipeline.store.record_decision(
        suggestion_id=closed.response["id"],
        conversation_id=conv,
        action="approve",
        draft_id=first["id"],
        final_text=first["text"],
        agent_id="eval",
        reason=None,
        violations=[],
        at=evening,
    )
    clock.set(evening + timedelta(seconds=FOLLOW_UP_AFTER_S))
    variants["follow_up"] = evaluate_case(env, case, index, guard, corpus, conversation_id=conv)
    return variants


def pass_results(o: CaseOutcome) -> list[PassResult]:
    """The case's passes as the openings metric reads them (the fixed time first)."""
    named = [("in_hours", o), *((name, o.variants[name]) for name in PASSES if name in o.variants)]
    ongoing = bool(o.case.history) and o.case.history[-1].role == "agent"
    return [
        PassResult(
            name,
            x.response,
            [PassDraft(d.text, d.violations) for d in x.drafts],
            late_due=name == "out_of_hours" and not ongoing,
        )
        for name, x in named
    ]


# -- metrics -----------------------------------------------------------------------------------------


def _answered(o: CaseOutcome) -> Score | None:
    if o.response is None:
        return na(f"the case failed: {o.error}")
    if not o.drafts:
        return na("no drafts")
    return None


def _of_variant(item: CaseOutcome, variant: str | None) -> CaseOutcome | Score:
    """The outcome a pass metric scores: the case's own, or that of its ``variant`` pass."""
    if variant is None:
        return item
    other = item.variants.get(variant)
    return other if other is not None else na(f"the {variant} pass did not run")


#: The rules scored again on each extra pass (eval.passes): the openings of a reply.
PASS_RULES = ("greeting", "repeated_greeting", "stacked_apology", "late_without_apology")


class RuleCompliance(Metric[CaseOutcome]):
    """Share of the drafts that keep one norm; the aggregate counts drafts, not cases."""

    group = "norms"

    def __init__(self, rule_id: str, severity: str, message: str, *, variant: str | None = None) -> None:
        self.rule_id = rule_id
        self.severity = severity
        self.variant = variant
        self.name = f"{variant}.norms.{rule_id}" if variant else f"norms.{rule_id}"
        where = f" ({variant} pass)" if variant else ""
        self.description = f"drafts keeping the rule {rule_id} ({severity}){where}: {message}"

    def score(self, item: CaseOutcome) -> Score:
        item_or_na = _of_variant(item, self.variant)
        if isinstance(item_or_na, Score):
            return item_or_na
        item = item_or_na
        if (s := _answered(item)) is not None:
            return s
        bad = [d for d in item.drafts if any(v.rule_id == self.rule_id for v in d.violations)]
        total = len(item.drafts)
        if not bad:
            return Score(1.0, f"all {total} drafts keep it", {"hits": total, "total": total})
        spans = "; ".join(
            v.matched or v.message for d in bad for v in d.violations if v.rule_id == self.rule_id
        )
        return Score(
            (total - len(bad)) / total,
            f"{len(bad)} of {total} drafts break it: {spans}",
            {"hits": total - len(bad), "total": total},
        )

    def aggregate(self, scores: Sequence[Score]) -> Score:
        return ratio(sum_details(scores, "hits"), sum_details(scores, "total"), "drafts keep it")


class SeverityPass(Metric[CaseOutcome]):
    """Share of drafts with no violation of the given severities (``error`` only, or any)."""

    group = "norms"

    def __init__(
        self, name: str, severities: tuple[str, ...] | None, description: str, *, variant: str | None = None
    ) -> None:
        self.name = f"{variant}.{name}" if variant else name
        self.severities = severities
        self.variant = variant
        self.description = f"{description} ({variant} pass)" if variant else description

    def _bad(self, v: Violation) -> bool:
        return self.severities is None or v.severity in self.severities

    def score(self, item: CaseOutcome) -> Score:
        item_or_na = _of_variant(item, self.variant)
        if isinstance(item_or_na, Score):
            return item_or_na
        item = item_or_na
        if (s := _answered(item)) is not None:
            return s
        bad = [d for d in item.drafts if any(self._bad(v) for v in d.violations)]
        total = len(item.drafts)
        reason = (
            f"all {total} drafts pass"
            if not bad
            else "; ".join(
                f"draft {item.drafts.index(d) + 1}: "
                + ", ".join(v.rule_id for v in d.violations if self._bad(v))
                for d in bad
            )
        )
        return Score((total - len(bad)) / total, reason, {"hits": total - len(bad), "total": total})

    def aggregate(self, scores: Sequence[Score]) -> Score:
        return ratio(sum_details(scores, "hits"), sum_details(scores, "total"), "drafts pass")


def _hit_at(k: int) -> Callable[[CaseOutcome], Score]:
    def score(o: CaseOutcome) -> Score:
        if not o.case.expected_ids:
            return na("no expected_ids")
        if o.response is None:
            return na(f"the case failed: {o.error}")
        top = o.hit_ids[:k]
        found = [i for i in top if i in o.case.expected_ids]
        if found:
            return Score(1.0, f"{found[0]} at rank {top.index(found[0]) + 1}")
        return Score(
            0.0, f"expected {', '.join(o.case.expected_ids)}; top {k}: {', '.join(top) or 'nothing'}"
        )

    return score


def _citation_hit(o: CaseOutcome) -> Score:
    if not o.case.expected_ids:
        return na("no expected_ids")
    if (s := _answered(o)) is not None:
        return s
    kind = (o.response or {}).get("plan", {}).get("kind")
    if kind in UNCITED_KINDS:
        return na(f"a {kind} draft answers from the norms, not from a snippet")
    cited = o.drafts[0].citations
    if any(c in o.case.expected_ids for c in cited):
        return Score(1.0, f"the first draft cites {', '.join(cited)}")
    return Score(
        0.0,
        f"the first draft cites {', '.join(cited) or 'nothing'}; expected {', '.join(o.case.expected_ids)}",
    )


def _groundedness(o: CaseOutcome) -> Score:
    if (s := _answered(o)) is not None:
        return s
    facts = sum(len(d.facts) for d in o.drafts)
    bad = [f for d in o.drafts for f in d.ungrounded]
    if facts == 0:
        return na("no number, price, date, duration or promise in the drafts")
    grounded = facts - sum(1 for d in o.drafts for f in d.facts if f in d.ungrounded)
    reason = (
        f"all {facts} facts found in the cited snippets or the norms"
        if not bad
        else f"not in the cited snippets: {', '.join(dict.fromkeys(bad))}"
    )
    return Score(grounded / facts, reason, {"hits": grounded, "total": facts})


def _escalation_precision(o: CaseOutcome) -> Score:
    if o.case.must_escalate is None:
        return na("no must_escalate")
    if o.response is None:
        return na(f"the case failed: {o.error}")
    if not o.escalated:
        return na("not escalated (precision counts escalated cases)")
    ok = o.case.must_escalate
    return Score(
        1.0 if ok else 0.0, "escalated, as it must" if ok else "escalated, but must_escalate is false"
    )


def _escalation_recall(o: CaseOutcome) -> Score:
    if o.case.must_escalate is None:
        return na("no must_escalate")
    if o.response is None:
        return na(f"the case failed: {o.error}")
    if not o.case.must_escalate:
        return na("need not escalate (recall counts cases that must)")
    plan = o.response.get("plan", {})
    return (
        Score(1.0, "escalated")
        if o.escalated
        else Score(0.0, f"not escalated: planned {plan.get('kind')} ({plan.get('reason')})")
    )


def routing_table(norms: Norms) -> dict[str, str]:
    r = norms.routing
    return {
        "complaint": r.complaint_department,
        "suggestion": r.suggestion_department,
        "customer_info": r.customer_info_department,
    }


def _intent(o: CaseOutcome) -> Score:
    exp = o.case.expected_intent
    if exp is None:
        return na("no expected_intent")
    if o.response is None:
        return na(f"the case failed: {o.error}")
    got = o.intent
    details = {"expected": exp, "predicted": got}
    if got == exp:
        return Score(1.0, f"{got}", details)
    return Score(0.0, f"{got}, expected {exp}", details)


def confusion(scores: Sequence[Score]) -> dict[str, Any]:
    pairs = [(s.details["expected"], s.details["predicted"]) for s in scores if s.applies]
    labels = [i for i in INTENTS if any(i in p for p in pairs)]
    labels += sorted({x for p in pairs for x in p} - set(labels))
    matrix = [[sum(1 for e, p in pairs if e == row and p == col) for col in labels] for row in labels]
    return {"labels": labels, "matrix": matrix}


def _intent_aggregate(scores: Sequence[Score]) -> Score:
    m = mean_of(scores)
    return Score(m.value, m.reason, {**m.details, "confusion": confusion(scores)})


def _routing(norms: Norms) -> Callable[[CaseOutcome], Score]:
    table = routing_table(norms)

    def score(o: CaseOutcome) -> Score:
        exp = o.case.expected_intent
        if exp is None:
            return na("no expected_intent")
        if o.response is None:
            return na(f"the case failed: {o.error}")
        want = table.get(exp)
        if o.route == want:
            return Score(1.0, f"routed to {want}" if want else "not routed, as expected")
        return Score(0.0, f"routed to {o.route or 'nobody'}, expected {want or 'nobody'}")

    return score


def _similarity(fn: Callable[[str, str], float], label: str) -> Callable[[CaseOutcome], Score]:
    def score(o: CaseOutcome) -> Score:
        if not o.case.reference_reply:
            return na("no reference_reply")
        if (s := _answered(o)) is not None:
            return s
        v = fn(o.drafts[0].text, o.case.reference_reply)
        return Score(v, f"{label} of the first draft against the reference: {v:.3f}")

    return score


def _latency(o: CaseOutcome) -> Score:
    if o.response is None:
        return na(f"the case failed: {o.error}")
    t = o.response.get("timings_ms", {})
    parts = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")
    return Score(o.latency_ms, f"{o.latency_ms:.1f} ms ({parts})")


def latency_aggregate(scores: Sequence[Score]) -> Score:
    values = [s.value for s in scores if s.applies]
    if not values:
        return na("no timed cases")
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return Score(
        p50,
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(values)} cases",
        {
            "p50": round(p50, 3),
            "p95": round(p95, 3),
            "mean": round(sum(values) / len(values), 3),
            "max": round(max(values), 3),
            "n": len(values),
            "histogram": histogram(values, LATENCY_EDGES_MS),
        },
    )


def draft_metrics(norms: Norms, *, judge: bool = False) -> list[Metric[CaseOutcome]]:
    m: list[Metric[CaseOutcome]] = [
        SeverityPass("error_rule_pass", ("error",), "drafts that break no error-level norm"),
        SeverityPass("replies_clean", None, "drafts that break no norm at all"),
    ]
    m += [
        RuleCompliance(r.id, r.severity, r.message.split("{", 1)[0])
        for r in norms.rules.values()
        if r.enabled
    ]
    offline_apology = norms.render("offline_prefix").strip()
    m.append(
        FunctionMetric(
            "openings_once",
            lambda o: openings_once(pass_results(o), offline_apology),
            description="drafts of every pass (in hours, out of hours, follow-up) that greet once on a "
            "first reply and never later, apologise once, and apologise for an offline message only "
            "when the customer really waited",
            group="norms",
            aggregate=lambda s: ratio(sum_details(s, "hits"), sum_details(s, "total"), "drafts open right"),
        )
    )
    for variant in PASSES:
        m += [
            SeverityPass(
                "error_rule_pass", ("error",), "drafts that break no error-level norm", variant=variant
            ),
            SeverityPass("replies_clean", None, "drafts that break no norm at all", variant=variant),
        ]
        m += [
            RuleCompliance(r.id, r.severity, r.message.split("{", 1)[0], variant=variant)
            for r in norms.rules.values()
            if r.enabled and r.id in PASS_RULES
        ]
    m += [
        FunctionMetric(
            "groundedness",
            _groundedness,
            description="numbers, prices, dates, durations and promises of the drafts found in their cited snippets (or the norms)",
            aggregate=lambda s: ratio(sum_details(s, "hits"), sum_details(s, "total"), "facts grounded"),
        ),
        FunctionMetric(
            "hit@1", _hit_at(1), description="an expected snippet retrieved first", group="retrieval"
        ),
        FunctionMetric(
            "hit@5", _hit_at(5), description="an expected snippet among the first 5", group="retrieval"
        ),
        FunctionMetric(
            "citation_hit",
            _citation_hit,
            description="the first draft cites an expected snippet",
            group="retrieval",
        ),
        FunctionMetric(
            "escalation_precision",
            _escalation_precision,
            description="escalated cases that must escalate",
            group="routing",
        ),
        FunctionMetric(
            "escalation_recall",
            _escalation_recall,
            description="cases that must escalate and did",
            group="routing",
        ),
        FunctionMetric(
            "intent_accuracy",
            _intent,
            description="the pipeline's intent equals expected_intent",
            group="routing",
            aggregate=_intent_aggregate,
        ),
        FunctionMetric(
            "routing_accuracy",
            _routing(norms),
            description="routed to the department of the expected intent (or to none)",
            group="routing",
        ),
        FunctionMetric(
            "char_f1",
            _similarity(char_f1, "character F1"),
            description="character F1 to the reference reply",
            group="similarity",
        ),
        FunctionMetric(
            "rouge_l",
            _similarity(rouge_l, "ROUGE-L"),
            description="character ROUGE-L F1 to the reference reply",
            group="similarity",
        ),
        FunctionMetric(
            "latency_ms",
            _latency,
            description="wall time of one suggestion through the pipeline (value: p50)",
            higher_is_better=False,
            group="latency",
            aggregate=latency_aggregate,
        ),
    ]
    if judge:
        from eval.judge import JUDGE_CRITERIA

        for criterion in JUDGE_CRITERIA:
            m.append(
                FunctionMetric(
                    f"judge_{criterion}",
                    (lambda c: lambda o: o.judge.get(c, na("not judged")))(criterion),
                    description=f"LLM judge: {criterion} (1-5)",
                    group="judge",
                )
            )
    return m


def score_outcomes(
    outcomes: Sequence[CaseOutcome], norms: Norms, *, judge: bool = False
) -> dict[str, MetricRun]:
    return run_metrics(draft_metrics(norms, judge=judge), outcomes)


# -- judge and report --------------------------------------------------------------------------------


def judge_outcomes(
    outcomes: Sequence[CaseOutcome],
    judge: Any,  # eval.judge.Judge
    env: Environment,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Ask the judge about the first draft of every answered case (failures score NaN)."""
    store_snippets = env.snippets
    for i, o in enumerate(outcomes):
        if o.drafts:
            first = o.drafts[0]
            cited = []
            for sid in first.citations:
                q, _, a = store_snippets.get(sid, "\n").partition("\n")
                cited.append((sid, q, a))
            o.judge = judge.score(o.case.customer_message, first.text, cited)
        if progress is not None:
            progress(i + 1, len(outcomes))


#: Per-case metrics whose miss makes a case fail (similarity, latency and hit@1 only inform).
FAILING_METRICS = (
    "error_rule_pass",
    "groundedness",
    "escalation_recall",
    "escalation_precision",
    "intent_accuracy",
    "routing_accuracy",
    "citation_hit",
    "hit@5",
    "replies_clean",
    "openings_once",
    *(f"{variant}.error_rule_pass" for variant in PASSES),
)


def _fact_spans(text: str, facts: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for f in dict.fromkeys(facts):
        at = text.find(f)
        if at >= 0:
            out.append(
                {
                    "start": at,
                    "end": at + len(f),
                    "rule": "ungrounded",
                    "severity": "error",
                    "message": "not in the cited snippets",
                }
            )
    return out


def failing_cases(outcomes: Sequence[CaseOutcome], runs: dict[str, MetricRun]) -> list[dict[str, Any]]:
    from eval.report import spans_of

    out: list[dict[str, Any]] = []
    for i, o in enumerate(outcomes):
        reasons, hard = [], 0
        for name in FAILING_METRICS:
            run = runs.get(name)
            if run is None:
                continue
            s = run.scores[i]
            if s.applies and s.value < 1.0:
                reasons.append(f"{name}: {s.reason}")
                hard += name != "replies_clean"
        if o.error:
            reasons.append(f"error: {o.error}")
            hard += 1
        if not reasons:
            continue
        texts: list[dict[str, Any]] = [{"role": "客户", "text": o.case.customer_message, "spans": []}]
        for n, d in enumerate(o.drafts, start=1):
            spans = spans_of(d.text, [v.to_dict() for v in d.violations]) + _fact_spans(d.text, d.ungrounded)
            texts.append({"role": f"草稿{n}", "text": d.text, "spans": spans})
        for variant, label in (("out_of_hours", "非工作时间"), ("follow_up", "跟进")):
            v_out = o.variants.get(variant)
            if v_out is None or not any(r.startswith(("openings_once", variant)) for r in reasons):
                continue
            for n, d in enumerate(v_out.drafts, start=1):
                spans = spans_of(d.text, [v.to_dict() for v in d.violations])
                texts.append({"role": f"草稿{n}（{label}）", "text": d.text, "spans": spans})
        r = o.response or {}
        context = (
            f"intent {o.intent} (expected {o.case.expected_intent}), plan {r.get('plan', {}).get('kind')}, "
            f"escalate {o.escalated} (must {o.case.must_escalate}), top hits {', '.join(o.hit_ids[:3])}"
        )
        out.append({"id": o.case.id, "hard": hard, "reasons": reasons, "context": context, "texts": texts})
    out.sort(key=lambda f: -int(f["hard"]))
    return out


def case_records(outcomes: Sequence[CaseOutcome], runs: dict[str, MetricRun]) -> list[dict[str, Any]]:
    records = []
    for i, o in enumerate(outcomes):
        r = o.response
        case = o.case.to_dict()
        if len(case["history"]) > HISTORY_KEPT:  # long real conversations: the input file has them all
            case["history_turns"] = len(case["history"])
            case["history"] = case["history"][-HISTORY_KEPT:]
        rec: dict[str, Any] = {"case": case, "error": o.error}
        if r is not None:
            rec.update(
                intent=r["intent"],
                route=r["route"],
                escalate=r["escalate"],
                plan=r["plan"],
                first_reply=r["first_reply"],
                customer_waited_s=r["customer_waited_s"],
                drafter=r["drafter"],
                fallback_reason=r["fallback_reason"],
                retrieval={
                    "confidence": r["retrieval"]["confidence"],
                    "hits": [
                        {k: h[k] for k in ("snippet_id", "score", "confidence")}
                        for h in r["retrieval"]["hits"]
                    ],
                },
                timings_ms=r["timings_ms"],
                latency_ms=round(o.latency_ms, 3),
            )
        rec["drafts"] = [d.to_dict() for d in o.drafts]
        rec["passes"] = {
            name: {
                "first_reply": (v.response or {}).get("first_reply"),
                "late_apology": (v.response or {}).get("late_apology"),
                "customer_at": (v.response or {}).get("customer_at"),
                "error": v.error,
                "drafts": [d.to_dict() for d in v.drafts],
            }
            for name, v in o.variants.items()
        }
        rec["scores"] = {name: run.scores[i].to_dict() for name, run in runs.items()}
        records.append(rec)
    return records


def build_report(
    outcomes: Sequence[CaseOutcome],
    runs: dict[str, MetricRun],
    env_setup: dict[str, Any],
    norms: Norms,
    dataset: str,
) -> dict[str, Any]:
    from eval.report import build, rule_figure

    lat = runs["latency_ms"].total
    figures: dict[str, Any] = {
        "rules": rule_figure(runs, {r.id: r.severity for r in norms.rules.values()}),
        "latency": (
            {
                **lat.details["histogram"],
                "unit": "ms per suggestion",
                "title": "Latency",
                "metric": "latency_ms",
            }
            if lat.applies
            else None
        ),
        "confusion": runs["intent_accuracy"].total.details.get("confusion"),
    }
    setup = {
        "dataset": dataset,
        "cases": len(outcomes),
        "failed_to_run": sum(1 for o in outcomes if o.error),
        **env_setup,
    }
    return build(
        "drafts",
        "Draft evaluation / 草稿评估",
        setup=setup,
        runs=runs,
        figures=figures,
        cases=case_records(outcomes, runs),
        failing=failing_cases(outcomes, runs),
    )

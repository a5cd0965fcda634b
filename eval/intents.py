"""Measuring the intent classifier and the routing that follows from it.

``kefu eval intents [FILE] [--json] [--rules-only]`` (``cli_main``): FILE is JSONL, one labelled customer
message a line, ``{"text": str, "intent": str, "route": str | null}`` (default:
``eval/data/intents_zh.jsonl``, written by hand and kept apart from the examples in
``prompts/intents_zh.toml``).

``kefu eval intents --jddc test`` (or ``tune``): the real JD.com customer messages labelled in
``eval/data/intents_jddc.jsonl`` (session id, turn, intent, split; turns labelled after the split are
marked ``"added": "later"`` and are all on the tuning side; the text is read from
``../shared/data/jddc-sample/dialogues.jsonl`` and the measurement is skipped, with a message, when that
file is absent); routes follow from the intents.

The classifier is the one the service runs: the rules plus, unless ``--rules-only`` or the e5 encoder
is switched off (``KEFU_ENCODER=none``), the semantic classifier learnt from the labelled files
(``prompts/intent_model.py``) *except the set being measured*: the hand-written set is measured by a
classifier that did not learn from it, and only the tuning half of the JDDC set is ever learnt from.

It reports intent
accuracy, routing accuracy (complaint -> after-sales, suggestion and customer information -> sales,
departments from the packaged norms), per-intent precision and recall, the confusion matrix, the
misclassified messages, how well the confidence matches the accuracy, and the mean time of one
classification. A file with any bad line is rejected: every problem goes to stderr with its line
number, exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.norms import InputProblems
from knowledge.service import general_encoder
from knowledge.settings import KnowledgeSettings
from prompts import Norms, default_norms
from prompts.intent_model import JDDC_DIALOGUES, JDDC_LABELS, read_labelled_turns
from prompts.intents import INTENTS, IntentRules, default_intents, semantic_intents

EXIT_OK = 0
EXIT_BAD_INPUT = 2
DEFAULT_SET = Path(__file__).resolve().parent / "data" / "intents_zh.jsonl"
# confidence bins of the reliability table: [lower, upper)
CONFIDENCE_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


@dataclass(frozen=True)
class IntentCase:
    line: int
    text: str
    intent: str
    route: str | None


@dataclass(frozen=True)
class IntentOutcome:
    case: IntentCase
    intent: str
    confidence: float
    route: str | None

    @property
    def correct(self) -> bool:
        return self.intent == self.case.intent

    @property
    def route_correct(self) -> bool:
        return self.route == self.case.route


@dataclass
class IntentReport:
    n: int
    accuracy: float
    routing_accuracy: float
    labels: list[str]
    #: per intent: precision, recall, f1, support (expected count), predicted (predicted count)
    per_intent: dict[str, dict[str, float]]
    #: confusion[expected][predicted] = count
    confusion: dict[str, dict[str, int]]
    #: per confidence bin: messages, accuracy, mean confidence
    calibration: list[dict[str, float]]
    mean_confidence_correct: float
    mean_confidence_wrong: float
    mean_ms: float
    p95_ms: float
    errors: list[dict[str, Any]] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return _nan_to_none(d)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def routing_table(norms: Norms | None = None) -> dict[str, str]:
    """Intent -> department, from the norms (``[routing]``); intents not listed are not routed."""
    r = (norms or default_norms("zh")).routing
    return {
        "complaint": r.complaint_department,
        "suggestion": r.suggestion_department,
        "customer_info": r.customer_info_department,
    }


# -- input -----------------------------------------------------------------------------------------


def _case_from(line_no: int, raw: str, departments: set[str]) -> IntentCase:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"不是有效的 JSON / not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError('应为 JSON 对象 / expected a JSON object like {"text": "...", "intent": "..."}')
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError('缺少非空字符串字段 "text" / "text" must be a non-empty string')
    intent = obj.get("intent")
    if intent not in INTENTS:
        raise ValueError(
            f'"intent" 应为 {", ".join(INTENTS)} 之一 / "intent" must be one of {", ".join(INTENTS)}'
        )
    if "route" not in obj:
        raise ValueError('缺少字段 "route"（部门或 null）/ "route" is missing (a department or null)')
    route = obj["route"]
    if route is not None and route not in departments:
        names = ", ".join(sorted(departments))
        raise ValueError(f'"route" 应为 {names} 或 null / "route" must be one of {names} or null')
    return IntentCase(line_no, text, intent, route)


def read_cases(path: str | Path, norms: Norms | None = None) -> list[IntentCase]:
    """Read and validate every line first: a file with any bad line is rejected as a whole."""
    departments = set(routing_table(norms).values())
    try:
        content = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputProblems([(0, f"无法读取文件 / cannot read the file: {exc}")]) from exc
    cases: list[IntentCase] = []
    problems: list[tuple[int, str]] = []
    for line_no, raw in enumerate(content.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            cases.append(_case_from(line_no, raw, departments))
        except ValueError as exc:
            problems.append((line_no, str(exc)))
    if not cases and not problems:
        problems.append((0, "文件中没有消息 / the file holds no messages"))
    if problems:
        raise InputProblems(problems)
    return cases


def read_jddc_cases(
    labels: str | Path, dialogues: str | Path, split: str, norms: Norms | None = None
) -> list[IntentCase]:
    """The labelled JDDC turns of ``split`` as cases (the route follows from the intent); ``line`` is
    the label's line in ``labels``. Raises ``FileNotFoundError`` when ``dialogues`` is absent."""
    routes = routing_table(norms)
    lines = {
        (obj["session_id"], obj["turn"]): i
        for i, raw in enumerate(Path(labels).read_text("utf-8").splitlines(), start=1)
        if raw.strip() and (obj := json.loads(raw))
    }
    return [
        IntentCase(lines[(sid, turn)], m.text, m.label, routes.get(m.label))
        for sid, turn, m in read_labelled_turns(labels, dialogues, (split,))
    ]


def semantic_for_eval(
    rules: IntentRules, settings: KnowledgeSettings | None = None, *, exclude: Sequence[str | Path] = ()
) -> IntentRules:
    """``rules`` with the semantic classifier as the service builds it (the general encoder of the
    knowledge settings, e5 by default), learning from neither ``exclude`` nor the JDDC test half;
    the rules alone when the encoder is switched off or cannot load."""
    settings = settings or KnowledgeSettings()
    encoder = general_encoder(settings)
    if encoder is None:
        return rules
    return semantic_intents(
        rules,
        encoder.encode_documents,
        encode_one=encoder.encode_query,
        encoder_id=encoder.model_id,
        cache_dir=settings.models_dir / "intents",
        exclude=exclude,
    )


# -- evaluation ------------------------------------------------------------------------------------


def classify_cases(
    cases: Sequence[IntentCase], rules: IntentRules, routes: dict[str, str]
) -> tuple[list[IntentOutcome], list[float]]:
    outcomes: list[IntentOutcome] = []
    times_ms: list[float] = []
    for case in cases:
        t0 = time.perf_counter()
        label, confidence = rules.classify(case.text)
        times_ms.append((time.perf_counter() - t0) * 1000)
        outcomes.append(IntentOutcome(case, label, confidence, routes.get(label)))
    return outcomes, times_ms


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _ratio_f(a: float, b: int) -> float:
    return a / b if b else math.nan


def build_report(outcomes: Sequence[IntentOutcome], times_ms: Sequence[float]) -> IntentReport:
    n = len(outcomes)
    present = {o.case.intent for o in outcomes} | {o.intent for o in outcomes}
    labels = [label for label in INTENTS if label in present]
    confusion = {e: dict.fromkeys(labels, 0) for e in labels}
    for o in outcomes:
        confusion[o.case.intent][o.intent] += 1
    per_intent: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = confusion[label][label]
        support = sum(confusion[label].values())
        predicted = sum(confusion[e][label] for e in labels)
        p, r = _ratio(tp, predicted), _ratio(tp, support)
        f1 = 2 * p * r / (p + r) if p + r > 0 else (math.nan if math.isnan(p + r) else 0.0)
        per_intent[label] = {
            "precision": p,
            "recall": r,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
    calibration = []
    for lo, hi in CONFIDENCE_BINS:
        inside = [o for o in outcomes if lo <= o.confidence < hi]
        calibration.append(
            {
                "from": lo,
                "to": min(hi, 1.0),
                "messages": len(inside),
                "accuracy": _ratio(sum(o.correct for o in inside), len(inside)),
                "mean_confidence": _ratio_f(sum(o.confidence for o in inside), len(inside)),
            }
        )
    right = [o.confidence for o in outcomes if o.correct]
    wrong = [o.confidence for o in outcomes if not o.correct]
    ordered = sorted(times_ms)
    errors = [
        {
            "line": o.case.line,
            "text": o.case.text,
            "expected": o.case.intent,
            "predicted": o.intent,
            "confidence": o.confidence,
            "expected_route": o.case.route,
            "predicted_route": o.route,
        }
        for o in outcomes
        if not o.correct or not o.route_correct
    ]
    return IntentReport(
        n=n,
        accuracy=_ratio(sum(o.correct for o in outcomes), n),
        routing_accuracy=_ratio(sum(o.route_correct for o in outcomes), n),
        labels=labels,
        per_intent=per_intent,
        confusion=confusion,
        calibration=calibration,
        mean_confidence_correct=sum(right) / len(right) if right else math.nan,
        mean_confidence_wrong=sum(wrong) / len(wrong) if wrong else math.nan,
        mean_ms=sum(times_ms) / len(times_ms) if times_ms else math.nan,
        p95_ms=ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] if ordered else math.nan,
        errors=errors,
    )


def evaluate_intents(
    path: str | Path | None = None,
    rules: IntentRules | None = None,
    *,
    norms: Norms | None = None,
    semantic: bool = True,
    cases: Sequence[IntentCase] | None = None,
    exclude: Sequence[str | Path] | None = None,
) -> IntentReport:
    """Classify every message of a labelled set and score intents and routes.

    ``rules`` defaults to the packaged Chinese intents, with the semantic classifier unless
    ``semantic`` is false; ``norms`` (for the departments) to the packaged Chinese norms. ``cases``:
    already read (the JDDC set), ``path`` then only names them. ``exclude``: labelled files the
    semantic classifier must not learn from (default: ``path``). Raises ``InputProblems`` for a bad file.
    """
    path = Path(path) if path is not None else DEFAULT_SET
    norms = norms or default_norms("zh")
    t0 = time.perf_counter()
    rules = rules or default_intents("zh")
    if semantic:
        rules = semantic_for_eval(rules, exclude=[path] if exclude is None else exclude)
    load_ms = (time.perf_counter() - t0) * 1000
    cases = list(cases) if cases is not None else read_cases(path, norms)
    routes = routing_table(norms)
    # one warm-up call so that the first message does not pay for lazy initialisation (OpenCC, regexes)
    rules.classify(cases[0].text)
    outcomes, times_ms = classify_cases(cases, rules, routes)
    report = build_report(outcomes, times_ms)
    report.setup = {
        "file": str(path),
        "examples": len(rules.examples),
        "semantic": rules.semantic.sources if rules.semantic is not None else None,
        "classifier": asdict(rules.settings),
        "routing": routes,
        "load_ms": round(load_ms, 2),
        "machine": _machine(),
    }
    return report


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"


# -- text output -----------------------------------------------------------------------------------


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in s)


def _pad(s: str, width: int) -> str:
    return s + " " * max(0, width - _width(s))


def _fmt(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{x:.3f}"


def render(report: IntentReport) -> str:
    labels = report.labels
    short = {label: label[:6] for label in labels}
    lines = [
        f"messages: {report.n}   examples in the intents file: {report.setup.get('examples', '?')}",
        f"semantic classifier learnt from: {report.setup.get('semantic') or 'nothing (rules only)'}",
        f"intent accuracy   {report.accuracy:.4f}",
        f"routing accuracy  {report.routing_accuracy:.4f}",
        f"time per message  mean {report.mean_ms:.3f} ms   p95 {report.p95_ms:.3f} ms",
        "",
        f"{'intent':<14}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}",
    ]
    for label in labels:
        m = report.per_intent[label]
        lines.append(
            f"{label:<14}{_fmt(m['precision']):>10}{_fmt(m['recall']):>8}{_fmt(m['f1']):>8}{int(m['support']):>9}"
        )
    lines += ["", "confusion (rows: expected, columns: predicted)"]
    lines.append(f"{'':<14}" + "".join(f"{short[p]:>7}" for p in labels))
    for e in labels:
        lines.append(f"{e:<14}" + "".join(f"{report.confusion[e][p] or '.':>7}" for p in labels))
    lines += ["", "confidence      messages  accuracy  mean confidence"]
    for b in report.calibration:
        lines.append(
            f"[{b['from']:.1f}, {b['to']:.1f}{']' if b['to'] >= 1 else ')'}  {int(b['messages']):>10}"
            f"  {_fmt(b['accuracy']):>8}  {_fmt(b['mean_confidence']):>15}"
        )
    lines.append(
        f"mean confidence: correct {_fmt(report.mean_confidence_correct)}, wrong {_fmt(report.mean_confidence_wrong)}"
    )
    if report.errors:
        lines += ["", f"errors ({len(report.errors)}):"]
        for err in report.errors:
            route = "" if err["expected_route"] == err["predicted_route"] else "  ROUTE"
            lines.append(
                f"  line {err['line']:>4}  {_pad(err['expected'], 13)} -> {_pad(err['predicted'], 13)}"
                f" {err['confidence']:.2f}{route}  {err['text']}"
            )
    return "\n".join(lines)


def cli_main(
    path: str | None,
    as_json: bool,
    *,
    jddc: str | None = None,
    dialogues: str | None = None,
    rules_only: bool = False,
) -> int:
    """``kefu eval intents [FILE] [--jddc SPLIT] [--rules-only] [--json]``: the table (or one JSON
    object) to stdout, problems to stderr."""
    shown = path or str(JDDC_LABELS if jddc else DEFAULT_SET)
    cases: list[IntentCase] | None = None
    if jddc:
        source = Path(dialogues) if dialogues else JDDC_DIALOGUES
        if not source.is_file():
            print(
                f"跳过：未找到 JDDC 对话 {source}（../shared/data 不在此机器上）/ "
                f"skipped: the JDDC dialogues {source} are not here (no ../shared/data)",
                file=sys.stderr,
            )
            return EXIT_OK
        try:
            cases = read_jddc_cases(shown, source, jddc)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{shown}: 无法读取 / cannot read: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        # the JDDC test half is measured by a classifier that learnt from the tuning half (never the test
        # half); the tuning half itself by one that did not learn from it
        exclude: list[str] | None = [] if jddc == "test" else None
        report = evaluate_intents(shown, semantic=not rules_only, cases=cases, exclude=exclude)
    except InputProblems as exc:
        for line_no, message in exc.problems:
            where = f"{shown}: " if line_no == 0 else f"{shown}: line {line_no}: "
            print(where + message, file=sys.stderr)
        print(
            f"{shown}: {len(exc.problems)} 处错误，未评估 / {len(exc.problems)} problem(s), nothing evaluated",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if jddc:
        report.setup["split"] = jddc
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(render(report))
    return EXIT_OK

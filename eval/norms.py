"""Scoring replies against the service norms.

Two uses:

* ``kefu eval norms FILE [--json]`` (``cli_main``): FILE is JSONL, one reply a line,
  ``{"text": str, "first_reply": bool?, "greeted": bool?, "customer_waited_s": number?, "lang": "zh"|"en"?}``
  (``greeted``: the agent greeted earlier in the conversation, so this reply must not greet again).
  Without ``--json`` it prints a table and a per-rule summary; with ``--json`` exactly one object
  ``{"violations": [rule ids], "fixed": str}`` per input line, in order, and nothing else.
  Lines end at "\n" only (U+2028, U+0085 and form feed may occur inside JSON strings). Blank
  lines are skipped. Any bad line: every problem goes to stderr with its line number, nothing to
  stdout, exit code 2.
* Quality inspection of real agent replies (``run_jddc``; ``kefu eval norms --dialogues FILE
  [--json] [--examples N]`` or ``python -m eval.norms --jddc PATH``): every agent turn of a dialogue
  file such as the JDDC sample is checked (the first agent turn of a session as the first reply),
  with per-rule counts and the average time of one check.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompts import PACKAGED_LANGUAGES, CheckContext, FixResult, Norms, Violation, default_norms

EXIT_OK = 0
EXIT_BAD_INPUT = 2
# ../shared/data/jddc-sample/dialogues.jsonl beside the repository; read in place, never copied.
DEFAULT_JDDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "jddc-sample" / "dialogues.jsonl"


@dataclass(frozen=True)
class ReplyCase:
    """One reply to score, from one input line."""

    line: int
    text: str
    context: CheckContext
    lang: str = "zh"


@dataclass(frozen=True)
class ReplyResult:
    case: ReplyCase
    violations: list[Violation]
    fix: FixResult

    @property
    def rule_ids(self) -> list[str]:
        return list(dict.fromkeys(v.rule_id for v in self.violations))


class InputProblems(Exception):
    """The input file has bad lines; ``problems`` holds ``(line, message)``, line 0 for the file."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} bad input line(s)")
        self.problems = problems


def _case_from(line_no: int, raw: str) -> ReplyCase:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"不是有效的 JSON / not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError('应为 JSON 对象 / expected a JSON object like {"text": "..."}')
    text = obj.get("text")
    if not isinstance(text, str):
        raise ValueError('缺少字符串字段 "text" / "text" must be present and a string')
    first = obj.get("first_reply", False)
    if not isinstance(first, bool):
        raise ValueError('"first_reply" 应为 true 或 false / "first_reply" must be true or false')
    greeted = obj.get("greeted", False)
    if not isinstance(greeted, bool):
        raise ValueError('"greeted" 应为 true 或 false / "greeted" must be true or false')
    waited = obj.get("customer_waited_s")
    if waited is not None and (
        isinstance(waited, bool)
        or not isinstance(waited, int | float)
        or not math.isfinite(waited)
        or waited < 0
    ):
        # json.loads accepts NaN and Infinity, which are not waiting times
        raise ValueError(
            '"customer_waited_s" 应为有限的非负数 / "customer_waited_s" must be a finite number >= 0'
        )
    lang = obj.get("lang", "zh")
    if lang not in PACKAGED_LANGUAGES:
        langs = ", ".join(PACKAGED_LANGUAGES)
        raise ValueError(f'"lang" 应为 {langs} 之一 / "lang" must be one of {langs}')
    context = CheckContext(
        first_reply=first, customer_waited_s=None if waited is None else float(waited), greeted=greeted
    )
    return ReplyCase(line=line_no, text=text, context=context, lang=lang)


def read_cases(path: str | Path) -> list[ReplyCase]:
    """Read and validate every line first: a file with any bad line is rejected as a whole."""
    try:
        content = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputProblems([(0, f"无法读取文件 / cannot read the file: {exc}")]) from exc
    cases: list[ReplyCase] = []
    problems: list[tuple[int, str]] = []
    # split at "\n" only: str.splitlines also splits at U+2028, U+0085, \x0c ..., which JSON strings
    # may hold unescaped
    for line_no, raw in enumerate(content.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            cases.append(_case_from(line_no, raw))
        except ValueError as exc:
            problems.append((line_no, str(exc)))
    if problems:
        raise InputProblems(problems)
    return cases


def evaluate(cases: Sequence[ReplyCase], norms: dict[str, Norms] | None = None) -> list[ReplyResult]:
    norms = dict(norms or {})
    results = []
    for case in cases:
        n = norms.get(case.lang) or norms.setdefault(case.lang, default_norms(case.lang))
        results.append(ReplyResult(case, n.check(case.text, case.context), n.fix(case.text, case.context)))
    return results


def per_rule_counts(results: Sequence[ReplyResult]) -> Counter[str]:
    """How many replies break each rule (a reply counts once per rule)."""
    return Counter(rule for r in results for rule in r.rule_ids)


# -- text output ------------------------------------------------------------------------------------


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in s)


def _clip(s: str, width: int) -> str:
    s = " ".join(s.split())
    if _width(s) <= width:
        return s + " " * (width - _width(s))
    out, w = "", 0
    for ch in s:
        cw = _width(ch)
        if w + cw > width - 1:
            break
        out, w = out + ch, w + cw
    return out + "…" + " " * (width - 1 - w)


def render_table(results: Sequence[ReplyResult], norms: Norms | None = None) -> str:
    norms = norms or default_norms("zh")
    lines = [f"{'line':>5}  {_clip('violations', 34)}  text", f"{'-' * 5}  {'-' * 34}  {'-' * 40}"]
    for r in results:
        ids = ", ".join(r.rule_ids) or "ok"
        lines.append(f"{r.case.line:>5}  {_clip(ids, 34)}  {_clip(r.case.text, 60).rstrip()}")
        if r.fix.text != r.case.text:
            lines.append(f"{'':>5}  {_clip('  -> fixed', 34)}  {_clip(r.fix.text, 60).rstrip()}")
    n = len(results)
    flagged = sum(1 for r in results if r.violations)
    counts = per_rule_counts(results)
    lines += ["", f"{'rule':<22} {'severity':<8} {'replies':>7} {'share':>7}  message"]
    rules = list(norms.rules.values())
    known = {rule.id for rule in rules}
    for rule in rules:
        c = counts.get(rule.id, 0)
        message = _summary_message(rule.message, norms)
        share = f"{100 * c / n:.1f}%" if n else "-"
        lines.append(f"{rule.id:<22} {rule.severity:<8} {c:>7} {share:>7}  {message}")
    for rule_id in sorted(set(counts) - known):
        lines.append(f"{rule_id:<22} {'':<8} {counts[rule_id]:>7}")
    pct = f"{100 * flagged / n:.1f}%" if n else "-"
    lines += ["", f"replies: {n}, with violations: {flagged} ({pct})"]
    return "\n".join(lines)


def _summary_message(message: str, norms: Norms) -> str:
    """A rule's message for the summary: the norm variables filled in, the quoted ``{matched}`` cut."""
    head = message.split("{matched}", 1)[0]
    if "{matched}" in message:
        head = head.rstrip(" ：:“\"'「")
    return head.format_map(norms.variables) if "{" in head else head


def cli_main(path: str, as_json: bool) -> int:
    """``kefu eval norms FILE [--json]``: prints to stdout, problems to stderr, returns the exit code."""
    try:
        cases = read_cases(path)
    except InputProblems as exc:
        for line_no, message in exc.problems:
            where = f"{path}: " if line_no == 0 else f"{path}: line {line_no}: "
            print(where + message, file=sys.stderr)
        n = len(exc.problems)
        print(f"未处理任何回复：输入有 {n} 处错误 / nothing scored: {n} bad input line(s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    results = evaluate(cases)
    if as_json:
        out = sys.stdout
        for r in results:
            out.write(json.dumps({"violations": r.rule_ids, "fixed": r.fix.text}, ensure_ascii=False) + "\n")
        out.flush()
    else:
        print(render_table(results))
    return EXIT_OK


# -- JDDC quality inspection ------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentTurn:
    session_id: str
    index: int  # position of the turn in the session
    text: str
    first_reply: bool


def jddc_agent_turns(path: str | Path) -> Iterator[AgentTurn]:
    """The agent turns of a JDDC dialogue file (read in place, never copied), through the one
    conversation reader of ``kefu eval transcripts`` (``eval.transcripts``)."""
    from eval.transcripts import agent_replies, read_conversations

    for conv in read_conversations(path):
        for r in agent_replies(conv):
            yield AgentTurn(r.session_id, r.index, r.text, r.first_reply)


@dataclass
class JddcReport:
    path: str
    turns: int = 0
    flagged: int = 0
    per_rule: dict[str, int] = field(default_factory=dict)
    violations: int = 0
    fixed_clean: int = 0  # flagged replies whose fix has no violation left
    needs_rewording: int = 0  # flagged replies with a violation that fix cannot repair
    check_us_mean: float = 0.0
    check_us_p50: float = 0.0
    check_us_p99: float = 0.0
    fix_us_mean: float = 0.0
    load_ms: float = 0.0
    machine: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    def render(self) -> str:
        n = max(self.turns, 1)
        lines = [
            f"JDDC agent turns: {self.turns} ({self.path})",
            f"replies with at least one violation: {self.flagged} ({100 * self.flagged / n:.1f}%)",
            f"violations: {self.violations}; flagged replies clean after fix: {self.fixed_clean}; "
            f"needing rewording: {self.needs_rewording}",
            "",
            f"{'rule':<22} {'replies':>7} {'share':>7}",
        ]
        for rule_id, c in self.per_rule.items():  # in the order of the norms file
            lines.append(f"{rule_id:<22} {c:>7} {100 * c / max(self.turns, 1):>6.1f}%")
        lines += [
            "",
            f"check per reply: mean {self.check_us_mean:.1f} µs, p50 {self.check_us_p50:.1f} µs, "
            f"p99 {self.check_us_p99:.1f} µs; fix per reply: mean {self.fix_us_mean:.1f} µs",
            f"norms load + compile: {self.load_ms:.1f} ms; machine: {self.machine}",
        ]
        for rule_id, texts in self.examples.items():
            lines += ["", f"examples of {rule_id}:"]
            lines += [f"  - {t}" for t in texts]
        return "\n".join(lines)


def run_jddc(path: str | Path = DEFAULT_JDDC, *, norms: Norms | None = None, examples: int = 0) -> JddcReport:
    """Check every agent turn; time each ``check`` call alone (the norms are loaded before timing)."""
    t0 = time.perf_counter()
    if norms is None:
        from prompts import load_norms

        norms = load_norms("zh")  # a fresh load, so that load + compile time is measured too
    load_ms = (time.perf_counter() - t0) * 1000
    turns = list(jddc_agent_turns(path))
    report = JddcReport(path=str(path), turns=len(turns), load_ms=load_ms, machine=_machine())
    counts: Counter[str] = Counter()
    check_ns: list[int] = []
    fix_ns = 0
    examples_by_rule: dict[str, list[str]] = {}
    for turn in turns:
        # a later turn of the session comes after the agent's first reply: it must not greet again
        ctx = CheckContext(first_reply=turn.first_reply, greeted=not turn.first_reply)
        start = time.perf_counter_ns()
        found = norms.check(turn.text, ctx)
        check_ns.append(time.perf_counter_ns() - start)
        if not found:
            continue
        report.flagged += 1
        report.violations += len(found)
        if any(not v.fixable for v in found):
            report.needs_rewording += 1
        for rule_id in dict.fromkeys(v.rule_id for v in found):
            counts[rule_id] += 1
            if examples <= 0:
                continue
            bucket = examples_by_rule.setdefault(rule_id, [])
            if len(bucket) < examples:
                marks = "; ".join(
                    f"{v.matched!r}@{v.span[0]}" for v in found if v.rule_id == rule_id and v.matched
                )
                bucket.append(f"{turn.text.strip()}  [{marks}]" if marks else turn.text.strip())
        start = time.perf_counter_ns()
        fixed = norms.fix(turn.text, ctx)
        fix_ns += time.perf_counter_ns() - start
        if not fixed.violations:
            report.fixed_clean += 1
    check_ns.sort()
    if check_ns:
        report.check_us_mean = sum(check_ns) / len(check_ns) / 1000
        report.check_us_p50 = check_ns[len(check_ns) // 2] / 1000
        report.check_us_p99 = check_ns[min(len(check_ns) - 1, int(len(check_ns) * 0.99))] / 1000
    report.fix_us_mean = fix_ns / max(report.flagged, 1) / 1000
    report.per_rule = {rule_id: counts.get(rule_id, 0) for rule_id in norms.rules}
    report.examples = examples_by_rule
    return report


def _machine() -> str:
    import os

    py = platform.python_version()
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {py}, {platform.system()}"


def jddc_main(path: str, as_json: bool, examples: int = 0) -> int:
    """``--jddc PATH``: the quality inspection of real agent replies; exit 2 when the file is absent."""
    if not Path(path).is_file():
        hint = "the JDDC sample lives in ../shared/data/jddc-sample/"
        print(f"{path}: 文件不存在 / file not found ({hint})", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = run_jddc(path, examples=examples)  # loads the norms once (and times the load)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.render())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.norms", description="Score replies against the service norms."
    )
    parser.add_argument(
        "file", nargs="?", help="JSONL of replies: {text, first_reply?, greeted?, customer_waited_s?, lang?}"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per input line")
    parser.add_argument(
        "--jddc", metavar="PATH", nargs="?", const=str(DEFAULT_JDDC), help="inspect JDDC agent turns"
    )
    parser.add_argument(
        "--examples", type=int, default=0, help="with --jddc: show N flagged replies per rule"
    )
    args = parser.parse_args(argv)
    if args.jddc:
        return jddc_main(args.jddc, args.json, args.examples)
    if not args.file:
        parser.error("give FILE or --jddc PATH")
    return cli_main(args.file, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

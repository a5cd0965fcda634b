"""The service norms as data: model, strict loader and the conveniences the service needs.

The norms file (``prompts/norms_zh.toml``, ``prompts/norms_en.toml`` or an operator's copy) is read
with ``tomllib`` and validated completely before anything is used: every unknown key, missing key,
wrong type, bad time or invalid regular expression is reported with its dotted key, in Chinese and
English, and nothing is loaded. A loaded ``Norms`` is immutable; its checker (compiled regexes) is
built once, at load time.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property, lru_cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prompts.errors import NormsFileError, NormsProblem, TemplateError
from prompts.templates import NORM_VARIABLES, REQUIRED_TEMPLATES, Template, template_fields

if TYPE_CHECKING:
    from prompts.checker import CheckContext, FixResult, NormsChecker, Violation

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")

# The built-in rules. Each has its own logic in the checker; the norms file gives its words.
BUILTIN_RULES: tuple[str, ...] = (
    "greeting",
    "impolite",
    "vague",
    "filler",
    "too_short",
    "rude",
    "wait_without_apology",
    "late_without_apology",
    "blunt_refusal",
)
# Built-in rules a norms file may leave out (added after the first release: an operator's older copy
# still loads, without them).
OPTIONAL_BUILTIN_RULES: tuple[str, ...] = ("repeated_greeting", "stacked_apology")
# Rules that ``fix`` repairs mechanically; the others need rewording by a person or the LLM.
FIXABLE_RULES: frozenset[str] = frozenset(
    {
        "greeting",
        "impolite",
        "filler",
        "too_short",
        "wait_without_apology",
        "late_without_apology",
        "repeated_greeting",
        "stacked_apology",
    }
)

_COMMON_KEYS = ("enabled", "severity", "message", "suggestion", "instruction")
_LEXICON_KEYS = ("terms", "patterns", "allow", "unless")
_RULE_KEYS: dict[str, tuple[str, ...]] = {
    "greeting": ("markers", "window", "insert"),
    "impolite": ("markers", "insert", "insert_greeted", "replace_opening"),
    "too_short": (
        "min_length",
        "unit",
        "acknowledgements",
        "softeners",
        "expansions",
        "default_expansion",
    ),
    "late_without_apology": ("markers", "window", "insert"),
    "repeated_greeting": ("markers",),
    "wait_without_apology": (*_LEXICON_KEYS, "explanations", "insert", "insert_at"),
}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE_ID = re.compile(r"[a-z][a-z0-9_]*")
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_OPENCC_CONFIGS = ("", "s2t", "s2tw", "s2twp", "s2hk")
PACKAGED_LANGUAGES: tuple[str, ...] = ("zh", "en")
DEFAULT_INSERT_SEPARATOR = "，"
DEFAULT_SENTENCE_END = "。！？.!?~～"


@dataclass(frozen=True)
class NormRule:
    """One rule of the norms. Which fields matter depends on the rule (see docs/norms.md)."""

    id: str
    severity: Severity
    message: str
    suggestion: str
    instruction: str
    enabled: bool = True
    # lexicon rules (vague, filler, rude, blunt_refusal, wait_without_apology, custom rules)
    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    # wait_without_apology: regexes for a reason given for the wait (the rule is then silent), and
    # where the apology goes: at the start of the clause or of the sentence
    explanations: tuple[str, ...] = ()
    insert_at: Literal["clause", "sentence"] = "clause"
    # greeting, impolite, late_without_apology
    markers: tuple[str, ...] = ()
    window: int = 0
    insert: str = ""
    # impolite: what is inserted in a later reply, which must not greet again (default: insert)
    insert_greeted: str = ""
    # impolite: an impolite opening word replaced by a polite one instead of inserting (你好 -> 您好)
    replace_opening: Mapping[str, str] = field(default_factory=dict)
    # too_short
    min_length: int = 0
    unit: Literal["char", "word"] = "char"
    acknowledgements: tuple[str, ...] = ()
    softeners: tuple[str, ...] = ()
    expansions: Mapping[str, str] = field(default_factory=dict)
    default_expansion: str = ""

    @property
    def fixable(self) -> bool:
        return self.id in FIXABLE_RULES


@dataclass(frozen=True)
class WorkingHours:
    """When the online service is staffed; outside these hours the auto-reply answers."""

    timezone: str
    days: frozenset[int]  # 0 = Monday
    periods: tuple[tuple[time, time], ...]  # sorted, non-overlapping, [start, end)
    closed_dates: frozenset[date] = frozenset()
    day_names: tuple[str, ...] = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
    through: str = "至"
    separator: str = "、"
    display_format: str = "{days} {periods}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _local(self, when: datetime) -> datetime:
        # A naive datetime is taken to be local time in the service's time zone.
        if when.tzinfo is None:
            return when.replace(tzinfo=self.zone)
        return when.astimezone(self.zone)

    def _open_on(self, day: date) -> bool:
        return day.weekday() in self.days and day not in self.closed_dates

    def is_open(self, when: datetime) -> bool:
        local = self._local(when)
        if not self._open_on(local.date()):
            return False
        now = local.time().replace(tzinfo=None)
        return any(start <= now < end for start, end in self.periods)

    def next_open(self, when: datetime) -> datetime:
        """``when`` itself if the service is open then, else the start of the next opening period."""
        local = self._local(when)
        if self.is_open(local):
            return local
        for offset in range(0, 400):
            day = local.date() + timedelta(days=offset)
            if not self._open_on(day):
                continue
            for start, _end in self.periods:
                candidate = datetime.combine(day, start, tzinfo=self.zone)
                if candidate > local:
                    return candidate
        raise ValueError("no opening time within 400 days; check hours.days and hours.closed_dates")

    def closed_since(self, when: datetime) -> datetime | None:
        """When the service last closed before ``when`` (the end of the last opening period), or None
        while it is open. A message written since then waits for the next opening."""
        local = self._local(when)
        if self.is_open(local):
            return None
        for offset in range(0, 400):
            day = local.date() - timedelta(days=offset)
            if not self._open_on(day):
                continue
            for _start, end in reversed(self.periods):
                candidate = datetime.combine(day, end, tzinfo=self.zone)
                if candidate <= local:
                    return candidate
        return None

    def describe(self) -> str:
        """The hours in words, e.g. ``周一至周六 08:30-12:00、13:00-17:30（北京时间）``."""
        days = sorted(self.days)
        runs: list[list[int]] = []
        for d in days:
            if runs and runs[-1][-1] == d - 1:
                runs[-1].append(d)
            else:
                runs.append([d])
        day_text = self.separator.join(
            self.day_names[r[0]]
            if len(r) == 1
            else f"{self.day_names[r[0]]}{self.through}{self.day_names[r[-1]]}"
            for r in runs
        )
        period_text = self.separator.join(f"{s:%H:%M}-{e:%H:%M}" for s, e in self.periods)
        return self.display_format.format(days=day_text, periods=period_text)


@dataclass(frozen=True)
class Routing:
    """Where things go after the conversation (the seed's duties 4-6 and norms 14-15)."""

    complaint_department: str
    complaint_reply_hours: int
    suggestion_department: str
    customer_info_department: str
    record_form: str
    record_recipient: str
    # norm 9: who a question is referred to when the agent cannot answer it, and when the customer hears back
    escalation_responsible: str
    escalation_follow_up: str


@dataclass(frozen=True)
class Grounding:
    """What a drafted reply must not claim unless its cited snippets say it (the guard's check)."""

    # numbers with their units: prices, dates, durations, quantities
    fact_pattern: str
    # promises an agent may only make when the knowledge base makes them
    promise_terms: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Norms:
    """The loaded norms of one language."""

    language: str
    source: str
    greeting: str
    closing: str
    survey: str
    polite_words: tuple[str, ...]
    wait_limit_s: float
    hours: WorkingHours
    routing: Routing
    grounding: Grounding
    rules: Mapping[str, NormRule]
    templates: Mapping[str, Template]
    to_traditional: str = ""
    word_boundaries: bool = False
    list_separator: str = "、"
    # put between a word and a phrase that ``fix`` inserts right after it ("您好" -> "您好，抱歉...")
    insert_separator: str = DEFAULT_INSERT_SEPARATOR
    # marks that end a sentence (kept when ``fix`` removes the last clause; where inserted apologies go)
    sentence_end: str = DEFAULT_SENTENCE_END

    # -- checking -----------------------------------------------------------------------------------

    @cached_property
    def checker(self) -> NormsChecker:
        from prompts.checker import NormsChecker

        return NormsChecker(self)

    def check(self, text: str, context: CheckContext | None = None) -> list[Violation]:
        return self.checker.check(text, context)

    def fix(self, text: str, context: CheckContext | None = None) -> FixResult:
        return self.checker.fix(text, context)

    # -- templates ----------------------------------------------------------------------------------

    def rule_instructions(self) -> str:
        """The enabled rules as numbered instructions, as the system prompt shows them."""
        base = self._base_variables
        lines = []
        for i, rule in enumerate((r for r in self.rules.values() if r.enabled), start=1):
            lines.append(f"{i}. {rule.instruction.format_map(base)}")
        return "\n".join(lines)

    @cached_property
    def _base_variables(self) -> dict[str, str]:
        r = self.routing
        wait = int(self.wait_limit_s) if float(self.wait_limit_s).is_integer() else self.wait_limit_s
        return {
            "greeting": self.greeting,
            "closing": self.closing,
            "survey": self.survey,
            "polite_words": self.list_separator.join(self.polite_words),
            "working_hours": self.hours.describe(),
            "wait_limit_s": str(wait),
            "complaint_department": r.complaint_department,
            "complaint_reply_hours": str(r.complaint_reply_hours),
            "suggestion_department": r.suggestion_department,
            "customer_info_department": r.customer_info_department,
            "record_form": r.record_form,
            "record_recipient": r.record_recipient,
        }

    @cached_property
    def variables(self) -> Mapping[str, str]:
        """The norm variables every template may use (``{greeting}``, ``{rules}``, ...)."""
        return {**self._base_variables, "rules": self.rule_instructions()}

    def template(self, name: str) -> Template:
        try:
            return self.templates[name]
        except KeyError:
            known = ", ".join(self.templates)
            raise TemplateError(
                name,
                None,
                f"没有名为 {name} 的模板（可用：{known}）",
                f"no template named {name} (known: {known})",
            ) from None

    def render(self, name: str, /, **values: object) -> str:
        """Render template ``name``; ``values`` must be exactly its placeholders."""
        return self.template(name).render(values, self.variables)

    def system_prompt(self) -> str:
        """The LLM system prompt, written from the rules (they are written once, in the norms)."""
        return self.render("system_prompt")

    # -- hours and auto-replies ---------------------------------------------------------------------

    def is_open(self, when: datetime) -> bool:
        return self.hours.is_open(when)

    def next_open(self, when: datetime) -> datetime:
        return self.hours.next_open(when)

    def auto_reply(self, when: datetime, *, busy: bool = False) -> str | None:
        """The automatic reply due at ``when``: out of hours, busy, or none (an agent answers)."""
        if not self.hours.is_open(when):
            return self.render("auto_out_of_hours")
        if busy:
            return self.render("auto_busy")
        return None


# -- loading ----------------------------------------------------------------------------------------


def packaged_norms_path(language: str) -> Path:
    return Path(str(resources.files("prompts").joinpath(f"norms_{language}.toml")))


def load_norms(source: str | Path = "zh") -> Norms:
    """Load and validate norms: a packaged language (``"zh"``, ``"en"``) or a TOML file path."""
    if isinstance(source, str) and source in PACKAGED_LANGUAGES:
        path = packaged_norms_path(source)
    else:
        path = Path(source)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NormsFileError(
            name,
            [
                NormsProblem(
                    "(file)", f"无法读取文件：{exc.strerror}", f"cannot read the file: {exc.strerror}"
                )
            ],
        ) from exc
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise NormsFileError(
            name,
            [
                NormsProblem(
                    "(file)",
                    f"文件不是 UTF-8 编码（第 {exc.start} 字节）：请另存为 UTF-8",
                    f"the file is not UTF-8 (byte {exc.start}): save it as UTF-8",
                )
            ],
        ) from exc
    return loads_norms(text, source=name)


def loads_norms(text: str, *, source: str = "<string>") -> Norms:
    """Parse and validate norms from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NormsFileError(
            source, [NormsProblem("(toml)", f"TOML 语法错误：{exc}", f"TOML syntax error: {exc}")]
        ) from exc
    problems: list[NormsProblem] = []
    norms = _build(data, source, problems)
    if problems or norms is None:
        raise NormsFileError(source, problems)
    norms.checker  # noqa: B018  (compile every regex now, not on the first request)
    return norms


@lru_cache(maxsize=4)
def default_norms(language: str = "zh") -> Norms:
    """The packaged norms of ``language``, loaded once per process."""
    if language not in PACKAGED_LANGUAGES:
        raise NormsFileError(
            f"norms_{language}.toml",
            [
                NormsProblem(
                    "language",
                    f"没有内置的 {language} 规范（可用：{', '.join(PACKAGED_LANGUAGES)}）",
                    f"no packaged norms for {language} (available: {', '.join(PACKAGED_LANGUAGES)})",
                )
            ],
        )
    return load_norms(language)


_MISSING: Any = object()


class _Reader:
    """Reads one TOML table, records problems under dotted keys and flags keys it never read."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[NormsProblem]) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.read: list[str] = []

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def problem(self, key: str, zh: str, en: str) -> None:
        self.problems.append(NormsProblem(key, zh, en))

    def _get(self, k: str, required: bool) -> Any:
        if k not in self.read:
            self.read.append(k)
        if k not in self.data:
            if required:
                self.problem(self.key(k), "缺少必填项", "required key is missing")
            return _MISSING
        return self.data[k]

    def string(self, k: str, default: str | None = None, *, allow_empty: bool = False) -> str:
        v = self._get(k, default is None)
        if v is _MISSING:
            return default or ""
        if not isinstance(v, str):
            self.problem(self.key(k), f"应为字符串，实际为 {_type(v)}", f"must be a string, not {_type(v)}")
            return default or ""
        if not allow_empty and not v.strip():
            self.problem(self.key(k), "不能为空", "must not be empty")
        return v

    def strings(self, k: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        v = self._get(k, default is None)
        if v is _MISSING:
            return default or ()
        if not isinstance(v, list):
            self.problem(
                self.key(k),
                f"应为字符串列表，实际为 {_type(v)}",
                f"must be a list of strings, not {_type(v)}",
            )
            return ()
        out: list[str] = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or not item.strip():
                self.problem(f"{self.key(k)}[{i}]", "应为非空字符串", "must be a non-empty string")
            else:
                out.append(item)
        return tuple(out)

    def integer(self, k: str, default: int | None = None, *, minimum: int = 0) -> int:
        v = self._get(k, default is None)
        if v is _MISSING:
            return default or 0
        if not isinstance(v, int) or isinstance(v, bool):
            self.problem(self.key(k), f"应为整数，实际为 {_type(v)}", f"must be an integer, not {_type(v)}")
            return default or 0
        if v < minimum:
            self.problem(self.key(k), f"不能小于 {minimum}", f"must be at least {minimum}")
        return v

    def number(self, k: str, *, minimum: float = 0.0) -> float:
        v = self._get(k, True)
        if v is _MISSING:
            return 0.0
        if not isinstance(v, int | float) or isinstance(v, bool):
            self.problem(self.key(k), f"应为数字，实际为 {_type(v)}", f"must be a number, not {_type(v)}")
            return 0.0
        if v <= minimum:
            self.problem(self.key(k), f"必须大于 {minimum:g}", f"must be greater than {minimum:g}")
        return float(v)

    def boolean(self, k: str, default: bool) -> bool:
        v = self._get(k, False)
        if v is _MISSING:
            return default
        if not isinstance(v, bool):
            self.problem(
                self.key(k),
                f"应为 true 或 false，实际为 {_type(v)}",
                f"must be true or false, not {_type(v)}",
            )
            return default
        return v

    def table(self, k: str, *, required: bool = True) -> _Reader | None:
        v = self._get(k, required)
        if v is _MISSING:
            return None
        if not isinstance(v, dict):
            self.problem(
                self.key(k),
                f"应为表（[{self.key(k)}]），实际为 {_type(v)}",
                f"must be a table, not {_type(v)}",
            )
            return None
        return _Reader(v, self.key(k), self.problems)

    def finish(self) -> None:
        for k in self.data:
            if k not in self.read:
                allowed = ", ".join(self.read)
                self.problem(
                    self.key(k),
                    f"未知的键（拼写错误？可用的键：{allowed}）",
                    f"unknown key (a typo? allowed keys: {allowed})",
                )


def _type(v: object) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}.get(
        type(v), type(v).__name__
    )


def _check_fields(r: _Reader, key: str, text: str, allowed: frozenset[str]) -> None:
    """Report fields of a format text that are not allowed there."""
    try:
        names = template_fields(text)
    except ValueError as exc:
        r.problem(
            r.key(key), f"占位符写法错误：{exc}（字面的花括号请写成 {{{{ }}}}）", f"bad placeholder: {exc}"
        )
        return
    for name in names:
        if name not in allowed:
            shown = ", ".join(sorted(allowed)) or "—"
            r.problem(
                r.key(key),
                f"未知的占位符 {{{name}}}（此处可用：{shown}）",
                f"unknown placeholder {{{name}}} (allowed here: {shown})",
            )


def _check_regexes(r: _Reader, key: str, patterns: tuple[str, ...], *, joined: bool = False) -> None:
    ok = True
    for i, p in enumerate(patterns):
        try:
            re.compile(p)
            re.compile(f"(?:{p})")
        except re.error as exc:
            ok = False
            r.problem(f"{r.key(key)}[{i}]", f"正则表达式无效：{exc}", f"invalid regular expression: {exc}")
    if joined and ok and len(patterns) > 1:
        # The checker joins a rule's patterns into one alternation: a group name used twice (or a
        # conditional on another pattern's group) only fails there.
        try:
            re.compile("|".join(f"(?:{p})" for p in patterns))
        except re.error as exc:
            r.problem(
                r.key(key),
                f"这些正则表达式会合并成一个，合并后无效：{exc}（每个命名组的名字只能用一次）",
                f"the patterns are joined into one regular expression, which is invalid: {exc} "
                "(use each group name once)",
            )


def _build(data: Mapping[str, Any], source: str, problems: list[NormsProblem]) -> Norms | None:
    top = _Reader(data, "", problems)
    language = top.string("language")
    to_traditional = top.string("to_traditional", "", allow_empty=True)
    if to_traditional not in _OPENCC_CONFIGS:
        top.problem(
            "to_traditional",
            f"应为 {', '.join(repr(c) for c in _OPENCC_CONFIGS)} 之一",
            f"must be one of {', '.join(repr(c) for c in _OPENCC_CONFIGS)}",
        )
    word_boundaries = top.boolean("word_boundaries", False)
    list_separator = top.string("list_separator", "、")
    insert_separator = top.string("insert_separator", DEFAULT_INSERT_SEPARATOR, allow_empty=True)
    sentence_end = top.string("sentence_end", DEFAULT_SENTENCE_END)
    greeting = top.string("greeting")
    closing = top.string("closing")
    survey = top.string("survey")
    polite_words = top.strings("polite_words")
    wait_limit_s = top.number("wait_limit_s")
    hours = _build_hours(top.table("hours"))
    routing = _build_routing(top.table("routing"))
    grounding = _build_grounding(top.table("grounding"))
    rules = _build_rules(top.table("rules"))
    templates = _build_templates(top.table("templates"))
    top.finish()
    if hours is None or routing is None or grounding is None:
        return None
    return Norms(
        language=language,
        source=source,
        greeting=greeting,
        closing=closing,
        survey=survey,
        polite_words=polite_words,
        wait_limit_s=wait_limit_s,
        hours=hours,
        routing=routing,
        grounding=grounding,
        rules=rules,
        templates=templates,
        to_traditional=to_traditional,
        word_boundaries=word_boundaries,
        list_separator=list_separator,
        insert_separator=insert_separator,
        sentence_end=sentence_end,
    )


def _parse_time(r: _Reader, key: str, value: object) -> time | None:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        r.problem(
            key, f'时间应写成 "HH:MM"，实际为 {value!r}', f'a time must be written "HH:MM", not {value!r}'
        )
        return None
    h, m = value.split(":")
    return time(int(h), int(m))


def _build_hours(r: _Reader | None) -> WorkingHours | None:
    if r is None:
        return None
    tz = r.string("timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        r.problem(
            r.key("timezone"),
            f"未知的时区 {tz!r}（例如 Asia/Shanghai）",
            f"unknown time zone {tz!r} (e.g. Asia/Shanghai)",
        )
        tz = "UTC"
    days: set[int] = set()
    for i, d in enumerate(r.strings("days")):
        if d.lower() not in _DAYS:
            r.problem(
                f"{r.key('days')}[{i}]",
                f"未知的星期 {d!r}（可用：{', '.join(_DAYS)}）",
                f"unknown day {d!r} (use {', '.join(_DAYS)})",
            )
        else:
            days.add(_DAYS.index(d.lower()))
    if not days and "days" in r.data:
        r.problem(r.key("days"), "至少需要一个工作日", "needs at least one working day")
    periods: list[tuple[time, time]] = []
    raw_periods = r._get("periods", True)
    if raw_periods is not _MISSING:
        if not isinstance(raw_periods, list) or not raw_periods:
            r.problem(
                r.key("periods"),
                '应为 [["开始", "结束"], ...] 形式的非空列表',
                'must be a non-empty list of ["start", "end"]',
            )
        else:
            for i, p in enumerate(raw_periods):
                key = f"{r.key('periods')}[{i}]"
                if not isinstance(p, list) or len(p) != 2:
                    r.problem(key, '应为 ["HH:MM", "HH:MM"]', 'must be ["HH:MM", "HH:MM"]')
                    continue
                start, end = _parse_time(r, key, p[0]), _parse_time(r, key, p[1])
                if start is None or end is None:
                    continue
                if start >= end:
                    r.problem(key, "开始时间必须早于结束时间", "the start must be before the end")
                    continue
                periods.append((start, end))
            periods.sort()
            for (s1, e1), (s2, _e2) in pairwise(periods):
                if s2 < e1:
                    r.problem(
                        r.key("periods"),
                        f"时段重叠：{s1:%H:%M} 与 {s2:%H:%M}",
                        f"periods overlap: {s1:%H:%M} and {s2:%H:%M}",
                    )
    closed: set[date] = set()
    raw_closed = r._get("closed_dates", False)
    if raw_closed is not _MISSING:
        if not isinstance(raw_closed, list):
            r.problem(r.key("closed_dates"), "应为日期列表", "must be a list of dates")
        else:
            for i, d in enumerate(raw_closed):
                if isinstance(d, date) and not isinstance(d, datetime):
                    closed.add(d)
                    continue
                try:
                    closed.add(date.fromisoformat(str(d)))
                except ValueError:
                    r.problem(
                        f"{r.key('closed_dates')}[{i}]",
                        f"日期应写成 YYYY-MM-DD，实际为 {d!r}",
                        f"a date must be YYYY-MM-DD, not {d!r}",
                    )
    display = r.table("display")
    day_names: tuple[str, ...] = WorkingHours.day_names
    through, separator, display_format = (
        WorkingHours.through,
        WorkingHours.separator,
        WorkingHours.display_format,
    )
    if display is not None:
        day_names = display.strings("day_names")
        if len(day_names) != 7 and "day_names" in display.data:
            display.problem(
                display.key("day_names"), "需要 7 个名称（周一到周日）", "needs 7 names, Monday to Sunday"
            )
            day_names = WorkingHours.day_names
        through = display.string("through")
        separator = display.string("separator")
        display_format = display.string("format")
        _check_fields(display, "format", display_format, frozenset({"days", "periods"}))
        display.finish()
    r.finish()
    return WorkingHours(
        timezone=tz,
        days=frozenset(days),
        periods=tuple(periods),
        closed_dates=frozenset(closed),
        day_names=day_names,
        through=through,
        separator=separator,
        display_format=display_format,
    )


def _build_routing(r: _Reader | None) -> Routing | None:
    if r is None:
        return None
    routing = Routing(
        complaint_department=r.string("complaint_department"),
        complaint_reply_hours=r.integer("complaint_reply_hours", minimum=1),
        suggestion_department=r.string("suggestion_department"),
        customer_info_department=r.string("customer_info_department"),
        record_form=r.string("record_form"),
        record_recipient=r.string("record_recipient"),
        escalation_responsible=r.string("escalation_responsible"),
        escalation_follow_up=r.string("escalation_follow_up"),
    )
    r.finish()
    return routing


def _build_grounding(r: _Reader | None) -> Grounding | None:
    if r is None:
        return None
    pattern = r.string("fact_pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        r.problem(r.key("fact_pattern"), f"正则表达式无效：{exc}", f"invalid regular expression: {exc}")
    grounding = Grounding(fact_pattern=pattern, promise_terms=r.strings("promise_terms"))
    r.finish()
    return grounding


_TEXT_VARIABLES = NORM_VARIABLES - {"rules"}


def _build_rules(r: _Reader | None) -> dict[str, NormRule]:
    rules: dict[str, NormRule] = {}
    if r is None:
        return rules
    for rule_id in BUILTIN_RULES:
        if rule_id not in r.data:
            r.problem(
                r.key(rule_id),
                "缺少内置规则（如不需要，请设置 enabled = false）",
                "built-in rule is missing (set enabled = false to turn it off)",
            )
    for rule_id in r.data:
        rr = r.table(rule_id)
        if rr is None:
            continue
        if not _RULE_ID.fullmatch(rule_id):
            r.problem(
                r.key(rule_id),
                "规则 id 只能用小写字母、数字和下划线",
                "a rule id may use lower-case letters, digits and _ only",
            )
        rule = _build_rule(rule_id, rr)
        rr.finish()
        rules[rule_id] = rule
    r.finish()
    return rules


def _build_rule(rule_id: str, r: _Reader) -> NormRule:
    kind_keys = _RULE_KEYS.get(rule_id, _LEXICON_KEYS)
    severity = r.string("severity")
    if severity and severity not in SEVERITIES:
        r.problem(
            r.key("severity"),
            f"应为 {' / '.join(SEVERITIES)} 之一",
            f"must be one of {', '.join(SEVERITIES)}",
        )
        severity = "warning"
    message = r.string("message")
    suggestion = r.string("suggestion")
    instruction = r.string("instruction")
    for key, text in (("message", message), ("suggestion", suggestion)):
        _check_fields(r, key, text, _TEXT_VARIABLES | {"matched"})
    _check_fields(r, "instruction", instruction, _TEXT_VARIABLES)
    values: dict[str, Any] = {
        "id": rule_id,
        "severity": cast(Severity, severity),
        "message": message,
        "suggestion": suggestion,
        "instruction": instruction,
        "enabled": r.boolean("enabled", True),
    }
    if "terms" in kind_keys:
        values["terms"] = r.strings("terms", ())
        values["patterns"] = r.strings("patterns", ())
        values["allow"] = r.strings("allow", ())
        values["unless"] = r.strings("unless", ())
        _check_regexes(r, "patterns", values["patterns"], joined=True)
        _check_regexes(r, "allow", values["allow"])
        if not values["terms"] and not values["patterns"]:
            r.problem(
                r.key("terms"),
                "词表规则至少需要 terms 或 patterns 之一",
                "a lexicon rule needs terms or patterns",
            )
    if "markers" in kind_keys:
        values["markers"] = r.strings("markers")
    if "window" in kind_keys:
        values["window"] = r.integer("window", minimum=1)
    if "explanations" in kind_keys:
        values["explanations"] = r.strings("explanations", ())
        _check_regexes(r, "explanations", values["explanations"])
    if "insert" in kind_keys:
        values["insert"] = r.string("insert")
        _check_fields(r, "insert", values["insert"], _TEXT_VARIABLES)
    if "insert_greeted" in kind_keys:
        values["insert_greeted"] = r.string("insert_greeted", "")
        _check_fields(r, "insert_greeted", values["insert_greeted"], _TEXT_VARIABLES)
    if "insert_at" in kind_keys:
        insert_at = r.string("insert_at", "clause")
        if insert_at not in ("clause", "sentence"):
            r.problem(r.key("insert_at"), "应为 clause 或 sentence", "must be clause or sentence")
            insert_at = "clause"
        values["insert_at"] = insert_at
    if "replace_opening" in kind_keys:
        replacements: dict[str, str] = {}
        rr = r.table("replace_opening", required=False)
        if rr is not None:
            for word in rr.data:
                if not word.strip():
                    rr.problem(rr.key(word), "不能为空", "must not be empty")
                    rr.read.append(word)
                    continue
                replacements[word] = rr.string(word)
                _check_fields(rr, word, replacements[word], _TEXT_VARIABLES)
            rr.finish()
        values["replace_opening"] = replacements
    if rule_id == "too_short":
        values["min_length"] = r.integer("min_length", minimum=1)
        unit = r.string("unit", "char")
        if unit not in ("char", "word"):
            r.problem(r.key("unit"), "应为 char 或 word", "must be char or word")
            unit = "char"
        values["unit"] = unit
        acks = r.strings("acknowledgements")
        values["acknowledgements"] = acks
        values["softeners"] = r.strings("softeners", ())
        expansions: dict[str, str] = {}
        er = r.table("expansions", required=False)
        if er is not None:
            for ack in er.data:
                expansions[ack] = er.string(ack)
                _check_fields(er, ack, expansions[ack], _TEXT_VARIABLES)
                if ack not in acks:
                    er.problem(
                        er.key(ack), "不在 acknowledgements 列表中", "is not listed in acknowledgements"
                    )
            er.finish()
        values["expansions"] = expansions
        values["default_expansion"] = r.string("default_expansion")
        _check_fields(r, "default_expansion", values["default_expansion"], _TEXT_VARIABLES)
    return NormRule(**values)


def _build_templates(r: _Reader | None) -> dict[str, Template]:
    templates: dict[str, Template] = {}
    if r is None:
        return templates
    for name in REQUIRED_TEMPLATES:
        if name not in r.data:
            r.problem(r.key(name), "缺少必需的模板", "required template is missing")
    for name in r.data:
        tr = r.table(name)
        if tr is None:
            continue
        text = tr.string("text")
        used_by = tr.string("used_by")
        placeholders = tr.strings("placeholders", ())
        output = tr.string("output", "")
        tr.finish()
        try:
            fields = template_fields(text)
        except ValueError as exc:
            tr.problem(
                tr.key("text"),
                f"占位符写法错误：{exc}（字面的花括号请写成 {{{{ }}}}）",
                f"bad placeholder: {exc}",
            )
            continue
        for i, p in enumerate(placeholders):
            key = f"{tr.key('placeholders')}[{i}]"
            if p in NORM_VARIABLES:
                tr.problem(
                    key,
                    f"{p} 由规范自动填写，不要列为占位符",
                    f"{p} is filled by the norms; do not list it as a placeholder",
                )
            elif p not in fields:
                tr.problem(
                    key,
                    f"声明了占位符 {p}，但正文没有使用",
                    f"placeholder {p} is declared but not used in text",
                )
        for f in fields:
            if f not in placeholders and f not in NORM_VARIABLES:
                tr.problem(
                    tr.key("text"),
                    f"使用了未声明的占位符 {{{f}}}（请加入 placeholders）",
                    f"uses {{{f}}}, which is not declared (add it to placeholders)",
                )
        templates[name] = Template(
            name=name, text=text, used_by=used_by, placeholders=placeholders, output=output
        )
    r.finish()
    return templates

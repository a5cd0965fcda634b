"""Intent rules as data (``intents_zh.toml``) with a strict loader."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from prompts.errors import NormsFileError, NormsProblem
from prompts.textnorm import normalize

INTENTS = (
    "inquiry",
    "order",
    "after_sales",
    "complaint",
    "suggestion",
    "customer_info",
    "chit_chat",
    "restricted",
    "closing",
)


@dataclass(frozen=True)
class IntentRule:
    label: str
    weight: float
    terms: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, folded: str) -> int:
        return sum(1 for t in self.terms if t in folded) + sum(1 for p in self.patterns if p.search(folded))


@dataclass(frozen=True)
class Focus:
    ask: tuple[str, ...]
    prefer: tuple[str, ...]


@dataclass(frozen=True)
class IntentRules:
    language: str
    default: str
    order: tuple[str, ...]
    rules: dict[str, IntentRule]
    focus: tuple[Focus, ...] = ()

    def focus_terms(self, text: str) -> tuple[str, ...]:
        """Words an answer sentence should contain to answer what the customer asks (price, time, ...)."""
        folded = normalize(text).text
        out: list[str] = []
        for f in self.focus:
            if any(a in folded for a in f.ask):
                out.extend(p for p in f.prefer if p not in out)
        return tuple(out)

    def classify(self, text: str) -> tuple[str, float]:
        """The best matching intent and its confidence; the default with its weight when none matches."""
        folded = normalize(text).text
        best: tuple[float, int, str] | None = None
        for rank, label in enumerate(self.order):
            rule = self.rules[label]
            hits = rule.matches(folded)
            if not hits:
                continue
            score = min(0.99, rule.weight + 0.05 * (hits - 1))
            if best is None or (score, -rank) > (best[0], -best[1]):
                best = (score, rank, label)
        if best is None:
            return self.default, self.rules[self.default].weight if self.default in self.rules else 0.5
        return best[2], round(best[0], 3)


def _problem(key: str, zh: str, en: str) -> NormsProblem:
    return NormsProblem(key=key, message_zh=zh, message_en=en)


def load_intents(path: str | Path) -> IntentRules:
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise NormsFileError(
            source, [_problem("", f"无法读取意图规则文件：{e}", f"cannot read the intent rules: {e}")]
        ) from e
    problems: list[NormsProblem] = []
    rules: dict[str, IntentRule] = {}
    for label, spec in (data.get("intents") or {}).items():
        key = f"intents.{label}"
        if label not in INTENTS:
            problems.append(
                _problem(key, f"未知意图 {label}", f"unknown intent {label!r}; use one of {INTENTS}")
            )
            continue
        weight = spec.get("weight", 0.5)
        if not isinstance(weight, int | float) or not 0 < weight <= 1:
            problems.append(_problem(f"{key}.weight", "权重必须在 0 到 1 之间", "weight must be in (0, 1]"))
            continue
        terms = spec.get("terms", [])
        pats = spec.get("patterns", [])
        if not isinstance(terms, list) or not all(isinstance(x, str) and x for x in terms):
            problems.append(
                _problem(
                    f"{key}.terms", "terms 必须是非空字符串列表", "terms must be a list of non-empty strings"
                )
            )
            continue
        compiled = []
        for i, p in enumerate(pats if isinstance(pats, list) else [None]):
            try:
                if not isinstance(p, str):
                    raise re.error("patterns must be strings")
                compiled.append(re.compile(p))
            except re.error as e:
                problems.append(
                    _problem(
                        f"{key}.patterns[{i}]", f"正则表达式无效：{e}", f"invalid regular expression: {e}"
                    )
                )
        rules[label] = IntentRule(
            label, float(weight), tuple(normalize(x).text for x in terms), tuple(compiled)
        )
    default = data.get("default", "inquiry")
    order = tuple(data.get("order", list(rules)))
    if default not in rules:
        problems.append(
            _problem(
                "default",
                "默认意图必须在 intents 中定义",
                "the default intent must be defined under [intents]",
            )
        )
    missing = [o for o in order if o not in rules]
    if missing:
        problems.append(
            _problem(
                "order", f"order 中的意图未定义：{missing}", f"intents in order are not defined: {missing}"
            )
        )
    focus: list[Focus] = []
    for i, f in enumerate(data.get("focus", [])):
        ask, prefer = (
            f.get("ask") if isinstance(f, dict) else None,
            f.get("prefer") if isinstance(f, dict) else None,
        )
        if not (isinstance(ask, list) and ask and all(isinstance(x, str) and x for x in ask)) or not (
            isinstance(prefer, list) and prefer and all(isinstance(x, str) and x for x in prefer)
        ):
            problems.append(
                _problem(
                    f"focus[{i}]",
                    "ask 和 prefer 必须是非空字符串列表",
                    "ask and prefer must be lists of non-empty strings",
                )
            )
            continue
        focus.append(Focus(tuple(normalize(x).text for x in ask), tuple(prefer)))
    if problems:
        raise NormsFileError(source, problems)
    return IntentRules(str(data.get("language", "zh")), default, order, rules, tuple(focus))


@lru_cache(maxsize=4)
def default_intents(language: str = "zh") -> IntentRules:
    return load_intents(Path(__file__).parent / f"intents_{language}.toml")

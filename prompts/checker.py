"""Checking a reply against the norms, and repairing what can be repaired mechanically.

``NormsChecker`` is built once per ``Norms`` (every lexicon becomes one compiled regex). ``check``
folds the reply once (see ``textnorm``), runs each enabled rule on the folded text and maps every
hit back to a span of the original text. ``fix`` edits the original text, so the agent's script
(simplified or traditional) and full-width punctuation survive; inserted phrases are converted to
traditional characters when the reply is written in them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prompts.textnorm import NormalizedText, fold, normalize, to_script

if TYPE_CHECKING:
    from prompts.norms import NormRule, Norms


@dataclass(frozen=True)
class CheckContext:
    """What the checker must know about the conversation besides the reply itself."""

    first_reply: bool = False  # the agent's first reply in this conversation: it must greet
    customer_waited_s: float | None = None  # how long the customer has waited for this reply


@dataclass(frozen=True)
class Violation:
    """One breach of a norm; ``span`` indexes the original reply (zero-length: where text is missing)."""

    rule_id: str
    span: tuple[int, int]
    message: str
    suggestion: str
    severity: str
    fixable: bool
    matched: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "span": list(self.span),
            "matched": self.matched,
            "message": self.message,
            "suggestion": self.suggestion,
            "severity": self.severity,
            "fixable": self.fixable,
        }


@dataclass(frozen=True)
class AppliedFix:
    """One mechanical repair: what rule it served and the text inserted, removed or put in place."""

    rule_id: str
    action: Literal["insert", "delete", "replace"]
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"rule_id": self.rule_id, "action": self.action, "text": self.text}


@dataclass(frozen=True)
class FixResult:
    """The repaired text, the violations it still has (they need rewording) and what was done."""

    text: str
    violations: list[Violation] = field(default_factory=list)
    applied: list[AppliedFix] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "violations": [v.to_dict() for v in self.violations],
            "applied": [a.to_dict() for a in self.applied],
        }


# Separators in folded text (NFKC turns ，！？：；～ into ASCII; 。、 stay).
_FOLDED_SEPS = frozenset(" \t\r\n,.!?;:~、。")


def _is_original_sep(ch: str) -> bool:
    return ch.isspace() or ch in "~～" or unicodedata.category(ch) in ("Po", "Pd", "Pi", "Pf")


def _literal_regex(terms: Iterable[str], word_boundaries: bool) -> re.Pattern[str] | None:
    folded = sorted({fold(t) for t in terms if t.strip()}, key=len, reverse=True)
    if not folded:
        return None
    body = "|".join(re.escape(t) for t in folded)
    if word_boundaries:
        body = rf"(?<![^\W_])(?:{body})(?![^\W_])"
    return re.compile(body)


class _Lexicon:
    """A lexicon rule compiled: hits, minus hits overlapping an allowed phrase, unless a marker is present."""

    def __init__(self, rule: NormRule, word_boundaries: bool) -> None:
        parts: list[str] = []
        literal = _literal_regex(rule.terms, word_boundaries)
        if literal is not None:
            parts.append(literal.pattern)
        parts.extend(f"(?:{p})" for p in rule.patterns)
        self.hit = re.compile("|".join(parts), re.MULTILINE)
        self.allow = [re.compile(p, re.MULTILINE) for p in rule.allow]
        self.unless = _literal_regex(rule.unless, word_boundaries)

    def find(self, text: str) -> list[tuple[int, int]]:
        if self.unless is not None and self.unless.search(text):
            return []
        hits = [m.span() for m in self.hit.finditer(text) if m.end() > m.start()]
        if not hits or not self.allow:
            return hits
        allowed = [m.span() for a in self.allow for m in a.finditer(text)]
        return [(s, e) for s, e in hits if not any(a0 < e and s < a1 for a0, a1 in allowed)]


class NormsChecker:
    """The compiled form of one ``Norms``; use ``Norms.check`` / ``Norms.fix`` rather than this."""

    FIX_ORDER: tuple[str, ...] = (
        "too_short",
        "filler",
        "late_without_apology",
        "wait_without_apology",
        "greeting",
        "impolite",
    )

    def __init__(self, norms: Norms) -> None:
        self.norms = norms
        wb = norms.word_boundaries
        self.variables: Mapping[str, str] = dict(norms.variables)
        self.rules: list[NormRule] = [r for r in norms.rules.values() if r.enabled]
        self.order = {r.id: i for i, r in enumerate(self.rules)}
        self.lexicons: dict[str, _Lexicon] = {}
        self.markers: dict[str, re.Pattern[str] | None] = {}
        for rule in norms.rules.values():
            if rule.terms or rule.patterns:
                self.lexicons[rule.id] = _Lexicon(rule, wb)
            if rule.id == "greeting":
                self.markers[rule.id] = _literal_regex((*rule.markers, norms.greeting), wb)
            elif rule.markers:
                self.markers[rule.id] = _literal_regex(rule.markers, wb)
        greeting_rule = norms.rules.get("greeting")
        self.greeting_folded = fold(norms.greeting).strip()
        self.greeting_window = greeting_rule.window if greeting_rule else 0
        short = norms.rules.get("too_short")
        self.acks: tuple[str, ...] = tuple(fold(a) for a in short.acknowledgements) if short else ()
        self.ack_set = frozenset(self.acks)
        self.softeners: tuple[str, ...] = (
            tuple(sorted({fold(t) for t in short.softeners}, key=len, reverse=True)) if short else ()
        )
        self.expansions: dict[str, str] = (
            {fold(k): self._text(v) for k, v in short.expansions.items()} if short else {}
        )
        self._checks: dict[str, Callable[[NormRule, NormalizedText, CheckContext], list[Violation]]] = {
            "greeting": self._check_greeting,
            "impolite": self._check_impolite,
            "too_short": self._check_too_short,
            "late_without_apology": self._check_late,
        }
        self._fixes: dict[
            str, Callable[[NormRule, str, NormalizedText, list[Violation]], tuple[str, AppliedFix]]
        ] = {
            "too_short": self._fix_too_short,
            "filler": self._fix_filler,
            "late_without_apology": self._fix_insert_at_violation,
            "wait_without_apology": self._fix_wait,
            "greeting": self._fix_insert_at_violation,
            "impolite": self._fix_insert_at_violation,
        }

    # -- public -------------------------------------------------------------------------------------

    def check(self, text: str, context: CheckContext | None = None) -> list[Violation]:
        ctx = context or CheckContext()
        nt = normalize(text)
        out: list[Violation] = []
        for rule in self.rules:
            out.extend(self._check_rule(rule, nt, ctx))
        out.sort(key=lambda v: (v.span[0], v.span[1], self.order[v.rule_id]))
        return out

    def fix(self, text: str, context: CheckContext | None = None) -> FixResult:
        ctx = context or CheckContext()
        applied: list[AppliedFix] = []
        current = text
        # A repair can expose another (removing "哦，" from "哦，好的" leaves a bare acknowledgement),
        # so passes repeat until one changes nothing; three always suffice for the built-in rules.
        for _ in range(3):
            changed = False
            for rule_id in self.FIX_ORDER:
                rule = self.norms.rules.get(rule_id)
                if rule is None or not rule.enabled:
                    continue
                nt = normalize(current)
                found = self._check_rule(rule, nt, ctx)
                if not found:
                    continue
                current, done = self._fixes[rule_id](rule, current, nt, found)
                applied.append(done)
                changed = True
            if not changed:
                break
        return FixResult(current, self.check(current, ctx), applied)

    # -- checks -------------------------------------------------------------------------------------

    def _check_rule(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        special = self._checks.get(rule.id)
        if special is not None:
            return special(rule, nt, ctx)
        lexicon = self.lexicons.get(rule.id)
        if lexicon is None:
            return []
        return [self._violation(rule, nt, nt.span(s, e)) for s, e in lexicon.find(nt.text)]

    def _violation(self, rule: NormRule, nt: NormalizedText, span: tuple[int, int]) -> Violation:
        matched = nt.original[span[0] : span[1]]
        return Violation(
            rule_id=rule.id,
            span=span,
            message=self._format(rule.message, matched),
            suggestion=self._format(rule.suggestion, matched),
            severity=rule.severity,
            fixable=rule.fixable,
            matched=matched,
        )

    def _format(self, text: str, matched: str) -> str:
        if "{" not in text:
            return text
        return text.format_map({**self.variables, "matched": matched})

    def _first_marker(self, rule_id: str, text: str) -> int | None:
        pattern = self.markers.get(rule_id)
        if pattern is None:
            return None
        m = pattern.search(text)
        return m.start() if m else None

    def _check_greeting(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        if not ctx.first_reply:
            return []
        at = self._first_marker("greeting", nt.text)
        if at is not None and at < rule.window:
            return []
        return [self._violation(rule, nt, (0, 0))]

    def _check_impolite(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        if self._first_marker("impolite", nt.text) is not None:
            return []
        return [self._violation(rule, nt, (0, len(nt.original)))]

    def greeting_end(self, text: str) -> int:
        """Where the opening greeting of folded ``text`` ends (0 when it does not open with one)."""
        start = len(text) - len(text.lstrip())
        if self.greeting_folded and text.startswith(self.greeting_folded, start):
            end = start + len(self.greeting_folded)
        else:
            pattern = self.markers.get("greeting")
            m = pattern.search(text) if pattern is not None else None
            if m is None or m.start() >= self.greeting_window:
                return 0
            end = m.end()
        while end < len(text) and text[end] in _FOLDED_SEPS:
            end += 1
        return end

    def _check_late(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        waited = ctx.customer_waited_s
        if waited is None or waited <= self.norms.wait_limit_s:
            return []
        start = self.greeting_end(nt.text)
        at = self._first_marker(rule.id, nt.text)
        if at is not None and at < start + rule.window:
            return []
        pos = nt.position(start)
        return [self._violation(rule, nt, (pos, pos))]

    def _core(self, rule: NormRule, text: str) -> str:
        if rule.unit == "word":
            return " ".join(re.findall(r"[^\W_]+", text))
        return "".join(ch for ch in text if ch.isalnum())

    def _strip_softeners(self, core: str) -> str:
        """Drop softening particles at both ends: 好的呢亲 -> 好的, 哦好的 -> 好的."""
        changed = True
        while changed and core:
            changed = False
            for t in self.softeners:
                if core.endswith(t):
                    core = core[: -len(t)].strip()
                    changed = True
                    break
                if core.startswith(t):
                    core = core[len(t) :].strip()
                    changed = True
                    break
        return core

    def bare_acknowledgement(self, rule: NormRule, folded: str) -> str | None:
        """The acknowledgement a reply consists of (``""`` for pure filler), or None."""
        core = self._strip_softeners(self._core(rule, folded))
        if not core:
            return ""
        if core in self.ack_set:
            return core
        if len(core) <= 16:
            sep = " " if rule.unit == "word" else ""
            for ack in self.acks:
                n, r = divmod(len(core) + len(sep), len(ack) + len(sep))
                if n > 1 and r == 0 and core == sep.join([ack] * n):
                    return ack
        return None

    def _length(self, rule: NormRule, folded: str) -> int:
        if rule.unit == "word":
            return len(re.findall(r"[^\W_]+", folded))
        return sum(1 for ch in folded if ch.isalnum())

    def _check_too_short(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        if (
            self._length(rule, nt.text) >= rule.min_length
            and self.bare_acknowledgement(rule, nt.text) is None
        ):
            return []
        return [self._violation(rule, nt, (0, len(nt.original)))]

    # -- fixes --------------------------------------------------------------------------------------

    def _text(self, text: str) -> str:
        """A phrase from the norms with the norm variables filled in."""
        return text.format_map(self.variables) if "{" in text else text

    def _localise(self, text: str, nt: NormalizedText) -> str:
        if nt.traditional and self.norms.to_traditional:
            return to_script(text, self.norms.to_traditional)
        return text

    def _fix_insert_at_violation(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        pos = found[0].span[0]
        insert = self._localise(self._text(rule.insert), nt)
        if pos > 0 and current[pos - 1].isalnum():
            # after a greeting with no punctuation of its own ("您好" at the end of the reply)
            insert = (" " if self.norms.word_boundaries else "，") + insert
        return current[:pos] + insert + current[pos:], AppliedFix(rule.id, "insert", insert)

    def _fix_wait(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        pos = found[0].span[0]
        while pos > 0 and not _is_original_sep(current[pos - 1]):
            pos -= 1
        insert = self._localise(self._text(rule.insert), nt)
        return current[:pos] + insert + current[pos:], AppliedFix(rule.id, "insert", insert)

    def _fix_too_short(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        ack = self.bare_acknowledgement(rule, nt.text)
        if ack is not None:
            new = self._localise(self.expansions.get(ack) or self._text(rule.default_expansion), nt)
            return new, AppliedFix(rule.id, "replace", new)
        stem = current.rstrip()
        while stem and _is_original_sep(stem[-1]):
            stem = stem[:-1]
        suffix = self._localise(self._text(rule.short_suffix), nt)
        return stem + suffix, AppliedFix(rule.id, "insert", suffix)

    def _fix_filler(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        removed: list[str] = []
        text = current
        for v in sorted(found, key=lambda v: v.span[0], reverse=True):
            start, end = v.span
            left_open = start == 0 or _is_original_sep(text[start - 1])
            right = end
            while right < len(text) and _is_original_sep(text[right]):
                right += 1
            right_open = end == len(text) or right > end
            if left_open and right_open:
                # The particle stands alone as a clause: remove it with one of its separators.
                if right == len(text) and start > 0:
                    left = start
                    while left > 0 and _is_original_sep(text[left - 1]):
                        left -= 1
                    # keep a sentence-final mark of the remaining text ("好的，嗯。" -> "好的。")
                    tail = text[end:right]
                    keep = tail if any(ch in "。.!?！？~～" for ch in tail) else ""
                    removed.append(text[left:right])
                    text = text[:left] + keep.strip()
                else:
                    removed.append(text[start:right])
                    capital = text[start].isupper()
                    text = text[:start] + text[right:]
                    # "Um, let me check." -> "Let me check."
                    if capital and start < len(text) and text[start].islower():
                        text = text[:start] + text[start].upper() + text[start + 1 :]
            else:
                removed.append(text[start:end])
                text = text[:start] + text[end:]
        return text, AppliedFix(rule.id, "delete", "".join(reversed(removed)))

"""Checking a reply against the norms, and repairing what can be repaired mechanically.

``NormsChecker`` is built once per ``Norms`` (every lexicon becomes one compiled regex). ``check``
folds the reply once (see ``textnorm``), runs each enabled rule on the folded text and maps every
hit back to a span of the original text. ``fix`` edits the original text, so the agent's script
(simplified or traditional) and full-width punctuation survive; inserted phrases are converted to
traditional characters when the reply is written in them.

Language-dependent punctuation comes from the norms (``insert_separator``, ``sentence_end``); with
``word_boundaries`` (languages written with spaces) inserted phrases also follow sentence case.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from prompts.textnorm import NormalizedText, fold, normalize, to_script

if TYPE_CHECKING:
    from prompts.norms import NormRule, Norms


@dataclass(frozen=True)
class CheckContext:
    """What the checker must know about the conversation besides the reply itself."""

    first_reply: bool = False  # the agent's first reply in this conversation: it must greet
    customer_waited_s: float | None = None  # how long the customer has waited for this reply
    greeted: bool = False  # the agent has greeted earlier in this conversation: do not greet again


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
_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# A sentence that says little besides its apology (让您久等了, to keep you waiting) only apologises:
# letters and digits (or words) left beside the apology itself.
_APOLOGY_SENTENCE_REST = {"char": 6, "word": 5}


def _is_original_sep(ch: str) -> bool:
    return ch.isspace() or ch in "~～" or unicodedata.category(ch) in ("Po", "Pd", "Pi", "Pf")


def _term_regex(term: str) -> str:
    """A term as a regex; an ASCII word at either end of it only matches whole (``hi`` not in ``this``)."""
    body = re.escape(term)
    if term[0] in _ASCII_WORD:
        body = "(?<![a-z0-9])" + body
    if term[-1] in _ASCII_WORD:
        body += "(?![a-z0-9])"
    return body


def _literal_regex(terms: Iterable[str], word_boundaries: bool) -> re.Pattern[str] | None:
    folded = sorted({fold(t) for t in terms if t.strip()}, key=len, reverse=True)
    if not folded:
        return None
    if word_boundaries:
        body = "|".join(re.escape(t) for t in folded)
        return re.compile(rf"(?<![^\W_])(?:{body})(?![^\W_])")
    return re.compile("|".join(_term_regex(t) for t in folded))


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
        self.explanations = [re.compile(p, re.MULTILINE) for p in rule.explanations]

    def find(self, text: str) -> list[tuple[int, int]]:
        if self.unless is not None and self.unless.search(text):
            return []
        hits = [m.span() for m in self.hit.finditer(text) if m.end() > m.start()]
        if not hits:
            return hits
        if any(e.search(text) for e in self.explanations):
            return []
        if not self.allow:
            return hits
        allowed = [m.span() for a in self.allow for m in a.finditer(text)]
        return [(s, e) for s, e in hits if not any(a0 < e and s < a1 for a0, a1 in allowed)]


# A token of a bare acknowledgement: its form in the reply (characters, or words for unit = "word")
# and the acknowledgement it stands for ("" for a softener).
_Token = tuple[str | tuple[str, ...], str]


class NormsChecker:
    """The compiled form of one ``Norms``; use ``Norms.check`` / ``Norms.fix`` rather than this."""

    FIX_ORDER: tuple[str, ...] = (
        "too_short",
        "filler",
        "repeated_greeting",
        "stacked_apology",
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
            if rule.id in ("greeting", "repeated_greeting"):
                self.markers[rule.id] = _literal_regex((*rule.markers, norms.greeting), wb)
            elif rule.markers:
                self.markers[rule.id] = _literal_regex(rule.markers, wb)
        self.greeting_folded = fold(norms.greeting).strip()
        self.sentence_end = frozenset(norms.sentence_end) | {"\n"}
        self.sentence_end_folded = frozenset(fold(norms.sentence_end)) | {"\n"}
        impolite = norms.rules.get("impolite")
        self.replace_opening: list[tuple[str, str]] = sorted(
            ((fold(k).strip(), v) for k, v in (impolite.replace_opening if impolite else {}).items()),
            key=lambda kv: len(kv[0]),
            reverse=True,
        )
        short = norms.rules.get("too_short")
        self.softeners: tuple[str, ...] = (
            tuple(sorted({fold(t).strip() for t in short.softeners}, key=len, reverse=True)) if short else ()
        )
        self.ack_tokens: dict[str, list[_Token]] = {}
        if short is not None:
            tokens: list[_Token] = []
            for words, is_ack in ((short.acknowledgements, True), (short.softeners, False)):
                for w in words:
                    key = fold(w).strip()
                    form: str | tuple[str, ...] = (
                        tuple(re.findall(r"[^\W_]+", key)) if short.unit == "word" else self._core(short, key)
                    )
                    if form:
                        tokens.append((form, key if is_ack else ""))
            # longer tokens first: 好的 before 好, 嗯嗯 before 嗯
            for token in sorted(tokens, key=lambda t: len(t[0]), reverse=True):
                self.ack_tokens.setdefault(token[0][0], []).append(token)
        self.expansions: dict[str, str] = (
            {fold(k).strip(): self._text(v) for k, v in short.expansions.items()} if short else {}
        )
        self._checks: dict[str, Callable[[NormRule, NormalizedText, CheckContext], list[Violation]]] = {
            "greeting": self._check_greeting,
            "impolite": self._check_impolite,
            "too_short": self._check_too_short,
            "late_without_apology": self._check_late,
            "repeated_greeting": self._check_repeated_greeting,
            "stacked_apology": self._check_stacked_apology,
        }
        self._fixes: dict[
            str, Callable[[NormRule, str, NormalizedText, list[Violation]], tuple[str, AppliedFix]]
        ] = {
            "too_short": self._fix_too_short,
            "filler": self._fix_filler,
            "late_without_apology": self._fix_insert_at_violation,
            "wait_without_apology": self._fix_wait,
            "greeting": self._fix_insert_at_violation,
            "impolite": self._fix_impolite,
            "repeated_greeting": self._fix_remove,
            "stacked_apology": self._fix_remove,
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
        # A reply too short to say anything (开具, 稍等) is left for rewriting: padding it with a
        # greeting or an apology would only hide that it says nothing.
        seen: str | None = None  # the last text checked for needing a rewrite
        for _ in range(3):
            changed = False
            for rule_id in self.FIX_ORDER:
                rule = self.norms.rules.get(rule_id)
                if rule is None or not rule.enabled:
                    continue
                nt = normalize(current)
                if current != seen:
                    if self._needs_rewrite(nt, ctx):
                        return FixResult(current, self.check(current, ctx), applied)
                    seen = current
                found = [v for v in self._check_rule(rule, nt, ctx) if v.fixable]
                if not found:
                    continue
                if rule_id == "impolite" and ctx.greeted and rule.insert_greeted:
                    # a later reply gets a polite phrase, not a second greeting
                    rule = replace(rule, insert=rule.insert_greeted, replace_opening={})
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

    def _violation(
        self, rule: NormRule, nt: NormalizedText, span: tuple[int, int], *, fixable: bool | None = None
    ) -> Violation:
        matched = nt.original[span[0] : span[1]]
        return Violation(
            rule_id=rule.id,
            span=span,
            message=self._format(rule.message, matched),
            suggestion=self._format(rule.suggestion, matched),
            severity=rule.severity,
            fixable=rule.fixable if fixable is None else fixable,
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

    def _sentence_stop(self, text: str, start: int) -> int:
        """The index of the first sentence-end mark of folded ``text`` at or after ``start``."""
        for i in range(start, len(text)):
            if text[i] in self.sentence_end_folded:
                return i
        return len(text)

    def greeting_end(self, text: str) -> int:
        """Where the greeting that opens folded ``text`` ends, separators included (0: none opens it).

        The reply opens with a greeting when the configured greeting or a greeting marker stands at
        its very start (a marker later in the reply, "好的 您好", does not open it). The greeting runs
        on to the end of the last clause of the first sentence that holds another marker:
        "您好，我是客服小美，很高兴为您服务。" is all greeting.
        """
        start = len(text) - len(text.lstrip())
        return self._greeting_from(text, start, "greeting") or 0

    def _greeting_from(self, text: str, start: int, rule_id: str) -> int | None:
        """The end of the greeting that starts at ``start`` of folded ``text`` (None: none starts there)."""
        pattern = self.markers.get(rule_id)
        if self.greeting_folded and text.startswith(self.greeting_folded, start):
            end = start + len(self.greeting_folded)
        else:
            m = pattern.match(text, start) if pattern is not None else None
            if m is None:
                return None
            end = m.end()
        if pattern is not None:
            stop = self._sentence_stop(text, end)
            for m in pattern.finditer(text, end, stop):
                clause_end = m.end()
                while clause_end < stop and text[clause_end] not in _FOLDED_SEPS:
                    clause_end += 1
                end = max(end, clause_end)
        while end < len(text) and text[end] in _FOLDED_SEPS:
            end += 1
        return end

    def open_with(self, opening: str, body: str) -> str:
        """``opening`` (an apology for a late reply) put at the start of ``body``, after the greeting
        that opens it: "您好，我是在线客服……。非常抱歉未能及时回复您的留言。请问……"."""
        nt = normalize(body)
        at = nt.position(self.greeting_end(nt.text))
        return body[:at] + opening + body[at:]

    def _clause_start(self, text: str, pos: int) -> bool:
        i = pos
        while i > 0 and text[i - 1] == " ":
            i -= 1
        return i == 0 or text[i - 1] in _FOLDED_SEPS

    def _check_repeated_greeting(
        self, rule: NormRule, nt: NormalizedText, ctx: CheckContext
    ) -> list[Violation]:
        """A greeting in a second sentence of the reply, or any greeting once the agent has greeted."""
        pattern = self.markers.get(rule.id)
        if pattern is None:
            return []
        text = nt.text
        found: list[tuple[int, int]] = []
        sentence_of_last = -1
        pos = 0
        while (m := pattern.search(text, pos)) is not None:
            pos = m.end()
            s, e = m.span()
            if not self._clause_start(text, s):
                continue
            # 您好像…… is no greeting: a short marker must stand as a word of its own
            if e - s < 3 and e < len(text) and text[e] not in _FOLDED_SEPS and not self.norms.word_boundaries:
                continue
            sentence = sum(1 for ch in text[:s] if ch in self.sentence_end_folded)
            if sentence == sentence_of_last:
                continue
            sentence_of_last = sentence
            end = self._greeting_from(text, s, rule.id) or e
            found.append((s, end))
            pos = max(pos, end)
        repeated = found if ctx.greeted else found[1:]
        out = []
        for s, e in repeated:
            # removable unless the greeting is all the reply says
            rest = (text[:s] + text[e:]).strip(" \t\r\n,.!?;:~、。")
            out.append(self._violation(rule, nt, nt.span(s, e), fixable=bool(rest)))
        return out

    def _check_stacked_apology(
        self, rule: NormRule, nt: NormalizedText, ctx: CheckContext
    ) -> list[Violation]:
        """Every apology after the first; a bare one opening a clause ("非常抱歉，……") can go."""
        lexicon = self.lexicons.get(rule.id)
        if lexicon is None:
            return []
        text = nt.text
        hits: list[tuple[int, int]] = []
        for s, e in sorted(lexicon.find(text)):
            if hits and not text[hits[-1][1] : s].strip(" "):
                hits[-1] = (hits[-1][0], e)  # 抱歉抱歉 / 不好意思 对不起: one apology
            else:
                hits.append((s, e))
        out = []
        for s, e in hits[1:]:
            end = e
            while end < len(text) and text[end] in _FOLDED_SEPS:
                end += 1
            # removable: a bare apology opening a clause ("非常抱歉，这个问题……"), or a sentence that only
            # apologises ("抱歉让您久等了。")
            bare = self._clause_start(text, s) and end > e and end < len(text)
            whole = self._apology_sentence(text, s, e)
            span = (s, end) if bare else (s, whole) if whole else (s, e)
            out.append(self._violation(rule, nt, nt.span(*span), fixable=bare or whole is not None))
        return out

    def _apology_sentence(self, text: str, s: int, e: int) -> int | None:
        """The end (separators included) of the sentence that apology ``text[s:e]`` opens, when the
        rest of it is a few words only; else None."""
        i = s
        while i > 0 and text[i - 1] == " ":
            i -= 1
        if i > 0 and text[i - 1] not in self.sentence_end_folded:
            return None
        stop = self._sentence_stop(text, e)
        rest = text[e:stop]
        unit = "word" if self.norms.word_boundaries else "char"
        size = len(_words(rest)) if unit == "word" else len(_alnum_core(rest))
        if size > _APOLOGY_SENTENCE_REST[unit]:
            return None
        end = stop
        while end < len(text) and text[end] in _FOLDED_SEPS:
            end += 1
        return end

    def _check_late(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        waited = ctx.customer_waited_s
        if waited is None or waited <= self.norms.wait_limit_s:
            return []
        # the apology must open the reply, or directly follow the greeting that opens it
        start = self.greeting_end(nt.text)
        at = self._first_marker(rule.id, nt.text)
        if at is not None and at < start + rule.window:
            return []
        pos = nt.position(start)
        return [self._violation(rule, nt, (pos, pos))]

    def _core(self, rule: NormRule, text: str) -> str:
        return _word_core(text) if rule.unit == "word" else _alnum_core(text)

    def bare_acknowledgement(self, rule: NormRule, folded: str) -> str | None:
        """The acknowledgement a reply consists of, or None when it says something else.

        A bare acknowledgement is made only of acknowledgements and softeners, in any order and
        number: 好的, 好的呢亲, 嗯嗯好的, 好的，收到, OK的, Ok，我知道了, 是的 是的. It returns the
        acknowledgement whose expansion fits best: the last one that has an expansion of its own
        (您好 在的 -> 在的), else the first ("" when the reply is softeners only: 嗯, 呐). A reply with
        no letters or digits at all ("?") is not an acknowledgement: there is nothing to expand.
        """
        seq: str | tuple[str, ...] = _words(folded) if rule.unit == "word" else _alnum_core(folded)
        n = len(seq)
        if n == 0 or seq[0] not in self.ack_tokens:
            return None
        # positions reachable by whole tokens -> the acknowledgement chosen so far ("" none yet)
        reached: dict[int, str] = {0: ""}
        todo = [0]
        while todo:
            i = heapq.heappop(todo)
            if i == n:
                break
            first = reached[i]
            for form, ack in self.ack_tokens.get(seq[i], ()):
                j = i + len(form)
                if seq[i:j] != form:
                    continue
                value = ack if ack and (ack in self.expansions or not first) else first
                if j not in reached:
                    reached[j] = value
                    heapq.heappush(todo, j)
                elif value and not reached[j]:
                    reached[j] = value
        return reached.get(n)

    def _strip_softeners(self, core: str) -> str:
        """Drop softening particles at both ends: 稍等哦 -> 稍等, 哦好的呢 -> 好的."""
        changed = True
        while changed and core:
            changed = False
            for t in self.softeners:
                if core.endswith(t):
                    core = core[: -len(t)]
                    changed = True
                elif core.startswith(t):
                    core = core[len(t) :]
                    changed = True
        return core

    def _length(self, rule: NormRule, folded: str) -> int:
        """Letters and digits (words for unit = "word"), not counting particles at either end:
        稍等哦 is as short as 稍等 (fix removes the 哦)."""
        if rule.unit == "word":
            return len(re.findall(r"[^\W_]+", folded))
        return len(self._strip_softeners(self._core(rule, folded)))

    def _check_too_short(self, rule: NormRule, nt: NormalizedText, ctx: CheckContext) -> list[Violation]:
        ack = self.bare_acknowledgement(rule, nt.text)
        if ack is None and self._length(rule, nt.text) >= rule.min_length:
            return []
        # a bare acknowledgement is expanded; any other short reply must be rewritten
        return [self._violation(rule, nt, (0, len(nt.original)), fixable=ack is not None)]

    def _needs_rewrite(self, nt: NormalizedText, ctx: CheckContext) -> bool:
        rule = self.norms.rules.get("too_short")
        if rule is None or not rule.enabled:
            return False
        return any(not v.fixable for v in self._check_too_short(rule, nt, ctx))

    # -- fixes --------------------------------------------------------------------------------------

    def _text(self, text: str) -> str:
        """A phrase from the norms with the norm variables filled in."""
        return text.format_map(self.variables) if "{" in text else text

    def _localise(self, text: str, nt: NormalizedText) -> str:
        if nt.traditional and self.norms.to_traditional:
            return to_script(text, self.norms.to_traditional)
        return text

    def _at_sentence_start(self, text: str, pos: int) -> bool:
        i = pos
        while i > 0 and text[i - 1].isspace():
            i -= 1
        return i == 0 or text[i - 1] in self.sentence_end

    def _insert(self, current: str, pos: int, phrase: str) -> tuple[str, str]:
        """Insert ``phrase`` at ``pos``; returns the new text and what was inserted."""
        if self.norms.word_boundaries:
            # sentence case: a phrase inside a sentence starts in lower case (but "I", "I'm") ...
            first = re.match(r"[A-Za-z']+", phrase)
            if (
                first is not None
                and not self._at_sentence_start(current, pos)
                and not (first.group() == "I" or first.group().startswith("I'"))
            ):
                phrase = phrase[0].lower() + phrase[1:]
            # ... and a phrase that ends a sentence makes the rest start one
            if phrase.rstrip() and phrase.rstrip()[-1] in self.sentence_end:
                rest = current[pos:]
                lead = len(rest) - len(rest.lstrip())
                if lead < len(rest) and rest[lead].islower():
                    current = current[: pos + lead] + rest[lead].upper() + current[pos + lead + 1 :]
        if pos > 0 and current[pos - 1].isalnum():
            # after a word with no punctuation of its own ("您好" at the end of the reply)
            phrase = self.norms.insert_separator + phrase
        elif self.norms.word_boundaries and pos > 0 and current[pos - 1].isspace():
            # "Hello your parcel ..." -> "Hello, sorry to keep you waiting. Your parcel ..."
            stem = current[:pos].rstrip()
            if stem and stem[-1].isalnum():
                phrase = self.norms.insert_separator + phrase
                return stem + phrase + current[pos:], phrase
        return current[:pos] + phrase + current[pos:], phrase

    def _fix_insert_at_violation(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        pos = found[0].span[0]
        new, inserted = self._insert(current, pos, self._localise(self._text(rule.insert), nt))
        return new, AppliedFix(rule.id, "insert", inserted)

    def _fix_impolite(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        # an impolite opening word is replaced by the polite one: 你好，... -> 您好，... (not 您好，你好，...)
        start = len(nt.text) - len(nt.text.lstrip())
        for word, polite in self.replace_opening if rule.replace_opening else ():
            end = start + len(word)
            if not nt.text.startswith(word, start):
                continue
            if end < len(nt.text) and word[-1] in _ASCII_WORD and nt.text[end] in _ASCII_WORD:
                continue  # "hi" is not the start of "history"
            if self.norms.word_boundaries and end < len(nt.text) and nt.text[end].isalnum():
                continue
            o_start, o_end = nt.span(start, end)
            new = self._localise(self._text(polite), nt)
            return current[:o_start] + new + current[o_end:], AppliedFix(rule.id, "replace", new)
        return self._fix_insert_at_violation(rule, current, nt, found)

    def _fix_wait(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        hit = found[0].span[0]
        pos = hit
        if rule.insert_at == "sentence":
            # at the start of the sentence (not of the word: "Please hold on." stays whole) ...
            while pos > 0 and current[pos - 1] not in self.sentence_end:
                pos -= 1
            while pos < hit and current[pos].isspace():
                pos += 1
            # ... but after a greeting that opens it: "Hi, I'm sorry, ... I will check"
            greeted = nt.position(self.greeting_end(nt.text))
            if pos < greeted <= hit:
                pos = greeted
        else:
            while pos > 0 and not _is_original_sep(current[pos - 1]):
                pos -= 1
        new, inserted = self._insert(current, pos, self._localise(self._text(rule.insert), nt))
        return new, AppliedFix(rule.id, "insert", inserted)

    def _fix_remove(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        """Delete the flagged spans (a repeated greeting, a stacked apology), last first."""
        text = current
        removed: list[str] = []
        for v in sorted(found, key=lambda v: v.span[0], reverse=True):
            start, end = v.span
            removed.append(text[start:end])
            text = text[:start] + text[end:]
            # "I'm sorry, the colleague ..." -> "The colleague ..."
            if (
                self.norms.word_boundaries
                and start < len(text)
                and text[start].islower()
                and self._at_sentence_start(text, start)
            ):
                text = text[:start] + text[start].upper() + text[start + 1 :]
        return text, AppliedFix(rule.id, "delete", "".join(reversed(removed)))

    def _fix_too_short(
        self, rule: NormRule, current: str, nt: NormalizedText, found: list[Violation]
    ) -> tuple[str, AppliedFix]:
        # only bare acknowledgements get here (fix stops on a short reply that must be rewritten)
        ack = self.bare_acknowledgement(rule, nt.text) or ""
        new = self._localise(self.expansions.get(ack) or self._text(rule.default_expansion), nt)
        return new, AppliedFix(rule.id, "replace", new)

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
                    # keep a sentence-final mark of the remaining text ("好的，嗯。" -> "好的。",
                    # "祝您愉快! 嗯呢" -> "祝您愉快!")
                    tail, before = text[end:right], text[left:start]
                    keep = next(
                        (seg for seg in (tail, before) if any(ch in self.sentence_end for ch in seg)), ""
                    )
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


# The letters and digits of a reply, asked for several times per check and fix (cached: pure functions).
@lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[^\W_]+", text))


@lru_cache(maxsize=4096)
def _word_core(text: str) -> str:
    return " ".join(_words(text))


@lru_cache(maxsize=4096)
def _alnum_core(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())

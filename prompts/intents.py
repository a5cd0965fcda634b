"""Intent of a customer message: rules plus similarity to labelled examples, all data (``intents_zh.toml``).

    from prompts.intents import default_intents
    intents = default_intents("zh")              # loaded, validated and indexed once per process
    intents.classify("請問怎麼申請退貨？")         # -> ("after_sales", 0.903)
    intents.explain("我要投诉").rule_hits         # why: rule hits, nearest examples, every score

Two kinds of evidence written by an operator in the TOML file, and one learnt at start-up:

* rules: for each intent, plain ``terms`` and regular ``patterns``; a rule that matches scores its
  ``weight`` (a little more for several matches);
* examples: labelled customer messages. A message is compared with every example by cosine
  similarity of TF-IDF vectors over characters and character pairs (words for Latin script), and its
  ``k`` nearest examples vote, each with its similarity. The vote share of an intent, scaled down
  when even the nearest example is not similar (``full_strength``), is its neighbour score;
* meaning (``with_encoder`` / ``semantic_intents``, when the caller injects a sentence encoder): a
  logistic regression over the vectors of the examples and of labelled real messages
  (``prompts/intent_model.py``); its probability above ``semantic_floor`` counts ``semantic_weight``;
* tone (with the encoder, when ``complaint_threshold`` > 0): a second, binary logistic regression
  (complaint or not) over the same vector plus the complaint rule's and neighbours' scores. Real
  customers complain about a late parcel or a refused return in the words of an order or after-sales
  question; when the topic wins with ``order`` or ``after_sales`` and this detector is at least
  ``complaint_threshold`` sure, the message is a complaint (``COMPLAINT_OVERRIDES``).

An intent's score is its rule score plus ``neighbour_weight`` times its neighbour score (plus the
semantic part); the default intent scores at least ``default_score``, so weak evidence leaves a
message at the default. The
confidence is the softmax (``sharpness``) of the scores: high when a rule and the neighbours agree,
middling when only one of them speaks, low when they disagree or when nothing matches.

Text is folded first (``fold``: NFKC, Taiwan and traditional phrases -> mainland simplified, then
``textnorm.normalize``), so traditional and full-width messages classify like simplified ones and the
file is written in simplified Chinese. This module imports nothing from ``knowledge``, ``suggest`` or
``eval``. Measured by ``kefu eval intents`` (``eval/intents.py``, figures in docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import opencc

from prompts.errors import NormsFileError, NormsProblem
from prompts.intent_model import (
    Encoder,
    LabelledText,
    SemanticModel,
    cached_vectors,
    default_example_files,
    fit_logistic,
)
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
PACKAGED_INTENT_LANGUAGES: tuple[str, ...] = ("zh",)
# Taiwan phrases and variants -> mainland simplified, phrase by phrase (線上 -> 在线, 資訊 -> 信息,
# 用著 -> 用着). ``normalize`` alone folds character by character whenever a character changes width,
# which loses the phrase (瞭解 after a full-width comma stays 瞭解).
_TW2SP = opencc.OpenCC("tw2sp")
log = logging.getLogger(__name__)

_TOP_KEYS = ("language", "default", "order", "ignore", "classifier", "intents", "focus")
_INTENT_KEYS = ("weight", "terms", "patterns", "examples")
_FOCUS_KEYS = ("ask", "prefer")


# -- settings and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierSettings:
    """How rules and examples are combined (``[classifier]`` in the intents file)."""

    # defaults: the values chosen by leave-one-out over the packaged examples
    #: how many nearest examples vote
    k: int = 7
    #: weight of the neighbours' vote against a rule's weight (both are at most about 1)
    neighbour_weight: float = 0.5
    #: examples less similar than this do not vote
    min_similarity: float = 0.1
    #: similarity of the nearest example at which the vote counts fully (below: proportionally less)
    full_strength: float = 0.2
    #: the score the default intent has when nothing else speaks
    default_score: float = 0.3
    #: softmax sharpness turning scores into a confidence
    sharpness: float = 4.0
    #: weight of the semantic classifier's probability (used only when an encoder is given)
    semantic_weight: float = 1.0
    #: inverse L2 regularisation of the semantic classifier's logistic regression
    semantic_c: float = 16.0
    #: a semantic probability counts only above this (rescaled to 0..1): an off-topic message, whose
    #: probabilities are spread thin, stays at the default intent and can be escalated
    semantic_floor: float = 0.0
    #: the tone detector's probability from which an order or after-sales message is a complaint
    #: (0: no tone detector; used only when an encoder is given)
    complaint_threshold: float = 0.0
    #: inverse L2 regularisation of the tone detector's logistic regression
    complaint_c: float = 4.0


_CLASSIFIER_LIMITS: dict[str, tuple[type, float, float]] = {
    "k": (int, 1, 50),
    "neighbour_weight": (float, 0.0, 5.0),
    "min_similarity": (float, 0.0, 1.0),
    "full_strength": (float, 0.01, 1.0),
    "default_score": (float, 0.0, 1.0),
    "sharpness": (float, 0.1, 50.0),
    "semantic_weight": (float, 0.0, 10.0),
    "semantic_c": (float, 0.01, 1000.0),
    "semantic_floor": (float, 0.0, 0.99),
    "complaint_threshold": (float, 0.0, 1.0),
    "complaint_c": (float, 0.01, 1000.0),
}

#: the intents a confident tone detector turns into ``complaint``: the topics real complaints are
#: about. Not the default intent, so an off-topic question stays at the default and can be escalated.
COMPLAINT_OVERRIDES = ("order", "after_sales")


@dataclass(frozen=True)
class IntentRule:
    label: str
    weight: float
    terms: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, folded: str) -> int:
        return sum(1 for t in self.terms if t in folded) + sum(1 for p in self.patterns if p.search(folded))

    def score(self, folded: str) -> float:
        hits = self.matches(folded)
        return min(0.99, self.weight + 0.05 * (hits - 1)) if hits else 0.0


@dataclass(frozen=True)
class Focus:
    ask: tuple[str, ...]
    prefer: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """A labelled customer message of the intents file."""

    label: str
    text: str


@dataclass(frozen=True)
class Neighbour:
    similarity: float
    example: Example


@dataclass(frozen=True)
class IntentResult:
    """A classification with its evidence (``IntentRules.explain``)."""

    label: str
    confidence: float
    #: every intent's combined score (rule score + weighted neighbour score)
    scores: dict[str, float]
    #: rule score of each intent whose rule matched
    rule_scores: dict[str, float]
    #: neighbour score of each intent among the nearest examples
    neighbour_scores: dict[str, float]
    neighbours: tuple[Neighbour, ...]
    #: the semantic classifier's probability of each intent (empty without an encoder)
    semantic_scores: dict[str, float] = field(default_factory=dict)
    #: the tone detector's probability that the message is a complaint (None without it)
    complaint_probability: float | None = None

    @property
    def rule_hits(self) -> tuple[str, ...]:
        return tuple(self.rule_scores)

    @property
    def source(self) -> str:
        """What decided: ``rules+examples`` (they agree), ``rules``, ``examples`` or ``default``."""
        by_rule = self.label in self.rule_scores
        by_examples = (
            bool(self.neighbour_scores)
            and max(self.neighbour_scores, key=lambda k: self.neighbour_scores[k]) == self.label
        )
        if by_rule and by_examples:
            return "rules+examples"
        if by_rule:
            return "rules"
        if by_examples:
            return "examples"
        return "default"


def fold(text: str) -> str:
    """The matching form of a message, a rule term or an example: NFKC, mainland simplified, lower case."""
    nfkc = unicodedata.normalize("NFKC", text)
    return normalize(nfkc if nfkc.isascii() else _TW2SP.convert(nfkc)).text


# -- similarity to examples ----------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_DIGIT_GAP = re.compile(r"(?<=\d)[ \-](?=\d)")
_PHONE = re.compile(r"(?<!\d)(?:1[3-9]\d{9}|0\d{9,11})(?!\d)")
_LONG_NUMBER = re.compile(r"\d{5,}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# placeholders (private-use characters): what kind of number or address, not which one
_P_EMAIL, _P_PHONE, _P_LONG, _P_NUMBER = "\ue000", "\ue001", "\ue002", "\ue003"
_UNITS = re.compile(r"[a-z]+|[\ue000-\ue003]|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[?!]|\S")


def _units(folded: str) -> list[list[str]]:
    """Segments (split at punctuation and spaces) of units: a CJK character, a Latin word, a symbol."""
    s = _EMAIL.sub(_P_EMAIL, folded)
    s = _DIGIT_GAP.sub("", s)
    s = _PHONE.sub(_P_PHONE, s)
    s = _LONG_NUMBER.sub(_P_LONG, s)
    s = _NUMBER.sub(_P_NUMBER, s)
    segments: list[list[str]] = [[]]
    for m in _UNITS.finditer(s):
        u = m.group()
        if len(u) == 1 and not u.isalnum() and u not in "?!" and not "\ue000" <= u <= "\ue003":
            cat = unicodedata.category(u)
            if cat.startswith(("P", "Z", "C")) or u in "~^`|_":
                if segments[-1]:
                    segments.append([])
                continue
            # emoji and other symbols stay: 😡 and 🙏 say something
        segments[-1].append(u)
        if u in "?!":
            segments.append([])
    return [seg for seg in segments if seg]


def features(folded: str) -> Counter[str]:
    """Unigrams and bigrams of units, plus the first and the last unit of the message."""
    out: Counter[str] = Counter()
    segments = _units(folded)
    for seg in segments:
        out.update(seg)
        out.update(a + "\u0001" + b for a, b in pairwise(seg))
    if segments:
        out["^" + segments[0][0]] += 1
        out[segments[-1][-1] + "$"] += 1
    return out


class ExampleIndex:
    """TF-IDF vectors of the examples and an inverted index for cosine k-NN; built once at load."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = tuple(examples)
        self._folded = tuple(fold(e.text) for e in self.examples)
        counts = [features(f) for f in self._folded]
        n = len(counts)
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        self._idf = {t: math.log((1 + n) / (1 + d)) + 1.0 for t, d in df.items()}
        self._unknown_idf = math.log(1 + n) + 1.0
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, c in enumerate(counts):
            vec = self._vector(c)
            for t, w in vec.items():
                self._postings.setdefault(t, []).append((i, w))

    def __len__(self) -> int:
        return len(self.examples)

    def _vector(self, counts: Counter[str]) -> dict[str, float]:
        vec = {t: (1.0 + math.log(c)) * self._idf.get(t, self._unknown_idf) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in vec.values())) or 1.0
        return {t: w / norm for t, w in vec.items()}

    def neighbours(
        self, folded: str, k: int, min_similarity: float = 0.0, *, leave_out: bool = False
    ) -> list[Neighbour]:
        """The ``k`` most similar examples (cosine), most similar first.

        ``leave_out`` skips examples whose text is the query itself (leave-one-out checks).
        """
        acc: dict[int, float] = {}
        for t, w in self._vector(features(folded)).items():
            for i, wi in self._postings.get(t, ()):
                acc[i] = acc.get(i, 0.0) + w * wi
        if leave_out:
            acc = {i: s for i, s in acc.items() if self._folded[i] != folded}
        best = heapq.nlargest(k, acc.items(), key=lambda kv: (kv[1], -kv[0]))
        return [Neighbour(round(s, 4), self.examples[i]) for i, s in best if s >= min_similarity and s > 0]


# -- the classifier ------------------------------------------------------------------------------


def tone_features(
    vectors: np.ndarray, complaint_rule: Sequence[float], complaint_vote: Sequence[float]
) -> np.ndarray:
    """The tone detector's input: the sentence vector, the complaint rule's score and the neighbours'
    complaint vote (one row per message)."""
    extra = np.column_stack([np.asarray(complaint_rule, float), np.asarray(complaint_vote, float)])
    return np.hstack([np.asarray(vectors, dtype=np.float64).reshape(len(extra), -1), extra])


@dataclass(frozen=True)
class SemanticIntents:
    """The encoder and the logistic regressions fitted on its vectors of the labelled messages."""

    encode: Encoder
    model: SemanticModel
    #: how many labelled messages it learnt from, per source (the intents file, each labelled set)
    sources: dict[str, int]
    #: the vector of one message, e.g. through the encoder's query cache that retrieval fills too
    encode_one: Callable[[str], np.ndarray] | None = None
    #: the tone detector: P(complaint | vector, complaint rule score, complaint vote), or None
    complaint: SemanticModel | None = None

    def vector(self, text: str) -> np.ndarray:
        vec = self.encode_one(text) if self.encode_one is not None else self.encode([text])[0]
        return np.asarray(vec).reshape(1, -1)

    def probabilities(self, vector: np.ndarray) -> dict[str, float]:
        """Each intent's probability for a message's ``vector`` (from :meth:`vector`)."""
        p = self.model.probabilities(vector)[0]
        return {label: float(v) for label, v in zip(self.model.labels, p, strict=True)}

    def complaint_probability(self, vector: np.ndarray, rule: float, vote: float) -> float | None:
        if self.complaint is None:
            return None
        return float(self.complaint.probabilities(tone_features(vector, [rule], [vote]))[0][1])


@dataclass(frozen=True)
class IntentRules:
    language: str
    default: str
    order: tuple[str, ...]
    rules: dict[str, IntentRule]
    focus: tuple[Focus, ...] = ()
    examples: tuple[Example, ...] = ()
    settings: ClassifierSettings = field(default_factory=ClassifierSettings)
    #: parts of a message removed before matching (order cards the chat widget pastes, ...)
    ignore: tuple[re.Pattern[str], ...] = ()
    #: the semantic classifier (``with_encoder``); without it, rules and TF-IDF neighbours alone
    semantic: SemanticIntents | None = field(default=None, compare=False)
    index: ExampleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", ExampleIndex(self.examples))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.rules)

    def matching_form(self, text: str) -> str:
        """``fold(text)`` without the ``ignore`` parts: what rules, examples and the encoder see."""
        folded = fold(text)
        stripped = folded
        for p in self.ignore:
            stripped = p.sub(" ", stripped)
        # a message that is nothing but ignored parts keeps them: better than classifying nothing
        return folded if stripped == folded or not stripped.strip() else " ".join(stripped.split())

    def semantic_form(self, text: str) -> str:
        """What the encoder reads: the message as written (so retrieval's vector of it is reused),
        or its matching form when ``ignore`` removed something (an order card says nothing)."""
        form = self.matching_form(text)
        return text.strip() or text if form == fold(text) else form

    def with_encoder(
        self,
        encode: Encoder,
        extra: Sequence[LabelledText] = (),
        *,
        encode_one: Callable[[str], np.ndarray] | None = None,
        encoder_id: str = "",
        cache_dir: str | Path | None = None,
    ) -> IntentRules:
        """These rules plus a semantic classifier over ``encode`` vectors of the examples and ``extra``.

        The vectors of the examples are computed here, once (or read from ``cache_dir`` when
        ``encoder_id`` encoded the same texts before); each classification then encodes one message
        (with ``encode_one`` when given: an encoder's cached single-query path). With
        ``complaint_threshold`` > 0 the tone detector learns from the same messages (complaint or not).
        """
        known = set(self.order)
        learnt = [LabelledText(e.text, e.label, "toml") for e in self.examples]
        learnt += [m for m in extra if m.label in known]
        texts = [self.semantic_form(m.text) for m in learnt]
        vectors = cached_vectors(texts, encode, encoder_id, cache_dir)
        labels = [m.label for m in learnt]
        model = fit_logistic(vectors, labels, self.order, c=self.settings.semantic_c)
        tone = None
        if self.settings.complaint_threshold > 0 and "complaint" in known:
            evidence = [self._evidence(self.matching_form(m.text)) for m in learnt]
            x = tone_features(
                vectors,
                [rs.get("complaint", 0.0) for rs, _, _ in evidence],
                [ns.get("complaint", 0.0) for _, ns, _ in evidence],
            )
            y = ["complaint" if label == "complaint" else "other" for label in labels]
            tone = fit_logistic(x, y, ("other", "complaint"), c=self.settings.complaint_c)
        sources = dict(Counter(m.source for m in learnt))
        return replace(self, semantic=SemanticIntents(encode, model, sources, encode_one, tone))

    def without_encoder(self) -> IntentRules:
        return replace(self, semantic=None)

    def focus_terms(self, text: str) -> tuple[str, ...]:
        """Words an answer sentence should contain to answer what the customer asks (price, time, ...)."""
        folded = fold(text)
        out: list[str] = []
        for f in self.focus:
            if any(a in folded for a in f.ask):
                out.extend(p for p in f.prefer if p not in out)
        return tuple(out)

    def classify(self, text: str) -> tuple[str, float]:
        """The most likely intent and its confidence (0..1)."""
        r = self.explain(text)
        return r.label, r.confidence

    def _evidence(
        self, folded: str, *, leave_out: bool = False
    ) -> tuple[dict[str, float], dict[str, float], list[Neighbour]]:
        """Rule scores, neighbour scores and the neighbours of a message in its matching form."""
        s = self.settings
        rule_scores = {label: sc for label in self.order if (sc := self.rules[label].score(folded)) > 0}
        neighbours = self.index.neighbours(folded, s.k, s.min_similarity, leave_out=leave_out)
        neighbour_scores: dict[str, float] = {}
        if neighbours:
            total = sum(n.similarity for n in neighbours)
            strength = min(1.0, neighbours[0].similarity / s.full_strength)
            for n in neighbours:
                label = n.example.label
                neighbour_scores[label] = neighbour_scores.get(label, 0.0) + n.similarity / total * strength
        return rule_scores, neighbour_scores, neighbours

    def explain(self, text: str, *, leave_out: bool = False) -> IntentResult:
        """The classification with its evidence; ``leave_out`` ignores an example equal to ``text``."""
        folded = self.matching_form(text)
        s = self.settings
        rule_scores, neighbour_scores, neighbours = self._evidence(folded, leave_out=leave_out)
        vector = self.semantic.vector(self.semantic_form(text)) if self.semantic else None
        semantic_scores = self.semantic.probabilities(vector) if self.semantic and vector is not None else {}
        scores = {
            label: rule_scores.get(label, 0.0)
            + s.neighbour_weight * neighbour_scores.get(label, 0.0)
            + s.semantic_weight
            * max(0.0, semantic_scores.get(label, 0.0) - s.semantic_floor)
            / (1.0 - s.semantic_floor)
            for label in self.order
        }
        scores[self.default] = max(scores[self.default], s.default_score)
        # highest score; ties go to the intent listed first in ``order``
        label = max(self.order, key=lambda lb: (scores[lb], -self.order.index(lb)))
        complaint = None
        if self.semantic and vector is not None and s.complaint_threshold > 0:
            complaint = self.semantic.complaint_probability(
                vector, rule_scores.get("complaint", 0.0), neighbour_scores.get("complaint", 0.0)
            )
        if (
            complaint is not None
            and complaint >= s.complaint_threshold
            and label in COMPLAINT_OVERRIDES
            and "complaint" in scores
        ):
            # the tone overrides the topic: complaint now leads by the detector's margin
            scores["complaint"] = scores[label] + 0.05 + (complaint - s.complaint_threshold)
            label = "complaint"
        top = s.sharpness * scores[label]
        z = sum(math.exp(s.sharpness * v - top) for v in scores.values())
        return IntentResult(
            label=label,
            confidence=round(1.0 / z, 3),
            scores={k: round(v, 4) for k, v in scores.items()},
            rule_scores={k: round(v, 4) for k, v in rule_scores.items()},
            neighbour_scores={k: round(v, 4) for k, v in neighbour_scores.items()},
            neighbours=tuple(neighbours),
            semantic_scores={k: round(v, 4) for k, v in semantic_scores.items() if v >= 0.0001},
            complaint_probability=None if complaint is None else round(complaint, 4),
        )


_SEMANTIC: dict[tuple[int, str, tuple[str, ...]], IntentRules] = {}


def semantic_intents(
    rules: IntentRules,
    encode: Encoder,
    *,
    encode_one: Callable[[str], np.ndarray] | None = None,
    encoder_id: str = "",
    cache_dir: str | Path | None = None,
    exclude: Sequence[str | Path] = (),
) -> IntentRules:
    """``rules`` with the semantic classifier learnt from their examples and ``default_example_files``.

    Built once per process for the same rules, encoder and exclusions (an app made twice, the
    evaluation of several sets): fitting reads the labelled files and encodes or loads their vectors.
    """
    key = (id(rules), encoder_id, tuple(sorted(str(p) for p in exclude)))
    hit = _SEMANTIC.get(key)
    if hit is not None and hit.semantic is not None and hit.semantic.encode is encode:
        return hit
    extra, notes = default_example_files(exclude=exclude)
    for note in notes:
        log.info("intents: %s", note)
    built = rules.with_encoder(
        encode, extra, encode_one=encode_one, encoder_id=encoder_id, cache_dir=cache_dir
    )
    _SEMANTIC[key] = built
    return built


# -- the strict loader ---------------------------------------------------------------------------


def _problem(key: str, zh: str, en: str) -> NormsProblem:
    return NormsProblem(key=key, message_zh=zh, message_en=en)


def _unknown_keys(table: dict[str, Any], allowed: Iterable[str], prefix: str) -> list[NormsProblem]:
    allowed = tuple(allowed)
    return [
        _problem(
            f"{prefix}{k}",
            f"未知的键 {k}；可用的键：{', '.join(allowed)}",
            f"unknown key {k!r}; allowed keys: {', '.join(allowed)}",
        )
        for k in table
        if k not in allowed
    ]


def _string_list(value: Any, *, allow_empty: bool = True) -> bool:
    return (
        isinstance(value, list)
        and (allow_empty or bool(value))
        and all(isinstance(x, str) and x.strip() for x in value)
    )


def _compile_patterns(raw: list[Any], key: str, problems: list[NormsProblem]) -> list[re.Pattern[str]]:
    """Each regex of ``raw`` compiled; a bad one is reported as ``key[i]`` and left out."""
    compiled = []
    for i, p in enumerate(raw):
        try:
            if not isinstance(p, str) or not p:
                raise re.error("patterns must be non-empty strings")
            compiled.append(re.compile(p))
        except re.error as e:
            problems.append(
                _problem(f"{key}[{i}]", f"正则表达式无效：{e}", f"invalid regular expression: {e}")
            )
    return compiled


def _load_classifier(spec: Any, problems: list[NormsProblem]) -> ClassifierSettings:
    if spec is None:
        return ClassifierSettings()
    if not isinstance(spec, dict):
        problems.append(_problem("classifier", "classifier 必须是表", "classifier must be a table"))
        return ClassifierSettings()
    problems.extend(_unknown_keys(spec, _CLASSIFIER_LIMITS, "classifier."))
    values: dict[str, Any] = {}
    for key, (kind, lo, hi) in _CLASSIFIER_LIMITS.items():
        if key not in spec:
            continue
        v = spec[key]
        ok = (
            isinstance(v, int) and not isinstance(v, bool)
            if kind is int
            else isinstance(v, int | float) and not isinstance(v, bool)
        )
        if not ok or not lo <= v <= hi:
            kind_zh = "整数" if kind is int else "数"
            problems.append(
                _problem(
                    f"classifier.{key}",
                    f"{key} 必须是 {lo:g} 到 {hi:g} 之间的{kind_zh}",
                    f"{key} must be a{'n integer' if kind is int else ' number'} from {lo:g} to {hi:g}",
                )
            )
            continue
        values[key] = kind(v)
    return ClassifierSettings(**values)


def _load_intent(
    label: str, spec: Any, problems: list[NormsProblem], seen: dict[str, str]
) -> tuple[IntentRule | None, list[Example]]:
    key = f"intents.{label}"
    if label not in INTENTS:
        problems.append(_problem(key, f"未知意图 {label}", f"unknown intent {label!r}; use one of {INTENTS}"))
        return None, []
    if not isinstance(spec, dict):
        problems.append(_problem(key, f"{key} 必须是表", f"{key} must be a table"))
        return None, []
    problems.extend(_unknown_keys(spec, _INTENT_KEYS, f"{key}."))
    ok = True
    weight = spec.get("weight", 0.5)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
        problems.append(_problem(f"{key}.weight", "权重必须在 0 到 1 之间", "weight must be in (0, 1]"))
        ok = False
    terms = spec.get("terms", [])
    if not _string_list(terms):
        problems.append(
            _problem(
                f"{key}.terms", "terms 必须是非空字符串列表", "terms must be a list of non-empty strings"
            )
        )
        ok = False
        terms = []
    pats = spec.get("patterns", [])
    if not isinstance(pats, list):
        problems.append(
            _problem(f"{key}.patterns", "patterns 必须是正则表达式列表", "patterns must be a list of regexes")
        )
        ok, pats = False, []
    before = len(problems)
    compiled = _compile_patterns(pats, f"{key}.patterns", problems)
    ok = ok and len(problems) == before
    examples: list[Example] = []
    raw = spec.get("examples", [])
    if not isinstance(raw, list):
        problems.append(
            _problem(f"{key}.examples", "examples 必须是字符串列表", "examples must be a list of strings")
        )
        raw = []
    for i, text in enumerate(raw):
        ekey = f"{key}.examples[{i}]"
        if not isinstance(text, str) or not text.strip():
            problems.append(_problem(ekey, "示例必须是非空字符串", "an example must be a non-empty string"))
            continue
        folded = fold(text.strip())
        if folded in seen:
            problems.append(
                _problem(
                    ekey,
                    f"示例重复（已见于 {seen[folded]}）：{text}",
                    f"duplicate example (already at {seen[folded]}): {text!r}",
                )
            )
            continue
        seen[folded] = ekey
        examples.append(Example(label, text.strip()))
    if not ok:
        return None, examples
    rule = IntentRule(label, float(weight), tuple(fold(x) for x in terms), tuple(compiled))
    return rule, examples


def loads_intents(text: str, *, source: str = "<string>") -> IntentRules:
    """Parse and validate an intents file; every problem is reported with its key, nothing half-loaded."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NormsFileError(
            source,
            [_problem("", f"意图规则文件不是有效的 TOML：{e}", f"the intent rules are not valid TOML: {e}")],
        ) from e
    problems: list[NormsProblem] = _unknown_keys(data, _TOP_KEYS, "")
    language = data.get("language", "zh")
    if not isinstance(language, str) or not language:
        problems.append(
            _problem("language", "language 必须是非空字符串", "language must be a non-empty string")
        )
        language = "zh"
    intents_spec = data.get("intents")
    if not isinstance(intents_spec, dict) or not intents_spec:
        problems.append(
            _problem("intents", "缺少 [intents.*] 意图定义", "no intents: define them as [intents.<label>]")
        )
        intents_spec = {}
    rules: dict[str, IntentRule] = {}
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for label, spec in intents_spec.items():
        rule, exs = _load_intent(label, spec, problems, seen)
        examples.extend(exs)
        if rule is not None:
            rules[label] = rule
    default = data.get("default", "inquiry")
    if default not in intents_spec:
        problems.append(
            _problem(
                "default",
                "默认意图必须在 intents 中定义",
                "the default intent must be defined under [intents]",
            )
        )
    order_raw = data.get("order", list(intents_spec))
    if not _string_list(order_raw):
        problems.append(_problem("order", "order 必须是意图名称列表", "order must be a list of intent names"))
        order_raw = list(intents_spec)
    order = tuple(dict.fromkeys(order_raw))
    missing = [o for o in order if o not in intents_spec]
    if missing:
        problems.append(
            _problem(
                "order", f"order 中的意图未定义：{missing}", f"intents in order are not defined: {missing}"
            )
        )
    unordered = [label for label in intents_spec if label in INTENTS and label not in order]
    if unordered:
        problems.append(
            _problem(
                "order",
                f"这些意图不在 order 中：{unordered}",
                f"these intents are missing from order: {unordered}",
            )
        )
    settings = _load_classifier(data.get("classifier"), problems)
    ignore_raw = data.get("ignore", [])
    if not isinstance(ignore_raw, list):
        problems.append(_problem("ignore", "ignore 必须是正则表达式列表", "ignore must be a list of regexes"))
        ignore_raw = []
    ignore = _compile_patterns(ignore_raw, "ignore", problems)
    focus: list[Focus] = []
    focus_raw = data.get("focus", [])
    if not isinstance(focus_raw, list):
        problems.append(
            _problem("focus", "focus 必须是 [[focus]] 表的数组", "focus must be an array of [[focus]]")
        )
        focus_raw = []
    for i, f in enumerate(focus_raw):
        if isinstance(f, dict):
            problems.extend(_unknown_keys(f, _FOCUS_KEYS, f"focus[{i}]."))
        ask = f.get("ask") if isinstance(f, dict) else None
        prefer = f.get("prefer") if isinstance(f, dict) else None
        if not (_string_list(ask, allow_empty=False) and _string_list(prefer, allow_empty=False)):
            problems.append(
                _problem(
                    f"focus[{i}]",
                    "ask 和 prefer 必须是非空字符串列表",
                    "ask and prefer must be lists of non-empty strings",
                )
            )
            continue
        assert isinstance(ask, list) and isinstance(prefer, list)
        focus.append(Focus(tuple(fold(x) for x in ask), tuple(prefer)))
    if problems:
        raise NormsFileError(source, problems)
    return IntentRules(
        language,
        default,
        order,
        {label: rules[label] for label in order},
        tuple(focus),
        tuple(examples),
        settings,
        tuple(ignore),
    )


def load_intents(path: str | Path) -> IntentRules:
    """Load an intents file (see ``intents_zh.toml``); raises ``NormsFileError`` naming every bad key."""
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NormsFileError(
            source, [_problem("", f"无法读取意图规则文件：{e}", f"cannot read the intent rules: {e}")]
        ) from e
    return loads_intents(text, source=source)


def packaged_intents_path(language: str = "zh") -> Path:
    return Path(__file__).parent / f"intents_{language}.toml"


@lru_cache(maxsize=4)
def default_intents(language: str = "zh") -> IntentRules:
    """The packaged intents of ``language``, loaded and indexed once per process."""
    if language not in PACKAGED_INTENT_LANGUAGES:
        raise NormsFileError(
            f"intents_{language}.toml",
            [
                _problem(
                    "language",
                    f"没有 {language} 的意图规则；可用：{', '.join(PACKAGED_INTENT_LANGUAGES)}，或给出文件路径",
                    f"no packaged intent rules for {language!r}; use one of "
                    f"{', '.join(PACKAGED_INTENT_LANGUAGES)} or give a file path",
                )
            ],
        )
    return load_intents(packaged_intents_path(language))

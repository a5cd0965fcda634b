"""The one metric API of the evaluators (ragas / deepeval style).

A ``Metric`` scores one item (a draft case, an agent reply, a conversation) as a ``Score``: a value
and a reason a person can read. ``aggregate`` folds the per-item scores into one ``Score`` for the
run. A metric that does not apply to an item (no expected intent, no timestamps, no facts to check)
scores NaN, never a fake 0, and NaN scores are left out of the aggregate; an aggregate over nothing
is NaN too. ``details`` carry what a single number cannot (a confusion matrix, counts, a histogram).

Every evaluator (``eval.drafts``, ``eval.transcripts``) builds its metrics on this class, and every
report (``eval.report``) reads them the same way, so any report can be compared with a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
NAN = float("nan")


@dataclass(frozen=True)
class Score:
    """A metric's value with the reason for it; NaN when the metric does not apply."""

    value: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def applies(self) -> bool:
        return not math.isnan(self.value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": json_number(self.value), "reason": self.reason}
        if self.details:
            d["details"] = self.details
        return d


def json_number(v: float) -> float | None:
    """NaN and infinities are not JSON: they are written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else round(v, 6)


def na(reason: str) -> Score:
    """The metric does not apply to this item."""
    return Score(NAN, reason)


class Metric(Generic[T]):
    """One metric. Subclasses set ``name`` and implement ``score``; ``aggregate`` defaults to the mean.

    ``higher_is_better`` says which way a change is an improvement (latency: lower). ``group`` sorts
    metrics into the sections of a report.
    """

    name: str = ""
    description: str = ""
    higher_is_better: bool = True
    group: str = "quality"

    def score(self, item: T) -> Score:
        raise NotImplementedError

    def aggregate(self, scores: Sequence[Score]) -> Score:
        return mean_of(scores)


def mean_of(scores: Sequence[Score], unit: str = "cases") -> Score:
    applied = [s.value for s in scores if s.applies]
    if not applied:
        return na(f"not applicable to any of the {len(scores)} {unit}")
    value = sum(applied) / len(applied)
    skipped = len(scores) - len(applied)
    rest = f" ({skipped} n/a)" if skipped else ""
    if all(v in (0.0, 1.0) for v in applied):  # a pass/fail metric: say how many passed
        return Score(value, f"{int(sum(applied))} of {len(applied)} {unit}{rest}", {"n": len(applied)})
    return Score(value, f"mean over {len(applied)} {unit}{rest}", {"n": len(applied)})


def ratio(hits: int, total: int, what: str) -> Score:
    """``hits / total`` with a reason; NaN when ``total`` is 0."""
    if total == 0:
        return na(f"no {what}")
    return Score(hits / total, f"{hits} of {total} {what}", {"hits": hits, "total": total})


def sum_details(scores: Sequence[Score], key: str) -> int:
    return sum(int(s.details.get(key, 0)) for s in scores)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return NAN
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def histogram(values: Sequence[float], edges: Sequence[float]) -> dict[str, Any]:
    """Counts per bin ``[edges[i], edges[i+1])``; the last bin also takes everything above."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = next((j for j in range(len(edges) - 1) if v < edges[j + 1]), len(edges) - 2)
        counts[max(i, 0)] += 1
    return {"edges": list(edges), "counts": counts}


@dataclass(frozen=True)
class MetricRun:
    """Every per-item score of one metric and its aggregate."""

    metric: Metric[Any]
    scores: list[Score]
    total: Score


def run_metrics(metrics: Sequence[Metric[T]], items: Sequence[T]) -> dict[str, MetricRun]:
    out: dict[str, MetricRun] = {}
    for m in metrics:
        scores = [m.score(item) for item in items]
        out[m.name] = MetricRun(m, scores, m.aggregate(scores))
    return out


class FunctionMetric(Metric[T]):
    """A metric from a scoring function (small metrics need no class of their own)."""

    def __init__(
        self,
        name: str,
        fn: Callable[[T], Score],
        *,
        description: str = "",
        higher_is_better: bool = True,
        group: str = "quality",
        aggregate: Callable[[Sequence[Score]], Score] | None = None,
    ) -> None:
        self.name = name
        self._fn = fn
        self.description = description
        self.higher_is_better = higher_is_better
        self.group = group
        self._aggregate = aggregate

    def score(self, item: T) -> Score:
        return self._fn(item)

    def aggregate(self, scores: Sequence[Score]) -> Score:
        return self._aggregate(scores) if self._aggregate is not None else mean_of(scores)

"""What every drafter receives and returns, and the narrow ``Drafter`` protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from knowledge.retriever import Hit
from prompts import Norms

#: Draft kinds, in the API and the metrics.
DRAFT_KINDS = (
    "answer",
    "clarify",
    "escalate",
    "tactful_refusal",
    "closing",
    "greeting",
    "complaint",
    "suggestion",
    "customer_info",
)


@dataclass(frozen=True)
class Turn:
    role: str  # "customer" or "agent"
    text: str
    at: str | None = None


@dataclass(frozen=True)
class Citation:
    snippet_id: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"snippet_id": self.snippet_id, "text": self.text, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Plan:
    """What the reply must do, decided by the pipeline before any drafting."""

    kind: str  # one of DRAFT_KINDS: the main kind of this suggestion
    hits: tuple[Hit, ...] = ()  # the snippets the drafts may use (best first)
    alternatives: tuple[Hit, ...] = ()  # for clarify: the close candidates
    reason: str = ""
    promotion: Hit | None = None  # a current promotion on the customer's topic, for one draft


@dataclass(frozen=True)
class DraftJob:
    customer_message: str
    history: tuple[Turn, ...]
    plan: Plan
    n: int
    norms: Norms
    first_reply: bool
    customer_waited_s: float | None
    intent: str
    #: Words the answer's sentences should contain to answer what was asked (price, time, ...).
    focus_terms: tuple[str, ...] = ()
    #: The customer writes traditional characters: the drafts are converted (norms.to_traditional).
    traditional: bool = False
    #: The service opens every draft with its own apology for a late reply: the body needs none.
    apology_given: bool = False


@dataclass
class DraftCandidate:
    text: str
    kind: str
    citations: list[Citation] = field(default_factory=list)
    style: str = ""  # concise, detailed, follow_up, ...
    source: str = "template"  # template or llm


class DrafterError(Exception):
    """The drafter could not produce drafts (timeout, error status, malformed output)."""


class Drafter(Protocol):
    name: str

    def draft(self, job: DraftJob) -> list[DraftCandidate]: ...


class StreamingDrafter(Drafter, Protocol):
    def stream(self, job: DraftJob) -> AsyncIterator[dict[str, Any]]:
        """Events while drafting: ``{"type": "delta", "index", "text"}`` ... then ``{"type": "drafts", ...}``."""
        ...

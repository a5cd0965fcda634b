"""The out-of-hours and follow-up passes of ``kefu eval drafts``: the openings of a reply said once.

The bundled cases run at one fixed time in working hours (``--at``), which never shows how a reply
opens out of hours or on a later turn (issue 19: 您好…您好, 非常抱歉…非常抱歉, the late-reply apology
on a follow-up one minute after the agent replied). Each case therefore also runs

- ``out_of_hours``: in a new conversation while the service is closed (the evening of ``--at``): the
  first reply greets once and apologises once for the message left waiting;
- ``follow_up``: the agent approves the first out-of-hours draft, and one minute later the customer
  writes the same message again: the reply neither greets nor apologises for a late reply.

``openings_once`` scores every draft of the three passes on those openings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eval.metrics import Score, na
from prompts import Norms, Violation

PASSES: tuple[str, ...] = ("out_of_hours", "follow_up")
#: The follow-up comes this long after the agent's reply.
FOLLOW_UP_AFTER_S = 60
#: The rules a draft's openings break: a greeting missing or said twice, stacked apologies, no
#: apology where the customer waited.
OPENING_RULES: tuple[str, ...] = (
    "greeting",
    "repeated_greeting",
    "stacked_apology",
    "late_without_apology",
)


def out_of_hours_at(norms: Norms, at: datetime) -> datetime:
    """``at`` when the service is closed then, else the first moment it closes after ``at`` plus three
    hours (the evening of a working day: messages left there wait for the next morning)."""
    if not norms.is_open(at):
        return at
    t = at
    for _ in range(7 * 48):
        t += timedelta(minutes=30)
        if not norms.is_open(t) and not norms.is_open(t + timedelta(hours=3)):
            return t + timedelta(hours=3)
    raise ValueError("the service never closes for three hours within a week; no out-of-hours pass")


@dataclass(frozen=True)
class PassDraft:
    """One draft of a pass, as the openings metric needs it."""

    text: str
    violations: Sequence[Violation]


@dataclass(frozen=True)
class PassResult:
    """What one pass of a case gave: the response's openings flags and the drafts."""

    name: str  # in_hours, out_of_hours, follow_up
    response: dict[str, Any] | None
    drafts: Sequence[PassDraft]
    #: whether the offline apology is due: out of hours, unless the case's history ends with the
    #: agent's reply (the conversation is going on: the customer is being answered, not left waiting)
    late_due: bool = False


def openings_once(results: Sequence[PassResult], offline_apology: str) -> Score:
    """Share of the drafts of all passes whose openings are right: one greeting on a first reply and
    none later, one apology, the offline apology out of hours on a first reply and never on a
    follow-up after the agent replied."""
    total = good = 0
    problems: list[str] = []
    ran = False
    for r in results:
        if r.response is None or not r.drafts:
            continue
        ran = True
        for i, d in enumerate(r.drafts, start=1):
            total += 1
            wrong = [v.rule_id for v in d.violations if v.rule_id in OPENING_RULES]
            late = bool(r.response.get("late_apology"))
            if r.late_due and not late:
                wrong.append("no offline apology")
            if not r.late_due and (late or offline_apology in d.text):
                wrong.append(f"offline apology where the customer did not wait ({r.name})")
            if wrong:
                problems.append(f"{r.name} draft {i}: {', '.join(dict.fromkeys(wrong))}")
            else:
                good += 1
    if not ran:
        return na("no pass gave drafts")
    reason = f"{good} of {total} drafts open right" + (f": {'; '.join(problems)}" if problems else "")
    return Score(good / total, reason, {"hits": good, "total": total})

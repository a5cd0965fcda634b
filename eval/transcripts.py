"""Transcript inspection (质检): real conversations scored against the norms.

``kefu eval transcripts FILE --report DIR``. FILE is JSONL, one conversation a line::

    {"session_id": "...", "agent_id"?: "...",
     "turns": [{"role": "user"|"customer"|"agent", "text": "...", "at"?: ISO 8601 or epoch seconds,
                "agent_id"?: "..."}]}

(the JDDC sample in ../shared/data/jddc-sample/ is in this format, without timestamps or agents).
Every agent reply is checked with the norms (the first agent reply of a conversation must greet;
with timestamps, a reply after more than the norms' wait limit must apologise first). The report
gives each rule's violation rate overall and per agent, the first-response time and the share of
replies within the limit where timestamps exist (NaN otherwise), and the worst conversations with
their flagged spans. ``kefu eval norms --dialogues`` reads its agent turns through the same reader.

The same conversations can feed ``kefu eval drafts``: each customer turn becomes a case whose
history is the conversation before it and whose reference reply is the agent's next turn.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.drafts import DatasetProblems, DraftCase, HistoryTurn, read_dataset_text
from eval.metrics import (
    FunctionMetric,
    Metric,
    MetricRun,
    Score,
    histogram,
    na,
    percentile,
    ratio,
    run_metrics,
    sum_details,
)
from knowledge.errors import Problem
from prompts import CheckContext, Norms, Violation

NO_AGENT = "(unknown)"
RESPONSE_EDGES_S = (0, 10, 30, 60, 120, 300, 600, 1800)


@dataclass(frozen=True)
class TranscriptTurn:
    role: str  # user or agent
    text: str
    at: datetime | None = None
    agent_id: str | None = None


@dataclass(frozen=True)
class Conversation:
    session_id: str
    turns: tuple[TranscriptTurn, ...]
    agent_id: str | None = None
    line: int = 0


def _parse_at(v: Any) -> datetime:
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, int | float):
        if not math.isfinite(v):
            raise ValueError
        return datetime.fromtimestamp(v, UTC)
    if isinstance(v, str):
        at = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    raise ValueError


def conversation_from(obj: Any, name: str, line: int, problems: list[Problem]) -> Conversation | None:
    def bad(field_: str | None, zh: str, en: str) -> None:
        problems.append(Problem(name, f"line {line}", field_, zh, en))

    n0 = len(problems)
    if not isinstance(obj, dict):
        bad(None, "应为 JSON 对象", "expected a JSON object")
        return None
    sid = obj.get("session_id")
    if not isinstance(sid, str | int) or isinstance(sid, bool) or not str(sid).strip():
        bad("session_id", "缺少 session_id", "session_id is missing")
    turns_raw = obj.get("turns")
    if not isinstance(turns_raw, list):
        bad("turns", "turns 应为列表", "turns must be a list of {role, text}")
        return None
    conv_agent = obj.get("agent_id")
    turns: list[TranscriptTurn] = []
    for i, t in enumerate(turns_raw):
        role = t.get("role") if isinstance(t, dict) else None
        text = t.get("text") if isinstance(t, dict) else None
        if role not in ("user", "customer", "agent") or not isinstance(text, str):
            bad(
                f"turns[{i}]",
                "每一轮应为 {role: user|agent, text}",
                "each turn must be {role: user|agent, text}",
            )
            continue
        at = None
        if isinstance(t, dict) and t.get("at") not in (None, ""):
            try:
                at = _parse_at(t["at"])
            except (ValueError, OverflowError, OSError):
                bad(
                    f"turns[{i}].at",
                    "时间应为 ISO 8601 或 Unix 秒",
                    "at must be an ISO 8601 time or Unix seconds",
                )
                continue
        agent = t.get("agent_id") if isinstance(t, dict) else None
        turns.append(
            TranscriptTurn(
                "user" if role == "customer" else role,
                text,
                at,
                str(agent) if agent not in (None, "") else None,
            )
        )
    if len(problems) > n0:
        return None
    return Conversation(
        str(sid), tuple(turns), str(conv_agent) if conv_agent not in (None, "") else None, line
    )


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every conversation of a JSONL file; any bad line rejects the file (``DatasetProblems``)."""
    name = Path(path).name
    text = read_dataset_text(path)
    problems: list[Problem] = []
    out = []
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(Problem(name, f"line {n}", None, f"JSON 格式错误：{e.msg}", f"bad JSON: {e.msg}"))
            continue
        conv = conversation_from(obj, name, n, problems)
        if conv is not None:
            out.append(conv)
    if problems:
        raise DatasetProblems(problems)
    return out


# -- agent replies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentReply:
    session_id: str
    index: int  # position of the turn in the conversation
    text: str
    first_reply: bool
    agent_id: str
    #: seconds from the first customer turn it answers to this reply (None without timestamps)
    response_s: float | None = None


def agent_replies(conv: Conversation) -> Iterator[AgentReply]:
    """The agent turns of a conversation, the first one marked, with response times where known."""
    first = True
    waiting_since: datetime | None = None
    unanswered = False
    for i, t in enumerate(conv.turns):
        if t.role == "user":
            if not unanswered:
                waiting_since = t.at
            unanswered = True
            continue
        response = None
        if unanswered and waiting_since is not None and t.at is not None:
            response = max(0.0, (t.at - waiting_since).total_seconds())
        yield AgentReply(conv.session_id, i, t.text, first, t.agent_id or conv.agent_id or NO_AGENT, response)
        first = False
        unanswered = False
        waiting_since = None


def cases_from_conversations(convs: Sequence[Conversation]) -> list[DraftCase]:
    """One draft case per customer turn: the conversation before it as history, the agent's next turn
    (when it follows directly) as the reference reply. No expectations: only norms, groundedness,
    similarity and latency apply."""
    cases = []
    for conv in convs:
        for i, t in enumerate(conv.turns):
            if t.role != "user" or not t.text.strip():
                continue
            nxt = conv.turns[i + 1] if i + 1 < len(conv.turns) else None
            history = tuple(
                HistoryTurn(
                    "customer" if h.role == "user" else "agent", h.text, h.at.isoformat() if h.at else None
                )
                for h in conv.turns[:i]
                if h.text.strip()
            )
            cases.append(
                DraftCase(
                    id=f"{conv.session_id}#{i}",
                    customer_message=t.text,
                    history=history[-200:],
                    reference_reply=nxt.text if nxt is not None and nxt.role == "agent" else None,
                    line=conv.line,
                    source=f"{conv.session_id} turn {i}",
                )
            )
    return cases


# -- inspection --------------------------------------------------------------------------------------


@dataclass
class ReplyOutcome:
    reply: AgentReply
    violations: list[Violation]
    wait_limit_s: float


def inspect(convs: Sequence[Conversation], norms: Norms) -> list[ReplyOutcome]:
    out = []
    for conv in convs:
        for r in agent_replies(conv):
            ctx = CheckContext(first_reply=r.first_reply, customer_waited_s=r.response_s)
            out.append(ReplyOutcome(r, norms.check(r.text, ctx), norms.wait_limit_s))
    return out


def _keeps(rule_id: str | None, severities: tuple[str, ...] | None = None) -> Callable[[ReplyOutcome], Score]:
    def score(o: ReplyOutcome) -> Score:
        bad = [
            v
            for v in o.violations
            if (rule_id is None or v.rule_id == rule_id) and (severities is None or v.severity in severities)
        ]
        if not bad:
            return Score(1.0, "keeps it", {"hits": 1, "total": 1})
        return Score(0.0, "; ".join(v.matched or v.message for v in bad), {"hits": 0, "total": 1})

    return score


def _replies_ratio(scores: Sequence[Score]) -> Score:
    return ratio(sum_details(scores, "hits"), sum_details(scores, "total"), "replies keep it")


def _within(o: ReplyOutcome) -> Score:
    s = o.reply.response_s
    if s is None:
        return na("no timestamps")
    ok = s <= o.wait_limit_s
    return Score(1.0 if ok else 0.0, f"answered after {s:.0f} s")


def _response(o: ReplyOutcome) -> Score:
    s = o.reply.response_s
    return na("no timestamps") if s is None else Score(s, f"{s:.0f} s")


def _seconds_aggregate(scores: Sequence[Score]) -> Score:
    values = [s.value for s in scores if s.applies]
    if not values:
        return na(f"no timestamps in any of the {len(scores)} items")
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return Score(
        p50,
        f"p50 {p50:.0f} s, p95 {p95:.0f} s, mean {sum(values) / len(values):.0f} s over {len(values)}",
        {
            "p50": round(p50, 3),
            "p95": round(p95, 3),
            "mean": round(sum(values) / len(values), 3),
            "n": len(values),
            "histogram": histogram(values, RESPONSE_EDGES_S),
        },
    )


def reply_metrics(norms: Norms) -> list[Metric[ReplyOutcome]]:
    limit = int(norms.wait_limit_s)
    m: list[Metric[ReplyOutcome]] = [
        FunctionMetric(
            "error_rule_pass",
            _keeps(None, ("error",)),
            description="replies that break no error-level norm",
            group="norms",
            aggregate=_replies_ratio,
        ),
        FunctionMetric(
            "replies_clean",
            _keeps(None),
            description="replies that break no norm at all",
            group="norms",
            aggregate=_replies_ratio,
        ),
    ]
    m += [
        FunctionMetric(
            f"norms.{r.id}",
            _keeps(r.id),
            description=f"replies keeping the rule {r.id} ({r.severity})",
            group="norms",
            aggregate=_replies_ratio,
        )
        for r in norms.rules.values()
        if r.enabled
    ]
    m += [
        FunctionMetric(
            f"replies_within_{limit}s",
            _within,
            description=f"replies sent within {limit} s of the customer's message (timestamps needed)",
            group="latency",
            aggregate=lambda s: ratio(
                int(sum(x.value for x in s if x.applies)), sum(1 for x in s if x.applies), "timed replies"
            ),
        ),
        FunctionMetric(
            "response_s",
            _response,
            description="seconds from the customer's message to the reply (value: p50)",
            higher_is_better=False,
            group="latency",
            aggregate=_seconds_aggregate,
        ),
    ]
    return m


def _first_response(conv: Conversation) -> Score:
    first_user = next((t for t in conv.turns if t.role == "user"), None)
    if first_user is None:
        return na("no customer turn")
    reply = next((r for r in agent_replies(conv)), None)
    if reply is None:
        return na("never answered")
    if reply.response_s is None:
        return na("no timestamps")
    return Score(reply.response_s, f"first reply after {reply.response_s:.0f} s")


def conversation_metrics() -> list[Metric[Conversation]]:
    return [
        FunctionMetric(
            "first_response_s",
            _first_response,
            description="seconds to the first agent reply of a conversation (value: p50)",
            higher_is_better=False,
            group="latency",
            aggregate=_seconds_aggregate,
        )
    ]


@dataclass
class Inspection:
    conversations: list[Conversation]
    outcomes: list[ReplyOutcome]
    runs: dict[str, MetricRun]
    per_agent: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst: list[dict[str, Any]] = field(default_factory=list)


def per_agent(outcomes: Sequence[ReplyOutcome], norms: Norms) -> dict[str, dict[str, Any]]:
    """Each agent's replies and per-rule violation rates (agents with most replies first)."""
    groups: dict[str, list[ReplyOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.reply.agent_id].append(o)
    out = {}
    for agent, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        n = len(items)
        counts = Counter(rid for o in items for rid in dict.fromkeys(v.rule_id for v in o.violations))
        timed = [o.reply.response_s for o in items if o.reply.response_s is not None]
        out[agent] = {
            "replies": n,
            "clean": round(sum(1 for o in items if not o.violations) / n, 4),
            "violation_rate": {r: round(counts.get(r, 0) / n, 4) for r in norms.rules},
            "within_limit": round(sum(1 for s in timed if s <= norms.wait_limit_s) / len(timed), 4)
            if timed
            else None,
        }
    return out


def worst_conversations(
    convs: Sequence[Conversation], outcomes: Sequence[ReplyOutcome], n: int
) -> list[dict[str, Any]]:
    """The conversations with the most error-level, then most violations, with their flagged turns."""
    by_session: dict[str, list[ReplyOutcome]] = defaultdict(list)
    for o in outcomes:
        by_session[o.reply.session_id].append(o)
    ranked = []
    for conv in convs:
        items = by_session.get(conv.session_id, [])
        errors = sum(1 for o in items for v in o.violations if v.severity == "error")
        total = sum(len(o.violations) for o in items)
        if total:
            ranked.append((errors, total, conv, items))
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2].session_id))
    out = []
    for errors, total, conv, items in ranked[:n]:
        flagged = {o.reply.index: o for o in items}
        out.append(
            {
                "session_id": conv.session_id,
                "errors": errors,
                "violations": total,
                "turns": [
                    {
                        "role": t.role,
                        "text": t.text,
                        "violations": [v.to_dict() for v in flagged[i].violations] if i in flagged else [],
                    }
                    for i, t in enumerate(conv.turns)
                ],
            }
        )
    return out


def run_inspection(convs: Sequence[Conversation], norms: Norms, *, worst: int = 10) -> Inspection:
    outcomes = inspect(convs, norms)
    runs = run_metrics(reply_metrics(norms), outcomes)
    runs.update(run_metrics(conversation_metrics(), list(convs)))
    return Inspection(
        list(convs),
        outcomes,
        runs,
        per_agent=per_agent(outcomes, norms),
        worst=worst_conversations(convs, outcomes, worst),
    )


def build_report(ins: Inspection, norms: Norms, path: str) -> dict[str, Any]:
    from eval.report import build, rule_figure, spans_of

    figures: dict[str, Any] = {
        "rules": rule_figure(ins.runs, {r.id: r.severity for r in norms.rules.values()})
    }
    resp = ins.runs["response_s"].total
    if resp.applies:
        figures["latency"] = {
            **resp.details["histogram"],
            "unit": "seconds to reply",
            "title": "Response times",
            "metric": "response_s",
        }
    timed = sum(1 for o in ins.outcomes if o.reply.response_s is not None)
    setup = {
        "file": path,
        "conversations": len(ins.conversations),
        "agent_replies": len(ins.outcomes),
        "timed_replies": timed,
        "agents": len(ins.per_agent),
        "norms": norms.source,
    }
    failing = []
    for w in ins.worst:
        texts = []
        for t in w["turns"]:
            texts.append(
                {
                    "role": "客户" if t["role"] == "user" else "客服",
                    "text": t["text"],
                    "spans": spans_of(t["text"], t["violations"]),
                }
            )
        reasons = sorted(
            {v["rule_id"] for t in w["turns"] for v in t["violations"]},
            key=lambda r: list(norms.rules).index(r) if r in norms.rules else 99,
        )
        failing.append(
            {
                "id": w["session_id"],
                "hard": w["errors"],
                "reasons": [f"{w['errors']} error-level, {w['violations']} violations: {', '.join(reasons)}"],
                "texts": texts,
            }
        )
    cases = [
        {
            "session_id": o.reply.session_id,
            "turn": o.reply.index,
            "agent_id": o.reply.agent_id,
            "first_reply": o.reply.first_reply,
            "response_s": o.reply.response_s,
            "text": o.reply.text,
            "violations": [v.to_dict() for v in o.violations],
        }
        for o in ins.outcomes
    ]
    return build(
        "transcripts",
        "Transcript inspection / 质检",
        setup=setup,
        runs=ins.runs,
        figures=figures,
        cases=cases,
        failing=failing,
        extra={"per_agent": ins.per_agent},
    )

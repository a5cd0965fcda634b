"""Fragments of /records: the service records for a date range and the latest evaluation report.

The report is what ``make eval`` writes (``report.json`` and ``report.html`` in ``KEFU_EVAL_DIR``,
default ``var/eval``); the page shows its headline figures and the full report in a sandboxed frame.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Template

from knowledge.errors import NotFoundError
from suggest.auth import AGENTS, allow
from suggest.http import if_match, stale_is_412
from suggest.records_export import INTENT_ZH, STATUS_ZH, turns_text
from suggest.web.common import RECORD_READERS, lang_of, render
from suggest.web.queries import workflow_labels
from suggest.workflow import Workflow
from suggest.workflow_api import _day_bounds
from suggest.workflow_store import record_intents

#: What an agent corrects in the page (the API's PATCH takes every editable field).
CORRECTABLE = ("intent", "summary", "status", "notes")


@dataclass
class CorrectionForm:
    intent: str = ""
    summary: str = ""
    status: str = ""
    notes: str = ""


def eval_dir() -> Path:
    """Where ``make eval`` writes the latest report (``KEFU_EVAL_DIR``, default ``var/eval``)."""
    return Path(os.environ.get("KEFU_EVAL_DIR") or "var/eval")


#: The metrics an evaluator looks at first, in this order, with their names in both languages (the
#: report's descriptions are English); any other metric follows under its own name.
HEADLINE: dict[str, tuple[str, str]] = {
    "replies_clean": ("完全合规的回复", "replies that break no norm"),
    "error_rule_pass": ("无严重违规的回复", "replies that break no error-level norm"),
    "groundedness": ("有据可查", "groundedness"),
    "hit@1": ("首位命中", "hit@1"),
    "hit@5": ("前五命中", "hit@5"),
    "citation_hit": ("引用命中", "citation hit"),
    "escalation_precision": ("转交精确率", "escalation precision"),
    "escalation_recall": ("转交召回率", "escalation recall"),
    "intent_accuracy": ("意图准确率", "intent accuracy"),
    "routing_accuracy": ("分派准确率", "routing accuracy"),
    "char_f1": ("字符 F1（对照参考回复）", "char F1 (vs. the reference reply)"),
    "rouge_l": ("ROUGE-L（对照参考回复）", "ROUGE-L (vs. the reference reply)"),
    "latency_ms": ("单次建议耗时 p50（毫秒）", "latency p50 (ms)"),
    "response_s": ("回复用时 p50（秒）", "response time p50 (s)"),
    "first_response_s": ("首次响应 p50（秒）", "first response p50 (s)"),
}
KINDS = {"drafts": ("草稿质量", "draft quality"), "transcripts": ("会话质检", "transcript inspection")}


@dataclass(frozen=True)
class Figure:
    """One metric of the report as the page shows it."""

    name: str
    label_zh: str
    label_en: str
    value: str
    change: str  # against the report's baseline, "" without one
    better: int  # 1 improved, -1 worse, 0 same or unknown
    reason: str


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: float | None, name: str) -> str:
    if v is None:
        return "n/a"
    if name.endswith(("_ms", "_s")):
        return f"{v:.1f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _figure(name: str, m: dict[str, Any]) -> Figure:
    zh, en = HEADLINE.get(name, (name, name))
    if name.startswith("norms."):
        zh, en = f"规范 {name.removeprefix('norms.')}", f"norm {name.removeprefix('norms.')}"
    delta = _number(m.get("delta"))
    change, better = "", 0
    if delta is not None:
        change = "±0" if abs(delta) < 1e-9 else ("+" if delta > 0 else "−") + _fmt(abs(delta), name)
        if abs(delta) >= 1e-9:
            better = 1 if (delta > 0) == bool(m.get("higher_is_better", True)) else -1
    return Figure(name, zh, en, _fmt(_number(m.get("value")), name), change, better, str(m.get("reason", "")))


def eval_summary(report: Any) -> dict[str, Any]:
    """The headline of a ``report.json``: what was run, when, on how many cases, and every metric
    formatted (the headline ones first, the per-rule norms after), with its change against the
    baseline when the run had one. A file that is not an evaluation report gives ``not_a_report``."""
    metrics = report.get("metrics") if isinstance(report, dict) else None
    if not isinstance(metrics, dict):
        return {"not_a_report": True}
    ordered = [n for n in HEADLINE if n in metrics]
    ordered += [n for n in metrics if n not in HEADLINE and not n.startswith("norms.")]
    cases = report.get("cases")
    baseline = report.get("baseline")
    return {
        "title": str(report.get("title") or ""),
        "kind": KINDS.get(str(report.get("kind")), (str(report.get("kind") or ""),) * 2),
        "created_at": report.get("created_at"),
        "machine": str(report.get("machine") or ""),
        "cases": len(cases) if isinstance(cases, list) else None,
        "failing": len(report["failing"]) if isinstance(report.get("failing"), list) else None,
        "baseline": baseline.get("path") if isinstance(baseline, dict) else None,
        "headline": [_figure(n, metrics[n]) for n in ordered if isinstance(metrics[n], dict)],
        "norms": [
            _figure(n, m) for n, m in metrics.items() if n.startswith("norms.") and isinstance(m, dict)
        ],
    }


class RecordsFragments(Controller):
    path = "/ui/records"
    include_in_schema = False
    guards = [allow(*RECORD_READERS)]  # noqa: RUF012 - Litestar reads a plain list

    @get("/", sync_to_thread=True)
    def records(
        self,
        request: Request[Any, Any, Any],
        workflow: NamedDependency[Workflow],
        start: Annotated[str | None, QueryParameter(name="from")] = None,
        end: Annotated[str | None, QueryParameter(name="to")] = None,
        agent: Annotated[str | None, QueryParameter(name="agent")] = None,
        status: Annotated[str | None, QueryParameter(name="status")] = None,
    ) -> Template:
        """The service records (在线客服受理记录) of the conversations started in [from, to], optionally
        of one agent and one status."""
        zone = workflow.norms.hours.zone
        today = workflow.clock.now().astimezone(zone).date().isoformat()
        start, end = start or today, end or today
        lo, hi = _day_bounds(workflow, start, end)
        items = workflow.store.records(lo, hi, agent=agent or None, status=status or None)
        return self._table(request, workflow, items=items, start=start, end=end, agent=agent, status=status)

    @post("/{conversation_id:str}", sync_to_thread=True, guards=[allow(*AGENTS)], status_code=200)
    def correct(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[str],
        data: Annotated[CorrectionForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        workflow: NamedDependency[Workflow],
    ) -> Template:
        """An agent corrects a record in the page; If-Match carries the version shown (412 if stale)."""
        version = if_match(request)
        current = workflow.store.record(conversation_id)
        changes = {
            k: (getattr(data, k).strip() or None)
            for k in CORRECTABLE
            if (getattr(data, k).strip() or None) != current.get(k)
        }
        if changes.get("status") is None:
            changes.pop("status", None)  # a record always has a status
        if changes:
            with stale_is_412():
                workflow.store.edit_record(
                    conversation_id, changes, expected_version=version, at=workflow.clock.now()
                )
        rec = workflow.store.record(conversation_id)
        return self._table(request, workflow, "fragments/record_row.html", r=rec, corrected=bool(changes))

    def _table(
        self,
        request: Request[Any, Any, Any],
        workflow: Workflow,
        template: str = "fragments/records.html",
        **values: Any,
    ) -> Template:
        lang = lang_of(request)
        return render(
            request,
            template,
            zone=workflow.norms.hours.zone,
            statuses=list(STATUS_ZH),
            intents=list(INTENT_ZH),
            intents_of=record_intents,
            turns_text=lambda r: turns_text(r, lang),
            **workflow_labels(lang),
            **values,
        )

    @get("/eval", sync_to_thread=True)
    def evaluation(self, request: Request[Any, Any, Any]) -> Template:
        """The latest report's headline: its metrics, not its raw JSON."""
        folder = eval_dir()
        path = folder / "report.json"
        report = None
        problem = None
        if path.exists():
            try:
                report = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as e:
                problem = str(e)
        summary = eval_summary(report) if report is not None else {}
        return render(
            request,
            "fragments/eval.html",
            folder=str(folder),
            summary=summary,
            found=report is not None,
            problem=problem,
            not_a_report=summary.get("not_a_report", False),
            has_html=(folder / "report.html").exists(),
            written=datetime.fromtimestamp(path.stat().st_mtime, UTC) if report is not None else None,
        )

    @get("/eval/report.html", sync_to_thread=True)
    def evaluation_html(self) -> Response[bytes]:
        """The full HTML report, shown by the page in a sandboxed frame (no scripts run in it)."""
        path = eval_dir() / "report.html"
        if not path.exists():
            raise NotFoundError(
                f"还没有评测报告（{path}）；先运行 make eval",
                f"no evaluation report yet ({path}); run make eval",
            )
        return Response(
            path.read_bytes(),
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "sandbox", "Cache-Control": "no-store"},
        )

"""Fragments of /records: the service records for a date range and the latest evaluation report.

The report is what ``make eval`` writes (``report.json`` and ``report.html`` in ``KEFU_EVAL_DIR``,
default ``var/eval``); the page shows its headline figures and the full report in a sandboxed frame.
"""

from __future__ import annotations

import json
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


MAX_FIGURES = 60


def eval_dir() -> Path:
    """Where ``make eval`` writes the latest report (``KEFU_EVAL_DIR``, default ``var/eval``)."""
    return Path(os.environ.get("KEFU_EVAL_DIR") or "var/eval")


def headline_figures(report: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The report's numbers and short strings as (dotted path, value), whatever its exact layout."""
    out: list[tuple[str, Any]] = []
    if isinstance(report, dict):
        for k, v in report.items():
            out += headline_figures(v, f"{prefix}{k}.")
    elif isinstance(report, list):
        if all(not isinstance(x, dict | list) for x in report) and len(report) <= 8:
            out.append((prefix.rstrip("."), ", ".join(str(x) for x in report)))
    elif isinstance(report, bool) or report is None:
        out.append((prefix.rstrip("."), report))
    elif isinstance(report, int | float):
        out.append((prefix.rstrip("."), round(report, 4) if isinstance(report, float) else report))
    elif isinstance(report, str) and len(report) <= 80:
        out.append((prefix.rstrip("."), report))
    return out[:MAX_FIGURES] if not prefix else out


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
    def evaluation(self, request: Request[Any, Any, Any], workflow: NamedDependency[Workflow]) -> Template:
        folder = eval_dir()
        path = folder / "report.json"
        report = None
        problem = None
        if path.exists():
            try:
                report = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as e:
                problem = str(e)
        return render(
            request,
            "fragments/eval.html",
            folder=str(folder),
            figures=headline_figures(report) if report is not None else [],
            found=report is not None,
            problem=problem,
            has_html=(folder / "report.html").exists(),
            written=datetime.fromtimestamp(path.stat().st_mtime, UTC) if report is not None else None,
            zone=workflow.norms.hours.zone,
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

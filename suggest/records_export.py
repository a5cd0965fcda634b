"""The 在线客服受理记录表 as CSV or XLSX, with Chinese headers; the XLSX has a summary sheet for the
marketing lead and one sheet per day."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from suggest.workflow_store import record_intents

#: (field, Chinese header) in the order of the form.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("started_at", "时间"),
    ("conversation_id", "对话编号"),
    ("customer_name", "客户"),
    ("customer_id", "客户编号"),
    ("channel", "渠道"),
    ("intent", "咨询类型"),
    ("summary", "问题摘要"),
    ("turns", "问答明细"),
    ("final_reply", "最终回复"),
    ("agent_id", "客服"),
    ("routed_to", "转交部门"),
    ("escalated", "已转负责人"),
    ("first_response_s", "首次响应（秒）"),
    ("status", "状态"),
    ("satisfaction", "满意度"),
    ("satisfaction_comment", "评价"),
    ("notes", "备注"),
)
INTENT_ZH = {
    "inquiry": "咨询",
    "order": "订单",
    "after_sales": "售后",
    "complaint": "投诉",
    "suggestion": "建议",
    "customer_info": "客户信息",
    "chit_chat": "问候",
    "restricted": "敏感问题",
    "closing": "结束",
}
INTENT_EN = {
    "inquiry": "inquiry",
    "order": "order",
    "after_sales": "after-sales",
    "complaint": "complaint",
    "suggestion": "suggestion",
    "customer_info": "customer details",
    "chit_chat": "greeting",
    "restricted": "restricted topic",
    "closing": "closing",
}
STATUS_ZH = {
    "open": "进行中",
    "waiting": "等待回复",
    "answer_ready": "负责人已答复，待发送",
    "answered": "已回复",
    "closed": "已结束",
}
STATUS_EN = {
    "open": "open",
    "waiting": "waiting",
    "answer_ready": "answer ready to send",
    "answered": "answered",
    "closed": "closed",
}


def intent_label(code: str | None, lang: str = "zh") -> str:
    """The intent's name for people (Chinese by default), the code itself if unknown."""
    return (INTENT_EN if lang == "en" else INTENT_ZH).get(code or "", code or "")


def status_label(code: str | None, lang: str = "zh") -> str:
    return (STATUS_EN if lang == "en" else STATUS_ZH).get(code or "", code or "")


def turns_text(record: dict[str, Any], lang: str = "zh") -> str:
    """Every question of the conversation with the final answer sent to it, one per line."""
    q, a, none = ("问", "答", "（未回复）") if lang != "en" else ("Q", "A", "(not answered)")
    lines = []
    for i, turn in enumerate(record.get("turns") or [], 1):
        answer = turn.get("answer") or none
        lines.append(f"{i}. {q}：{turn.get('question', '')}  {a}：{answer}")
    return "\n".join(lines)


def _cell(field: str, record: dict[str, Any], tz: ZoneInfo) -> Any:
    v = record.get(field)
    if field == "started_at" and v:
        return datetime.fromisoformat(v).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    if field == "intent":
        return "、".join(intent_label(i) for i in record_intents(record))
    if field == "turns":
        return turns_text(record)
    if field == "status":
        return STATUS_ZH.get(v or "", v or "")
    if field == "escalated":
        return "是" if v else "否"
    if field == "first_response_s" and v is not None:
        return round(float(v), 1)
    return "" if v is None else v


def to_csv(records: list[dict[str, Any]], tz: ZoneInfo) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([h for _, h in COLUMNS])
    for r in records:
        w.writerow([_cell(f, r, tz) for f, _ in COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens the Chinese correctly


def to_xlsx(records: list[dict[str, Any]], tz: ZoneInfo, *, title: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    summary = wb.active
    summary.title = "汇总"
    bold = Font(bold=True)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        day = (
            datetime.fromisoformat(r["started_at"]).astimezone(tz).strftime("%Y-%m-%d")
            if r.get("started_at")
            else "-"
        )
        by_day[day].append(r)
    summary.append([title])
    summary["A1"].font = bold
    summary.append([])
    summary.append(["日期", "对话数", "投诉", "建议", "转负责人", "平均首次响应（秒）", "平均满意度"])
    for c in summary[3]:
        c.font = bold
    for day in sorted(by_day):
        rows = by_day[day]
        intents = Counter(i for r in rows for i in record_intents(r))
        frt = [r["first_response_s"] for r in rows if r.get("first_response_s") is not None]
        sat = [r["satisfaction"] for r in rows if r.get("satisfaction") is not None]
        summary.append(
            [
                day,
                len(rows),
                intents.get("complaint", 0),
                intents.get("suggestion", 0),
                sum(1 for r in rows if r.get("escalated")),
                round(sum(frt) / len(frt), 1) if frt else "",
                round(sum(sat) / len(sat), 2) if sat else "",
            ]
        )
    summary.append([])
    summary.append(["咨询类型", "对话数"])
    summary[summary.max_row][0].font = bold
    for intent, n in Counter(i for r in records for i in record_intents(r) or ["-"]).most_common():
        summary.append([intent_label(intent) or "-", n])
    summary.column_dimensions["A"].width = 14
    for day in sorted(by_day):
        ws = wb.create_sheet(day[:31])
        ws.append([h for _, h in COLUMNS])
        for c in ws[1]:
            c.font = bold
        for r in by_day[day]:
            ws.append([_cell(f, r, tz) for f, _ in COLUMNS])
        for col, width in zip(
            "ABCDEFGHIJKLMNOPQ",
            (20, 18, 10, 12, 8, 10, 40, 60, 50, 10, 12, 10, 12, 8, 8, 20, 20),
            strict=False,
        ):
            ws.column_dimensions[col].width = width
        ws.freeze_panes = "A2"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()

"""``kefu records export``: the service records (在线客服受理记录表) of a date range to CSV or XLSX."""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

from knowledge.errors import ValidationError
from knowledge.settings import KnowledgeSettings
from knowledge.store import create_db_engine
from prompts import load_norms
from suggest.records_export import to_csv, to_xlsx
from suggest.settings import NormsSettings
from suggest.storage import SuggestStore
from suggest.workflow_store import RECORD_STATUSES, WorkflowStore


def add_records_parser(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("records", help="service records (在线客服受理记录表)")
    rs = rec.add_subparsers(dest="records_cmd", required=True, metavar="COMMAND")
    p = rs.add_parser(
        "export", help="export the records of a date range (service time zone, both days included)"
    )
    p.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: today)")
    p.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: the first day)")
    p.add_argument("--format", choices=("xlsx", "csv"), help="default: from the file's extension, else xlsx")
    p.add_argument("--agent", help="only the records of this agent")
    p.add_argument("--status", choices=RECORD_STATUSES, help="only records in this status")
    p.add_argument("-o", "--output", type=Path, required=True, help="the file to write")


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise ValidationError(
            f"--{name} 应为 YYYY-MM-DD 格式的日期", f"--{name} must be a date YYYY-MM-DD"
        ) from e


def run_records(args: argparse.Namespace) -> int:
    norms = load_norms(NormsSettings().norms)
    zone = norms.hours.zone
    first = _day(args.start, "from") or datetime.now(zone).date()
    last = _day(args.end, "to") or first
    if last < first:
        raise ValidationError("--to 不能早于 --from", "--to must not be before --from")
    fmt = args.format or ("csv" if args.output.suffix.lower() == ".csv" else "xlsx")
    engine = create_db_engine(KnowledgeSettings().database_url)
    try:
        SuggestStore(engine)  # brings the tables to the newest schema
        records = WorkflowStore(engine).records(
            datetime.combine(first, time(0), tzinfo=zone),
            datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone),
            agent=args.agent,
            status=args.status,
        )
    finally:
        engine.dispose()
    if fmt == "csv":
        data = to_csv(records, zone)
    else:
        data = to_xlsx(records, zone, title=f"{norms.routing.record_form}（{first} ~ {last}）")
    out = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, out)
    print(f"已导出 {len(records)} 条受理记录 / exported {len(records)} records ({first} ~ {last}) -> {out}")
    return 0

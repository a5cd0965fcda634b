"""knowledge.io: the import/export formats, on real files."""

from __future__ import annotations

import json
import os
import re
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from knowledge.errors import ImportFailed, Problem, ValidationError
from knowledge.io import (
    COLUMNS,
    FORMATS,
    MAX_PROBLEMS,
    detect_format,
    dump_snippets,
    markdown_id,
    parse_snippets,
    read_snippets,
    snippet_from_dict,
    write_snippets,
)
from knowledge.model import MAX_ANSWER_CHARS, MAX_SIMILAR, MAX_TAG_CHARS, MAX_TAGS, Snippet

DATA = Path(__file__).parent / "data" / "io"

SNIPPETS = [
    Snippet(
        id="faq-returns-7d",
        question="支持七天无理由退货吗？",
        answer="您好，支持的。\n\n签收后 7 天内，商品完好即可申请。\n- 打开“我的订单”\n- 点击“申请售后”",
        similar_questions=("可以退货吗", "不想要了能退吗", "可以退貨嗎"),
        tags=("退货", "售后"),
        valid_from=date(2026, 1, 1),
    ),
    Snippet(
        id="promo:spring.2026",
        kind="promotion",
        question="春季促銷有什麼優惠？",
        answer="滿 300 減 50，限時三天。\r\n不可與其他優惠同享。".replace("\r\n", "\n"),
        similar_questions=("最近有活動嗎",),
        tags=("促銷",),
        product="全店",
        status="draft",
        valid_from=date(2026, 3, 1),
        valid_to=date(2026, 3, 31),
    ),
    Snippet(
        id="restricted_cost",
        kind="restricted",
        question="成本价是多少",
        answer="=不好意思，这个信息不方便透露。",  # a leading "=" must stay text in Excel
        status="archived",
    ),
    Snippet(
        id="product-x1",
        kind="product",
        question="Ｘ１ 耳機（全形字元）",
        answer="- bullet first\n相似问法: 只是答案的一行\n### 小标题",
        similar_questions=("x1 headphones", "X1 耳机"),
        product="X1",
    ),
]


def write_text(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def jsonl(*objects: Any) -> str:
    return "\n".join(o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objects) + "\n"


def ok(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "faq-1", "question": "怎么退货", "answer": "您好，请在订单页申请。"}
    base.update(changes)
    return base


def problems(path: Path, **kwargs: Any) -> list[Problem]:
    with pytest.raises(ImportFailed) as info:
        read_snippets(path, **kwargs)
    assert info.value.problems, "ImportFailed without problems"
    return info.value.problems


def only(found: list[Problem], location: str, field: str | None) -> Problem:
    hits = [p for p in found if p.location == location and p.field == field]
    assert hits, f"no problem at {location}/{field}: {[str(p) for p in found]}"
    p = hits[0]
    assert p.message_zh and p.message_en
    return p


def make_xlsx(path: Path, rows: list[list[Any]], *, title: str = "Sheet1", extra: str | None = None) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    if extra:  # a decoy first sheet
        ws.title = extra
        ws.append(["not", "the", "knowledge"])
        ws = wb.create_sheet(title)
    else:
        ws.title = title
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


# -- formats and round trips --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("kb.jsonl", "jsonl"),
        ("KB.JSONL", "jsonl"),
        ("kb.json", "jsonl"),
        ("kb.csv", "csv"),
        ("kb.xlsx", "xlsx"),
        ("kb.md", "md"),
        ("kb.markdown", "md"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt
    assert fmt in FORMATS


@pytest.mark.parametrize("name", ["kb.txt", "kb", "kb.xls", "kb.tsv"])
def test_detect_format_refuses_unknown_extensions(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        detect_format(name)
    if name.endswith(".xls"):
        assert "*.xlsx" in info.value.message_en and "另存为" in info.value.message_zh
    else:
        assert ".jsonl" in info.value.message_en and ".xlsx" in info.value.message_zh


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_exact(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"kb.{fmt}"
    assert write_snippets(SNIPPETS, path) == len(SNIPPETS)
    back = read_snippets(path)
    assert back == SNIPPETS
    assert [s.content() for s in back] == [s.content() for s in SNIPPETS]
    assert all(s.version == 0 and s.updated_at is None and s.updated_by is None for s in back)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left behind


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_with_explicit_format_and_other_extension(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "export.data"
    write_snippets(SNIPPETS[:2], path, fmt)
    assert read_snippets(path, fmt) == SNIPPETS[:2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_replaces_existing_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"kb.{fmt}"
    write_snippets(SNIPPETS, path)
    write_snippets(SNIPPETS[:1], path)
    assert read_snippets(path) == SNIPPETS[:1]


def test_jsonl_is_readable_utf8_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    write_snippets(SNIPPETS, path)
    text = path.read_text("utf-8")
    assert "支持七天无理由退货吗" in text and "\\u" not in text
    lines = text.splitlines()
    assert len(lines) == len(SNIPPETS)
    first = json.loads(lines[0])
    assert list(first) == list(COLUMNS)
    assert first["valid_to"] is None and first["product"] is None


def test_csv_has_header_and_bom_for_excel(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    write_snippets(SNIPPETS, path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid,kind,question,similar_questions,answer,tags,")
    assert "可以退货吗|不想要了能退吗|可以退貨嗎" in raw.decode("utf-8-sig")


def test_xlsx_writes_dates_as_date_cells_and_text_as_text(tmp_path: Path) -> None:
    path = tmp_path / "kb.xlsx"
    write_snippets(SNIPPETS, path)
    wb = openpyxl.load_workbook(path)
    ws = wb["snippets"]
    header = [c.value for c in ws[1]]
    assert header == list(COLUMNS)
    assert isinstance(ws.cell(row=2, column=COLUMNS.index("valid_from") + 1).value, datetime)
    answer = ws.cell(row=4, column=COLUMNS.index("answer") + 1)
    assert answer.data_type == "s" and answer.value == SNIPPETS[2].answer


def test_markdown_layout_written(tmp_path: Path) -> None:
    path = tmp_path / "kb.md"
    write_snippets(SNIPPETS[:1], path)
    text = path.read_text("utf-8")
    assert "## 支持七天无理由退货吗？\nid: faq-returns-7d\nkind: faq\nstatus: published\n" in text
    assert "tags: 退货, 售后\nvalid_from: 2026-01-01\n\n相似问法:\n- 可以退货吗\n" in text
    assert "\n\n您好，支持的。\n\n签收后" in text


def test_dump_snippets_matches_file(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    write_snippets(SNIPPETS, path)
    assert dump_snippets(SNIPPETS, "jsonl") == path.read_bytes()
    assert parse_snippets(path.read_bytes(), "jsonl") == SNIPPETS


# -- writer refuses what a format cannot carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "snippet"),
    [
        ("csv", Snippet(id="a", question="q", answer="a", similar_questions=("A|B",))),
        ("xlsx", Snippet(id="a", question="q", answer="a", tags=("x|y",))),
        ("md", Snippet(id="a", question="q", answer="first\n## not a heading")),
        ("md", Snippet(id="a", question="two\nlines", answer="a")),
        ("md", Snippet(id="a", question="q", answer="a", tags=("a,b",))),
        ("jsonl", Snippet(id="a", question="q", answer="a")),  # duplicated below
    ],
)
def test_writer_refuses_values_the_format_would_change(tmp_path: Path, fmt: str, snippet: Snippet) -> None:
    path = tmp_path / f"kb.{fmt}"
    path.write_bytes(b"old content")
    items = [snippet, snippet] if fmt == "jsonl" else [snippet]
    with pytest.raises(ValidationError) as info:
        write_snippets(items, path)
    assert "JSONL" in info.value.message_en and info.value.message_zh
    assert path.read_bytes() == b"old content"  # untouched
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_pipe_in_similar_question_is_fine_in_jsonl(tmp_path: Path) -> None:
    s = Snippet(id="a", question="q", answer="a", similar_questions=("A|B",))
    path = tmp_path / "kb.jsonl"
    write_snippets([s], path)
    assert read_snippets(path) == [s]


# -- reading: cleaning and defaults ---------------------------------------------------------------


def test_strips_dedupes_and_keeps_original_characters(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.jsonl",
        jsonl(
            ok(
                id="  faq-1 ",
                question="  怎麼退貨？Ｑ１  ",
                answer="\n 第一行\r\n  第二行 \n",
                similar_questions=[" 能退嗎 ", "", "能退嗎", "   ", "能退吗"],
                tags=["售后", " 售后", ""],
                product="  ",
                kind=" FAQ ",
                valid_from="",
            )
        ),
    )
    [s] = read_snippets(path)
    assert s.id == "faq-1"
    assert s.question == "怎麼退貨？Ｑ１"  # traditional and full-width kept
    assert s.answer == "第一行\n  第二行"
    assert s.similar_questions == ("能退嗎", "能退吗")
    assert s.tags == ("售后",)
    assert s.product is None and s.kind == "faq" and s.valid_from is None


def test_default_status_applies_only_when_missing(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.jsonl", jsonl(ok(id="a"), ok(id="b", status="archived"), ok(id="c", status=""))
    )
    got = {s.id: s.status for s in read_snippets(path, default_status="draft")}
    assert got == {"a": "draft", "b": "archived", "c": "draft"}
    assert {s.status for s in read_snippets(path)} == {"published", "archived"}


def test_jsonl_blank_lines_and_store_fields_are_ignored(tmp_path: Path) -> None:
    dumped = SNIPPETS[0].with_changes(version=7, updated_by="alice").to_dict()
    path = write_text(tmp_path / "kb.jsonl", "\n\n" + jsonl(dumped) + "\n   \n")
    [s] = read_snippets(path)
    assert s == SNIPPETS[0] and s.version == 0 and s.updated_by is None


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "md"])
def test_utf8_bom_is_accepted(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"kb.{fmt}"
    body = dump_snippets(SNIPPETS[:2], fmt)
    path.write_bytes(b"\xef\xbb\xbf" + body.removeprefix(b"\xef\xbb\xbf"))
    assert read_snippets(path) == SNIPPETS[:2]


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_column_order_is_free_and_headers_case_insensitive(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.csv",
        "Answer,Similar Questions,QUESTION,Id,valid-to\n"
        '"第一行\n第二行","能退吗|可以退货吗\n退货流程",怎么退货,faq-1,2026-12-31\n',
    )
    [s] = read_snippets(path)
    assert s.id == "faq-1" and s.question == "怎么退货" and s.answer == "第一行\n第二行"
    assert s.similar_questions == ("能退吗", "可以退货吗", "退货流程")  # "|" and line breaks
    assert s.valid_to == date(2026, 12, 31) and s.kind == "faq" and s.tags == ()


def test_csv_with_chinese_headers_and_chinese_values(tmp_path: Path) -> None:
    faq, promo = read_snippets(DATA / "staff_zh.csv")
    assert faq.id == "faq-returns-7d" and faq.status == "published" and faq.kind == "faq"
    assert faq.answer == "您好，支持的。\n签收后 7 天内可申请。"
    assert faq.tags == ("退货", "售后") and faq.product is None and faq.valid_to is None
    assert promo.kind == "promotion" and promo.status == "draft" and promo.product == "全店"
    assert promo.question == "有什麼優惠？"
    assert promo.similar_questions == ("最近有活動嗎", "有折扣嗎")
    assert (promo.valid_from, promo.valid_to) == (date(2026, 3, 1), date(2026, 3, 31))


def test_csv_traditional_headers(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.csv", "編號,問題,答案,標籤,狀態\nfaq-1,怎麼退貨,請在訂單頁申請,售後|退貨,草稿\n"
    )
    [s] = read_snippets(path)
    assert s.tags == ("售後", "退貨") and s.status == "draft"


def test_csv_header_problems_are_reported_once(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.csv", "id,qustion,answer,问题,notes\nfaq-1,怎么退货,答,,\nfaq-2,x,答,,\n"
    )
    found = problems(path)
    # "qustion" is unknown (with a suggestion), "notes" too; 问题 is fine, so no missing column.
    p = only(found, "row 1", "qustion")
    assert "question" in p.message_en and "question" in p.message_zh
    only(found, "row 1", "notes")
    # question is empty in both data rows
    only(found, "row 2", "question")
    only(found, "row 3", "question")


def test_csv_missing_required_column_is_reported_once_not_per_row(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.csv", "id,answer\nfaq-1,a\nfaq-2,b\n")
    found = problems(path)
    assert [(p.location, p.field) for p in found] == [("row 1", "question")]


def test_csv_without_header_row(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.csv", "faq-1,怎么退货,请申请\n")
    [p] = problems(path)
    assert p.location == "row 1" and "header" in p.message_en and "标题行" in p.message_zh


def test_csv_rows_are_records_not_lines(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.csv",
        'id,question,answer\nfaq-1,q1,"多\n行\n答案"\n\nfaq-2,,a2\nfaq 3,q3,a,extra\n',
    )
    found = problems(path)
    only(found, "row 4", "question")  # the blank record is row 3, as a spreadsheet shows it
    only(found, "row 5", "id")
    extra = only(found, "row 5", None)
    assert "D" in extra.message_en


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    path.write_bytes("id,question,answer\nfaq-1,怎么退货,请申请\n".encode("gbk"))
    [p] = problems(path)
    assert p.source == "kb.csv" and p.location == "line 2" and p.field is None
    assert "UTF-8" in p.message_zh and "UTF-8" in p.message_en
    assert "byte offset 25" in p.message_en and "第 25 字节" in p.message_zh
    assert "GBK" in p.message_en


def test_csv_header_only_is_nothing_to_import(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.csv", "id,question,answer\n", bom=True)
    [p] = problems(path)
    assert p.location == "file" and "nothing to import" in p.message_en


def test_csv_one_megabyte_field(tmp_path: Path) -> None:
    big = "退" * 1_000_000
    path = write_text(tmp_path / "kb.csv", f"id,question,answer\nfaq-1,q,{big}\n")
    [p] = problems(path)
    assert (p.location, p.field) == ("row 2", "answer")
    assert "1,000,000" in p.message_en and f"{MAX_ANSWER_CHARS:,}" in p.message_zh
    assert "退退退" not in str(p)


# -- XLSX -----------------------------------------------------------------------------------------


def test_xlsx_reads_date_cells_iso_strings_numbers_and_chinese_headers(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "kb.xlsx",
        [
            ["问题", "答案", "编号", "相似问法", "生效日期", "失效日期", "产品", "類型"],
            [
                "怎么退货",
                "第一行\n第二行",
                1001,
                "能退吗\n可以退货吗|",
                datetime(2026, 1, 1),
                "2026-02-01",
                14,
                None,
            ],
            [None, None, None, None, None, None, None, None],  # blank rows are skipped
            ["發票", "可以開", "faq-2", None, date(2026, 3, 1), None, None, "政策"],
        ],
    )
    first, second = read_snippets(path)
    assert first.id == "1001" and first.product == "14" and first.answer == "第一行\n第二行"
    assert first.similar_questions == ("能退吗", "可以退货吗")
    assert (first.valid_from, first.valid_to) == (date(2026, 1, 1), date(2026, 2, 1))
    assert second.kind == "policy" and second.valid_from == date(2026, 3, 1) and second.valid_to is None


def test_xlsx_prefers_a_knowledge_sheet(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "kb.xlsx",
        [["id", "question", "answer"], ["faq-1", "q", "a"]],
        title="知识库",
        extra="说明",
    )
    assert [s.id for s in read_snippets(path)] == ["faq-1"]


def test_xlsx_problems_name_sheet_and_row(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "kb.xlsx",
        [
            ["id", "question", "answer", "valid_from"],
            ["faq-1", "q", "a", "someday"],
            ["faq-1", "q2", "a2", 45000],
        ],
        title="Sheet1",
    )
    found = problems(path)
    only(found, "sheet 'Sheet1', row 2", "valid_from")
    only(found, "sheet 'Sheet1', row 3", "valid_from")
    dup = only(found, "sheet 'Sheet1', row 3", "id")
    assert "row 2" in dup.message_en and "工作表“Sheet1”第 2 行" in dup.message_zh


def test_xlsx_with_a_wrong_dimension_record(tmp_path: Path) -> None:
    """Some generators write <dimension ref="A1"/> for a whole sheet; the rows must still be read."""
    path = tmp_path / "kb.xlsx"
    write_snippets(SNIPPETS, path)
    patched = tmp_path / "patched.xlsx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(patched, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith("xl/worksheets/sheet"):
                data = re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1"', data)
            dst.writestr(item, data)
    assert read_snippets(patched) == SNIPPETS


@pytest.mark.parametrize("content", [b"not a workbook", b"PK\x03\x04broken zip", b"id,question\n"])
def test_xlsx_that_is_not_a_workbook(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "kb.xlsx"
    path.write_bytes(content)
    [p] = problems(path)
    assert p.location == "file" and "xlsx" in p.message_en and "另存为" in p.message_zh


def test_xlsx_renamed_to_csv_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    write_snippets(SNIPPETS, tmp_path / "kb.xlsx")
    path.write_bytes((tmp_path / "kb.xlsx").read_bytes())
    [p] = problems(path)
    assert "Excel workbook" in p.message_en


# -- Markdown -------------------------------------------------------------------------------------


def test_markdown_as_staff_write_it() -> None:
    returns, invoice, cost = read_snippets(DATA / "staff.md")
    assert returns.id == "faq-returns-7d" and returns.tags == ("退货", "售后")
    assert returns.valid_from == date(2026, 1, 1)
    assert returns.similar_questions == ("可以退货吗", "不想要了能退吗", "可以退貨嗎")
    assert returns.answer == (
        "您好，支持的。签收后 7 天内，商品完好、不影响二次销售即可申请。\n\n"
        "操作步骤：\n- 打开“我的订单”\n- 点击“申请售后”"
    )
    assert invoice.question == "發票可以開公司抬頭嗎？"
    assert invoice.id == markdown_id("發票可以開公司抬頭嗎？")
    assert invoice.similar_questions == ("能开企业发票吗",)
    assert invoice.answer == "可以，請在下單時填寫公司名稱和稅號。"
    assert cost.kind == "restricted" and cost.tags == ("敏感", "价格") and cost.similar_questions == ()


def test_markdown_id_is_derived_deterministically() -> None:
    q = "發票可以開公司抬頭嗎？"
    assert markdown_id(q) == markdown_id(q)
    assert markdown_id(q).startswith("md-") and len(markdown_id(q)) == 13
    assert markdown_id(q) != markdown_id("发票可以开公司抬头吗？")  # no 繁->简 folding


def test_markdown_bullets_without_marker_are_the_answer(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.md", "## 怎么退货\n\n- 打开订单\n- 申请售后\n")
    [s] = read_snippets(path)
    assert s.similar_questions == () and s.answer == "- 打开订单\n- 申请售后"


def test_markdown_metadata_typos_and_problems(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.md",
        "# 标题\n"  # 1
        "## 怎么退货\n"  # 2
        "idd: faq-1\n"  # 3
        "staus: draft\n"  # 4
        "kind: faqq\n"  # 5
        "\n"  # 6
        "答案\n"  # 7
        "## 怎么退货\n"  # 8
        "\n"  # 9
        "另一个答案\n"  # 10
        "##\n"  # 11
        "id: ok-1\n"  # 12
        "valid_from: 2026-02-30\n",  # 13
    )
    found = problems(path)
    assert "id" in only(found, "line 3", "idd").message_en
    assert "status" in only(found, "line 4", "staus").message_en
    only(found, "line 5", "kind")
    dup = only(found, "line 8", "id")  # both headings derive the same id
    assert "line 2" in dup.message_en and "id: line" in dup.message_en
    only(found, "line 11", "question")
    assert not [p for p in found if p.field == "answer"]  # a snippet may have no answer
    only(found, "line 13", "valid_from")


def test_markdown_without_headings(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.md", "# 知识库\n\n只有说明，没有条目。\n")
    [p] = problems(path)
    assert p.location == "file" and "##" in p.message_en


# -- bad JSONL files ------------------------------------------------------------------------------


def test_broken_json_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl(ok(id="a"), '{"id": "b", "question": "q",', ok(id="c")))
    [p] = problems(path)
    assert (p.source, p.location, p.field) == ("kb.jsonl", "line 2", None)
    assert "JSON" in p.message_en and "第 2 行" in p.message_zh


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl(ok(), '["a", "b"]', '"text"'))
    found = problems(path)
    assert "array" in only(found, "line 2", None).message_en
    only(found, "line 3", None)


def test_whole_json_array_file_gets_one_clear_problem(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.json", json.dumps([ok()], ensure_ascii=False, indent=2))
    [p] = problems(path)
    assert "JSON Lines" in p.message_en


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"question": "q", "answer": "a"}, "id"),
        (ok(id="   "), "id"),
        (ok(question=None), "question"),
        (ok(question=" \u3000 "), "question"),  # ideographic space only
        ({"id": "faq-1", "answer": "a"}, "question"),
    ],
)
def test_missing_required_field(tmp_path: Path, record: dict[str, Any], field: str) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl(record))
    [p] = problems(path)
    assert (p.location, p.field) == ("line 1", field)
    assert "missing" in p.message_en and "必填" in p.message_zh


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("jsonl", jsonl({"id": "faq-1", "question": "怎么退货"})),
        ("jsonl", jsonl(ok(answer=""))),
        ("jsonl", jsonl(ok(answer=None))),
        ("jsonl", jsonl(ok(answer="\n \u3000\n"))),
        ("csv", "id,question\nfaq-1,怎么退货\n"),
        ("csv", "id,question,answer\nfaq-1,怎么退货,\n"),
        ("md", "## 怎么退货\nid: faq-1\n"),
        ("md", "## 怎么退货\nid: faq-1\n\n\n"),
    ],
)
def test_answer_is_optional(tmp_path: Path, fmt: str, content: str) -> None:
    """Retrieval-only knowledge bases have no answers: id and question are enough."""
    [s] = read_snippets(write_text(tmp_path / f"kb.{fmt}", content))
    assert (s.id, s.question, s.answer) == ("faq-1", "怎么退货", "")


def test_answer_is_optional_in_xlsx(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "kb.xlsx", [["编号", "问题"], ["faq-1", "怎么退货"]])
    [s] = read_snippets(path)
    assert (s.id, s.question, s.answer) == ("faq-1", "怎么退货", "")


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_answer_round_trips(tmp_path: Path, fmt: str) -> None:
    snippets = [Snippet(id="faq-1", question="怎么退货"), Snippet(id="faq-2", question="q2", answer="a2")]
    path = tmp_path / f"kb.{fmt}"
    write_snippets(snippets, path)
    assert read_snippets(path) == snippets


@pytest.mark.parametrize(
    ("changes", "field", "phrase"),
    [
        ({"similar_questions": "能退吗"}, "similar_questions", "list"),
        ({"similar_questions": ["ok", 3]}, "similar_questions", "item 2"),
        ({"tags": {"a": 1}}, "tags", "list"),
        ({"question": 42}, "question", "number"),
        ({"id": 7}, "id", "text"),
        ({"product": ["x"]}, "product", "text"),
        ({"kind": "question"}, "kind", "faq, product"),
        ({"status": "live"}, "status", "draft, published, archived"),
        ({"id": "退货-1"}, "id", "letters"),
        ({"id": "-starts-with-dash"}, "id", "letters"),
        ({"id": "x" * 129}, "id", "128"),
        ({"valid_from": "2026/13/01"}, "valid_from", "real date"),
        ({"valid_to": "next week"}, "valid_to", "2026-01-31"),
        ({"valid_to": 20260101}, "valid_to", "date"),
        ({"valid_from": "2026-05-01", "valid_to": "2026-04-30"}, "valid_to", "before valid_from"),
        ({"question": "两行\n问题"}, "question", "single line"),
        ({"answer": "bad\x00char"}, "answer", "U+0000"),
        ({"tags": ["t" * (MAX_TAG_CHARS + 1)]}, "tags", f"limit of {MAX_TAG_CHARS}"),
        ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, "tags", f"limit of {MAX_TAGS}"),
        ({"similar_questions": [f"问{i}" for i in range(MAX_SIMILAR + 1)]}, "similar_questions", "limit"),
        ({"question": "问" * 501}, "question", "limit of 500"),
        ({"product": "p" * 201}, "product", "limit of 200"),
    ],
)
def test_invalid_values(tmp_path: Path, changes: dict[str, Any], field: str, phrase: str) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl(ok(id="faq-0"), ok(**changes)))
    found = problems(path)
    assert [(p.location, p.field) for p in found] == [("line 2", field)]
    assert phrase in found[0].message_en, found[0].message_en


def test_accepted_values(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.jsonl",
        jsonl(
            ok(id="a", kind="促销", status="已发布", valid_from="2026/3/1", valid_to="2026年3月31日"),
            ok(id="B.2:x_y-z", kind="POLICY", status="Draft", valid_from="2026-03-01", valid_to="2026-03-01"),
            ok(id="c", similar_questions=None, tags=None, product=None, valid_from=None),
        ),
    )
    a, b, c = read_snippets(path)
    assert (a.kind, a.status, a.valid_from, a.valid_to) == (
        "promotion",
        "published",
        date(2026, 3, 1),
        date(2026, 3, 31),
    )
    assert (b.kind, b.status) == ("policy", "draft")
    assert c.similar_questions == () and c.tags == () and c.product is None


def test_unknown_field_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl({"id": "faq-1", "qustion": "怎么退货", "answer": "a"}))
    found = problems(path)
    typo = only(found, "line 1", "qustion")
    assert "did you mean 'question'" in typo.message_en and "是不是“question”" in typo.message_zh
    only(found, "line 1", "question")


def test_field_given_twice_on_one_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", '{"id": "a", "question": "q", "answer": "x", "answer": "y"}\n')
    [p] = problems(path)
    assert (p.location, p.field) == ("line 1", "answer")


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.jsonl", jsonl(ok(id="faq-1"), ok(id="faq-2"), ok(id="faq-1", question="别的"))
    )
    [p] = problems(path)
    assert (p.location, p.field) == ("line 3", "id")
    assert "line 1" in p.message_en and "第 1 行" in p.message_zh and "faq-1" in p.message_en


def test_one_megabyte_answer_reports_size_not_text(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", jsonl(ok(answer="答" * (1 << 20))))
    [p] = problems(path)
    assert (p.location, p.field) == ("line 1", "answer")
    assert "1,048,576" in p.message_en and "1,048,576" in p.message_zh
    assert "答答" not in p.message_zh + p.message_en and len(str(p)) < 400


def test_not_utf8_reports_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    good = jsonl(ok(id="a")).encode("utf-8")
    path.write_bytes(good + jsonl(ok(id="b", question="退货")).encode("gb18030"))
    [p] = problems(path)
    assert p.location == "line 2" and p.field is None
    offset = len(good) + len(b'{"id": "b", "question": "')
    assert f"byte offset {offset}" in p.message_en and "UTF-8" in p.message_zh


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n  \n\t\n"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file_is_nothing_to_import(tmp_path: Path, fmt: str, content: bytes) -> None:
    path = tmp_path / f"kb.{fmt}"
    path.write_bytes(content)
    [p] = problems(path)
    assert p.location == "file"
    if fmt != "xlsx" or not content:
        assert "nothing to import" in p.message_en and "没有可导入的内容" in p.message_zh


def test_all_problems_are_collected_and_nothing_is_returned(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "kb.jsonl",
        jsonl(
            ok(id="good-1"),
            "{broken",
            ok(id="bad id"),
            ok(id="good-2", kind="nope", status="nope"),
            ok(id="good-1"),
            ok(id="good-3"),
        ),
    )
    found = problems(path)
    assert [(p.location, p.field) for p in found] == [
        ("line 2", None),
        ("line 3", "id"),
        ("line 4", "kind"),
        ("line 4", "status"),
        ("line 5", "id"),
    ]
    assert all(p.source == "kb.jsonl" for p in found)


def test_problem_list_is_capped(tmp_path: Path) -> None:
    path = write_text(tmp_path / "kb.jsonl", "{broken\n" * (MAX_PROBLEMS + 5))
    found = problems(path)
    assert len(found) == MAX_PROBLEMS + 1
    assert "5 more" in found[-1].message_en


def test_missing_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        read_snippets(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in info.value.message_en


def test_unsupported_format_argument(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        read_snippets(tmp_path / "kb.jsonl", "yaml")
    with pytest.raises(ValidationError):
        write_snippets(SNIPPETS, tmp_path / "kb.txt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "md"])
def test_bad_values_are_found_in_every_format(tmp_path: Path, fmt: str) -> None:
    """The same validation runs behind every format."""
    bad = [
        Snippet(id="faq-1", question="q", answer="a", status="published"),
        Snippet(id="faq-1", question="q2", answer="a2"),
    ]
    path = tmp_path / f"kb.{fmt}"
    rows = [s.content() for s in bad]
    if fmt == "xlsx":
        make_xlsx(path, [list(COLUMNS)] + [[_cell(r[c]) for c in COLUMNS] for r in rows], title="snippets")
        loc = "sheet 'snippets', row 3"
    elif fmt == "csv":
        write_text(path, "id,question,answer\nfaq-1,q,a\nfaq-1,q2,a2\n")
        loc = "row 3"
    else:
        write_text(path, "## q\nid: faq-1\n\na\n\n## q2\nid: faq-1\n\na2\n")
        loc = "line 7"
    [p] = problems(path)
    assert (p.location, p.field) == (loc, "id")


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return "|".join(value) or None
    return value


@pytest.mark.parametrize(
    ("lang", "fmt", "count"), [("csv", "csv", 2), ("markdown", "md", 2), ("json", "jsonl", 2)]
)
def test_examples_in_the_staff_docs_import(tmp_path: Path, lang: str, fmt: str, count: int) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "import-formats.md").read_text("utf-8")
    blocks = re.findall(rf"```{lang}\n(.*?)```", docs, re.S)
    assert len(blocks) == 1
    path = write_text(tmp_path / f"example.{fmt}", blocks[0])
    snippets = read_snippets(path)
    assert len(snippets) == count
    assert snippets[0].id == "faq-returns-7d" and snippets[0].question == "支持七天无理由退货吗？"


def test_snippet_from_dict_uses_the_same_rules() -> None:
    s = snippet_from_dict({"id": " faq-1 ", "question": "怎麼退貨", "answer": "請申請", "tags": ["a", "a"]})
    assert s == Snippet(id="faq-1", question="怎麼退貨", answer="請申請", tags=("a",))
    with pytest.raises(ImportFailed) as info:
        snippet_from_dict(
            {"id": "faq-1", "qustion": "q"}, source="api", location="body", default_status="draft"
        )
    found = info.value.problems
    assert {(p.source, p.location) for p in found} == {("api", "body")}
    assert {p.field for p in found} == {"qustion", "question"}
    assert snippet_from_dict({"id": "faq-2", "question": "q"}).answer == ""

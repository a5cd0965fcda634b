"""Import and export of snippets: JSONL, CSV, XLSX and Markdown.

Content staff edit the knowledge base in the tool they know; this module turns their files into
:class:`~knowledge.model.Snippet` objects and back. Reading validates the *whole* file and collects
every problem (file, line or row, field, what to do — in Chinese and English) before raising
:class:`~knowledge.errors.ImportFailed`, so one round of fixes is enough and a bad file imports
nothing. Writing is atomic and round-trips exactly: ``read_snippets(write_snippets(s))`` gives back
the same content in every format, or the writer refuses (``ValidationError``) when a format cannot
represent a value (e.g. ``|`` inside a similar question in CSV/XLSX).

Formats (the staff-facing description is ``docs/import-formats.md``):

- ``jsonl``: one JSON object per line, the fields of DESIGN.md; blank lines are ignored. The store's
  own fields ``version``, ``updated_at`` and ``updated_by`` are accepted and ignored.
- ``csv`` / ``xlsx``: a header row (row 1) naming the columns of :data:`COLUMNS` in any order, case
  insensitive, or their Chinese names (:data:`CHINESE_HEADERS`). Lists are separated by ``|`` (or by
  line breaks) inside a cell, so a literal ``|`` in a similar question or tag is not supported.
  Rows are numbered as a spreadsheet shows them (header = row 1), not by physical line.
- ``md``: one ``## question`` heading per snippet, then an optional block of ``key: value`` lines,
  then optional similar questions as a bullet list under a ``相似问法:`` / ``Similar questions:``
  line, then the answer. A snippet without ``id:`` gets :func:`markdown_id` of its question.

Text is kept as written (no Unicode normalisation, no 繁→简); only surrounding whitespace is
stripped and line breaks are unified to ``\\n``.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from knowledge.errors import ImportFailed, Problem, ValidationError
from knowledge.model import (
    CONTENT_FIELDS,
    ID_PATTERN,
    KINDS,
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    MAX_SIMILAR,
    MAX_TAG_CHARS,
    MAX_TAGS,
    STATUSES,
    Snippet,
)

FORMATS = ("jsonl", "csv", "xlsx", "md")

#: File extension -> format. ``.json`` is read as JSON Lines too.
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".xlsx": "xlsx",
    ".md": "md",
    ".markdown": "md",
}

#: CSV/XLSX columns, in the order the writers use. Readers accept any order.
COLUMNS = ("id", *CONTENT_FIELDS)
REQUIRED = ("id", "question")

#: Chinese column names (simplified and traditional) accepted in CSV/XLSX headers and as Markdown keys.
CHINESE_HEADERS = {
    "编号": "id",
    "編號": "id",
    "类型": "kind",
    "類型": "kind",
    "问题": "question",
    "問題": "question",
    "相似问法": "similar_questions",
    "相似問法": "similar_questions",
    "答案": "answer",
    "标签": "tags",
    "標籤": "tags",
    "产品": "product",
    "產品": "product",
    "状态": "status",
    "狀態": "status",
    "生效日期": "valid_from",
    "失效日期": "valid_to",
}

#: Chinese words accepted for ``kind`` and ``status`` values (files always get the English codes).
KIND_ALIASES = {
    "常见问题": "faq",
    "常見問題": "faq",
    "问答": "faq",
    "問答": "faq",
    "产品": "product",
    "產品": "product",
    "商品": "product",
    "促销": "promotion",
    "促銷": "promotion",
    "活动": "promotion",
    "活動": "promotion",
    "政策": "policy",
    "限制": "restricted",
    "敏感": "restricted",
}
STATUS_ALIASES = {
    "草稿": "draft",
    "发布": "published",
    "發布": "published",
    "發佈": "published",
    "已发布": "published",
    "已發布": "published",
    "已發佈": "published",
    "归档": "archived",
    "歸檔": "archived",
    "已归档": "archived",
    "已歸檔": "archived",
}
_MAIN_ALIASES = {"kind": ("常见问题", "产品", "促销", "政策", "限制"), "status": ("草稿", "已发布", "已归档")}

#: Separator of list values (similar questions, tags) inside one CSV/XLSX cell.
LIST_DELIMITER = "|"
#: ``product`` has no limit in the model; this keeps a pasted paragraph out of it.
MAX_PRODUCT_CHARS = 200
#: Problems listed in one ImportFailed; the rest are counted in a last problem.
MAX_PROBLEMS = 1000
#: Prefix of ids derived from a Markdown question.
MD_ID_PREFIX = "md-"
#: Markdown keys of the metadata block (besides the similar-questions marker).
MD_KEYS = ("id", "kind", "tags", "product", "status", "valid_from", "valid_to")
#: Sheet names preferred over the first sheet when reading a workbook (compared case-insensitively).
XLSX_SHEETS = ("snippets", "知识库", "知識庫")
XLSX_MAX_CELL_CHARS = 32_767

#: The store's own fields: accepted in JSONL (e.g. an API dump) and ignored.
_STORE_FIELDS = ("version", "updated_at", "updated_by")
_LIST_FIELDS = ("similar_questions", "tags")
_DATE_FIELDS = ("valid_from", "valid_to")
_LABELS_ZH = {
    "id": "编号",
    "kind": "类型",
    "question": "问题",
    "similar_questions": "相似问法",
    "answer": "答案",
    "tags": "标签",
    "product": "产品",
    "status": "状态",
    "valid_from": "生效日期",
    "valid_to": "失效日期",
}
_BOM = b"\xef\xbb\xbf"
# Characters no format can carry: C0 controls except tab and line feed (CR is unified to LF first),
# lone surrogates (from JSON escapes) and the XML non-characters.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_DATE_RE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_LIST_SPLIT = re.compile(r"[|\n]")
_MD_TAG_SPLIT = re.compile(r"[|,，、]")
_MD_HEADING = re.compile(r"^##(?!#)[ \t]*(.*?)[ \t]*$")
_MD_KEY_LINE = re.compile(r"^[ \t]*([^\s:：][^:：\n]{0,39}?)[ \t]*[:：][ \t]*(.*?)[ \t]*$")
_MD_BULLET = re.compile(r"^[ \t]*[-*+][ \t]+(.*)$")
_ASCII_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_ -]{0,39}$")
_MD_MARKERS = ("similar_questions", "similar questions", "相似问法", "相似問法")


# --------------------------------------------------------------------------------------------------
# Public API


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` from its extension (one of :data:`FORMATS`)."""
    suffix = Path(path).suffix.lower()
    fmt = EXTENSIONS.get(suffix)
    if fmt:
        return fmt
    name = Path(path).name
    known = ", ".join(EXTENSIONS)
    if suffix == ".xls":
        raise ValidationError(
            f"不支持旧版 Excel 文件 {name}（.xls）：请在 Excel/WPS 中另存为“Excel 工作簿 (*.xlsx)”后再导入",
            f"{name}: the old Excel format .xls is not supported; save it as 'Excel Workbook (*.xlsx)'",
            details={"path": str(path), "supported": list(EXTENSIONS)},
        )
    raise ValidationError(
        f"无法识别文件 {name} 的格式（扩展名“{suffix or '无'}”）：支持的扩展名为 {known}",
        f"cannot tell the format of {name} from its extension '{suffix or '(none)'}'; "
        f"supported extensions: {known}",
        details={"path": str(path), "supported": list(EXTENSIONS)},
    )


def markdown_id(question: str) -> str:
    """The id of a Markdown snippet without an ``id:`` line: stable for the same question text."""
    return MD_ID_PREFIX + hashlib.sha1(question.encode("utf-8")).hexdigest()[:10]


def read_snippets(
    path: str | os.PathLike[str], fmt: str | None = None, *, default_status: str = "published"
) -> list[Snippet]:
    """Read and validate a whole file; raise :class:`ImportFailed` listing every problem.

    ``default_status`` is used where a snippet gives no status. The snippets have version 0 and no
    audit fields: the store assigns those.
    """
    p = Path(path)
    fmt = _resolve_format(p, fmt)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValidationError(
            f"无法读取文件 {p.name}：{exc.strerror or exc}。请检查路径和权限",
            f"cannot read {p.name}: {exc.strerror or exc}; check the path and permissions",
            details={"path": str(p)},
        ) from exc
    return parse_snippets(data, fmt, source=p.name, default_status=default_status)


def parse_snippets(
    data: bytes, fmt: str, *, source: str = "<upload>", default_status: str = "published"
) -> list[Snippet]:
    """:func:`read_snippets` for content already in memory (e.g. an HTTP upload named ``source``)."""
    fmt = _resolve_format(None, fmt)
    if default_status not in STATUSES:
        raise ValueError(f"default_status must be one of {STATUSES}, not {default_status!r}")
    problems = _Problems(source)
    records: list[_Record] = []
    if not data:
        problems.add(
            "file", None, "文件是空的，没有可导入的内容", "the file is empty; there is nothing to import"
        )
    elif fmt == "xlsx":
        records = _read_xlsx(data, problems)
    else:
        text = _decode(data, fmt, problems)
        if text is not None and not text.strip():
            problems.add(
                "file", None, "文件是空的，没有可导入的内容", "the file is empty; there is nothing to import"
            )
        elif text is not None:
            reader = {"jsonl": _read_jsonl, "csv": _read_csv, "md": _read_md}[fmt]
            records = reader(text, problems)
    snippets = _validate_all(records, problems, default_status)
    if problems:
        raise ImportFailed(problems=problems.finish())
    return snippets


def snippet_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "input",
    location: str = "item",
    default_status: str = "published",
) -> Snippet:
    """Validate one snippet given as a JSONL-style dict (e.g. a form or API body) by the import rules.

    Raises :class:`ImportFailed` whose problems carry ``source`` and ``location``.
    """
    if default_status not in STATUSES:
        raise ValueError(f"default_status must be one of {STATUSES}, not {default_status!r}")
    problems = _Problems(source)
    snippets = _validate_all([_record_from_mapping(data, location, problems)], problems, default_status)
    if problems:
        raise ImportFailed(problems=problems.finish())
    return snippets[0]


def write_snippets(snippets: Iterable[Snippet], path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """Write ``snippets`` to ``path`` atomically (temp file + ``os.replace``); return how many.

    Only content fields are written (no version or audit fields). Raises ``ValidationError``, and
    leaves ``path`` untouched, when the format cannot carry a value exactly.
    """
    p = Path(path)
    items = list(snippets)
    data = dump_snippets(items, _resolve_format(p, fmt))
    try:
        _atomic_write(p, data)
    except OSError as exc:
        raise ValidationError(
            f"无法写入文件 {p.name}：{exc.strerror or exc}。请检查目录是否存在以及写入权限",
            f"cannot write {p.name}: {exc.strerror or exc}; check that the folder exists and is writable",
            details={"path": str(p)},
        ) from exc
    return len(items)


def dump_snippets(snippets: Sequence[Snippet], fmt: str) -> bytes:
    """The bytes :func:`write_snippets` would write (e.g. for an HTTP export)."""
    fmt = _resolve_format(None, fmt)
    _check_writable(snippets, fmt)
    if fmt == "jsonl":
        return "".join(json.dumps(s.content(), ensure_ascii=False) + "\n" for s in snippets).encode("utf-8")
    if fmt == "csv":
        return _dump_csv(snippets)
    if fmt == "xlsx":
        return _dump_xlsx(snippets)
    return _dump_md(snippets)


# --------------------------------------------------------------------------------------------------
# Problems and records


class _Problems:
    """Collects problems of one file, keeping the first :data:`MAX_PROBLEMS`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[Problem] = []
        self.count = 0

    def add(self, location: str, field: str | None, message_zh: str, message_en: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(self.source, location, field, message_zh, message_en))

    def __bool__(self) -> bool:
        return self.count > 0

    def finish(self) -> list[Problem]:
        out = list(self.items)
        rest = self.count - len(out)
        if rest > 0:
            out.append(
                Problem(
                    self.source,
                    "file",
                    None,
                    f"另有 {rest} 处错误未列出；请先修正以上错误后重新导入",
                    f"{rest} more problem(s) not listed; fix the ones above and import again",
                )
            )
        return out


@dataclass
class _Record:
    """One snippet as found in a file, before validation.

    ``values`` maps canonical field names to raw values: ``str``/``None`` for text, ``list`` for
    the list fields (a JSON value for JSONL), and ``str``/``date``/``datetime`` for dates.
    """

    location: str
    values: dict[str, Any] = field(default_factory=dict)
    field_locations: dict[str, str] = field(default_factory=dict)
    derived_id: bool = False
    #: Required fields whose absence was already reported once for the whole file (a missing column).
    reported: set[str] = field(default_factory=set)

    def where(self, name: str | None) -> str:
        return self.field_locations.get(name or "", self.location)


class _Check:
    """Validation of one record: reports problems at the record's (or field's) location."""

    def __init__(self, record: _Record, problems: _Problems) -> None:
        self.record = record
        self.problems = problems
        self.failed = False

    def bad(self, name: str | None, message_zh: str, message_en: str) -> None:
        self.failed = True
        self.problems.add(self.record.where(name), name, message_zh, message_en)

    # -- value checks; each returns a fallback after reporting a problem -----------------------

    def text(self, name: str, *, required: bool, max_chars: int, one_line: bool) -> str:
        value = self.record.values.get(name)
        label = _LABELS_ZH[name]
        if value is None:
            value = ""
        if not isinstance(value, str):
            self.bad(
                name,
                f"{label}应为文本，实际是{_type_zh(value)}",
                f"{name} must be text, not {_type_en(value)}",
            )
            return ""
        s = _clean(value)
        if not s:
            if required and name in self.record.reported:
                self.failed = True
            elif required:
                self.bad(name, *_missing(name))
            return ""
        return s if self._chars(name, label, s, max_chars=max_chars, one_line=one_line) else ""

    def _chars(self, name: str, label: str, s: str, *, max_chars: int, one_line: bool, item: int = 0) -> bool:
        what_zh = f"第 {item} 个{label}" if item else label
        what_en = f"{name} item {item}" if item else name
        m = _BAD_CHARS.search(s)
        if m:
            code = f"U+{ord(m.group()):04X}"
            self.bad(
                name,
                f"{what_zh}在第 {m.start() + 1} 个字符处含有不可见的控制字符 {code}，请删除该字符",
                f"{what_en} contains the invisible control character {code} at character "
                f"{m.start() + 1}; delete it",
            )
            return False
        if one_line and "\n" in s:
            self.bad(
                name,
                f"{what_zh}只能有一行，请删除其中的换行",
                f"{what_en} must be a single line; remove the line breaks",
            )
            return False
        if len(s) > max_chars:
            self.bad(
                name,
                f"{what_zh}长度为 {len(s):,} 个字符，超过上限 {max_chars:,}；请缩短，或拆分成多条知识",
                f"{what_en} is {len(s):,} characters long, over the limit of {max_chars:,}; "
                "shorten it or split it into several snippets",
            )
            return False
        return True

    def choice(self, name: str, choices: Sequence[str], aliases: Mapping[str, str], default: str) -> str:
        value = self.record.values.get(name)
        label = _LABELS_ZH[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        if not isinstance(value, str):
            self.bad(
                name,
                f"{label}应为文本，实际是{_type_zh(value)}",
                f"{name} must be text, not {_type_en(value)}",
            )
            return default
        s = value.strip()
        if s.lower() in choices:
            return s.lower()
        if s in aliases:
            return aliases[s]
        allowed = ", ".join(choices)
        words = "、".join(_MAIN_ALIASES[name])
        self.bad(
            name,
            f"{label}“{_show(s)}”无效：请填写 {allowed} 之一（中文可写：{words}；或留空，默认 {default}）",
            f"{name} '{_show(s)}' is not valid; use one of {allowed} (or leave it empty for {default})",
        )
        return default

    def items(self, name: str, *, max_items: int, max_chars: int) -> tuple[str, ...]:
        value = self.record.values.get(name)
        label = _LABELS_ZH[name]
        if value is None:
            return ()
        if not isinstance(value, list):
            self.bad(
                name,
                f'{label}应为文本列表，例如 ["…", "…"]，实际是{_type_zh(value)}',
                f'{name} must be a list of texts such as ["...", "..."], not {_type_en(value)}',
            )
            return ()
        out: list[str] = []
        seen: set[str] = set()
        for i, item in enumerate(value, 1):
            if not isinstance(item, str):
                self.bad(
                    name,
                    f"第 {i} 个{label}应为文本，实际是{_type_zh(item)}",
                    f"{name} item {i} must be text, not {_type_en(item)}",
                )
                continue
            s = _clean(item)
            if not s or s in seen:
                continue
            if self._chars(name, label, s, max_chars=max_chars, one_line=True, item=i):
                seen.add(s)
                out.append(s)
        if len(out) > max_items:
            self.bad(
                name,
                f"{label}共 {len(out)} 个，超过上限 {max_items} 个；请删减",
                f"{name} has {len(out)} entries, over the limit of {max_items}; remove some",
            )
        return tuple(out)

    def day(self, name: str) -> date | None:
        value = self.record.values.get(name)
        label = _LABELS_ZH[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            s = value.strip()
            m = _DATE_RE.match(s)
            if m:
                try:
                    return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                except ValueError:
                    self.bad(
                        name,
                        f"{label}“{_show(s)}”不是存在的日期，请检查年月日",
                        f"{name} '{_show(s)}' is not a real date; check the year, month and day",
                    )
                    return None
            self.bad(
                name,
                f"{label}“{_show(s)}”格式不对：请写成 2026-01-31（或留空表示不限）",
                f"{name} '{_show(s)}' is not a date; write it as 2026-01-31 (or leave it empty for no limit)",
            )
            return None
        self.bad(
            name,
            f"{label}应为日期（如 2026-01-31），实际是{_type_zh(value)}",
            f"{name} must be a date such as 2026-01-31, not {_type_en(value)}",
        )
        return None


def _validate(record: _Record, problems: _Problems, default_status: str) -> tuple[Snippet | None, str]:
    """The snippet of ``record`` (None when it has problems) and its id ("" when invalid)."""
    c = _Check(record, problems)
    sid = c.text("id", required=True, max_chars=128, one_line=True)  # "" when it has a problem
    if sid and not ID_PATTERN.fullmatch(sid):
        c.bad(
            "id",
            f"编号“{_show(sid)}”无效：只能使用英文字母、数字和 _ . : -，以字母或数字开头，最长 128 个字符"
            "（例如 faq-returns-7d）",
            f"id '{_show(sid)}' is not valid: use letters, digits and _ . : - only, start with a letter "
            "or digit, at most 128 characters (e.g. faq-returns-7d)",
        )
        sid = ""
    question = c.text("question", required=True, max_chars=MAX_QUESTION_CHARS, one_line=True)
    answer = c.text("answer", required=False, max_chars=MAX_ANSWER_CHARS, one_line=False)
    kind = c.choice("kind", KINDS, KIND_ALIASES, "faq")
    status = c.choice("status", STATUSES, STATUS_ALIASES, default_status)
    similar = c.items("similar_questions", max_items=MAX_SIMILAR, max_chars=MAX_QUESTION_CHARS)
    tags = c.items("tags", max_items=MAX_TAGS, max_chars=MAX_TAG_CHARS)
    product = c.text("product", required=False, max_chars=MAX_PRODUCT_CHARS, one_line=True)
    valid_from = c.day("valid_from")
    valid_to = c.day("valid_to")
    if valid_from and valid_to and valid_from > valid_to:
        c.bad(
            "valid_to",
            f"失效日期 {valid_to} 早于生效日期 {valid_from}；请检查这两个日期",
            f"valid_to {valid_to} is before valid_from {valid_from}; check both dates",
        )
    if c.failed:
        return None, sid
    snippet = Snippet(
        id=sid,
        question=question,
        answer=answer,
        kind=kind,
        similar_questions=similar,
        tags=tags,
        product=product or None,
        status=status,
        valid_from=valid_from,
        valid_to=valid_to,
    )
    return snippet, sid


def _validate_all(records: list[_Record], problems: _Problems, default_status: str) -> list[Snippet]:
    out: list[Snippet] = []
    first_seen: dict[str, _Record] = {}
    for record in records:
        snippet, sid = _validate(record, problems, default_status)
        if sid:
            earlier = first_seen.get(sid)
            if earlier is not None:
                hint_zh = hint_en = ""
                if record.derived_id:
                    hint_zh = "（该编号由问题生成：两条知识的问题相同，请为其中一条加上 id: 行或修改问题）"
                    hint_en = (
                        " (derived from the question: two snippets have the same question; add an id: line)"
                    )
                problems.add(
                    record.where("id"),
                    "id",
                    f"编号“{sid}”重复：{location_zh(earlier.where('id'))}已使用该编号{hint_zh}；每条知识的编号必须唯一",
                    f"duplicate id '{sid}': already used at {earlier.where('id')}{hint_en}; "
                    "every snippet needs its own id",
                )
                continue
            first_seen[sid] = record
        if snippet is not None:
            out.append(snippet)
    if not records and not problems:
        problems.add(
            "file",
            None,
            "文件中没有任何知识条目，没有可导入的内容",
            "the file has no snippets; there is nothing to import",
        )
    return out


# --------------------------------------------------------------------------------------------------
# Encoding


def _decode(data: bytes, fmt: str, problems: _Problems) -> str | None:
    """UTF-8 text of ``data`` (BOM removed), or None after reporting why it is not UTF-8."""
    if data.startswith(b"PK\x03\x04"):
        problems.add(
            "file",
            None,
            "这看起来是一个 Excel 工作簿（.xlsx），不是文本文件；"
            "请把扩展名改为 .xlsx，或在 Excel 中另存为 CSV UTF-8",
            "this looks like an Excel workbook (.xlsx), not a text file; rename it to .xlsx "
            "or save it from Excel as 'CSV UTF-8'",
        )
        return None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.add(
            "file",
            None,
            "文件是 UTF-16 编码（Excel 的“Unicode 文本”）；请另存为 UTF-8 编码后再导入"
            + ("（Excel：另存为“CSV UTF-8（逗号分隔）”）" if fmt == "csv" else ""),
            "the file is UTF-16 encoded (Excel's 'Unicode Text'); save it as UTF-8 and import again"
            + (" (Excel: Save As 'CSV UTF-8 (Comma delimited)')" if fmt == "csv" else ""),
        )
        return None
    offset = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        line = data.count(b"\n", 0, at) + 1
        guess_zh = guess_en = ""
        try:
            data.decode("gb18030")
        except UnicodeDecodeError:
            pass
        else:
            guess_zh = "，看起来是 GBK/GB18030 编码（中文 Windows 的默认编码）"
            guess_en = "; it looks like GBK/GB18030 (the default on Chinese Windows)"
        how_zh = "Excel：另存为“CSV UTF-8（逗号分隔）”；记事本/WPS：保存时编码选 UTF-8"
        how_en = "Excel: Save As 'CSV UTF-8 (Comma delimited)'; Notepad/WPS: choose the UTF-8 encoding"
        problems.add(
            f"line {line}",
            None,
            f"文件不是 UTF-8 编码：第 {line} 行（第 {at} 字节）处有无法识别的字节{guess_zh}。"
            f"请用 UTF-8 编码重新保存后再导入（{how_zh}）",
            f"the file is not UTF-8: undecodable byte at line {line} (byte offset {at}){guess_en}. "
            f"Save it again as UTF-8 and import it ({how_en})",
        )
        return None


# --------------------------------------------------------------------------------------------------
# JSONL


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers keys given twice (json keeps only the last)."""

    duplicates: list[str]


def _json_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _read_jsonl(text: str, problems: _Problems) -> list[_Record]:
    records: list[_Record] = []
    seen_content = False
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = json.loads(line, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            if not seen_content and _is_single_json_document(text):
                problems.add(
                    where,
                    None,
                    "整个文件是一个 JSON 文档（如数组或多行对象），"
                    "但导入需要 JSON Lines：每行一个完整的 JSON 对象",
                    "the file is one JSON document (an array or a multi-line object); the import needs "
                    "JSON Lines: one complete JSON object per line",
                )
                return []
            problems.add(
                where,
                None,
                f"第 {n} 行不是有效的 JSON（第 {exc.colno} 列：{exc.msg}）。请检查引号、逗号和括号；"
                "每行必须是一个完整的 JSON 对象",
                f"line {n} is not valid JSON (column {exc.colno}: {exc.msg}); check quotes, commas and "
                "brackets - each line must be one complete JSON object",
            )
            seen_content = True
            continue
        seen_content = True
        if not isinstance(obj, _JsonObject):
            hint_zh = (
                "（这一行是 JSON 数组：请每行写一个对象，而不是把所有对象放进一个数组）"
                if isinstance(obj, list)
                else ""
            )
            hint_en = (
                " (this line is a JSON array: write one object per line instead)"
                if isinstance(obj, list)
                else ""
            )
            problems.add(
                where,
                None,
                f'第 {n} 行应为一个 JSON 对象 {{"id": …, "question": …}}，实际是{_type_zh(obj)}{hint_zh}',
                f'line {n} must be a JSON object {{"id": ..., "question": ...}}, '
                f"not {_type_en(obj)}{hint_en}",
            )
            continue
        for key in obj.duplicates:
            problems.add(
                where,
                key,
                f"字段“{_show(key)}”在同一行出现了多次，请只保留一个",
                f"field '{_show(key)}' appears more than once on this line; keep only one",
            )
        records.append(_record_from_mapping(obj, where, problems))
    return records


def _record_from_mapping(data: Mapping[str, Any], where: str, problems: _Problems) -> _Record:
    record = _Record(where)
    for key, value in data.items():
        if key in COLUMNS:
            record.values[key] = value
        elif key not in _STORE_FIELDS:
            problems.add(where, str(key), *_unknown_field(str(key), COLUMNS))
    return record


def _is_single_json_document(text: str) -> bool:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False
    return isinstance(doc, list | dict)


# --------------------------------------------------------------------------------------------------
# CSV and XLSX


@dataclass
class _Header:
    columns: dict[int, str]  # column index -> canonical field
    ignored: set[int]  # unknown or duplicate columns, already reported
    missing: set[str]  # required fields without a column, already reported


def _canonical(name: str) -> str | None:
    s = name.strip().lstrip("\ufeff").strip()
    if s in CHINESE_HEADERS:
        return CHINESE_HEADERS[s]
    key = re.sub(r"[\s-]+", "_", s.lower())
    return key if key in COLUMNS else None


def _read_header(cells: Sequence[str], where: str, problems: _Problems) -> _Header | None:
    header = _Header({}, set(), set())
    named = [(i, c.strip()) for i, c in enumerate(cells) if c.strip()]
    if not named or not any(_canonical(c) for _, c in named):
        problems.add(
            where,
            None,
            "第一行必须是标题行，写明各列名称："
            + ", ".join(COLUMNS)
            + "（或中文："
            + ", ".join(_LABELS_ZH.values())
            + "）",
            "the first row must be a header row naming the columns: "
            + ", ".join(COLUMNS)
            + " (or their Chinese names: "
            + ", ".join(_LABELS_ZH.values())
            + ")",
        )
        return None
    seen: dict[str, str] = {}
    for i, cell in named:
        canon = _canonical(cell)
        if canon is None:
            header.ignored.add(i)
            problems.add(where, cell, *_unknown_field(cell, COLUMNS, column=True))
        elif canon in seen:
            header.ignored.add(i)
            problems.add(
                where,
                canon,
                f"列“{_show(cell)}”与列“{seen[canon]}”重复（都是 {canon}），请删除其中一列",
                f"column '{_show(cell)}' repeats column '{seen[canon]}' (both are {canon}); "
                "delete one of them",
            )
        else:
            seen[canon] = cell
            header.columns[i] = canon
    for name in REQUIRED:
        if name not in seen:
            header.missing.add(name)
            problems.add(
                where,
                name,
                f"缺少必填列“{name}”（或“{_LABELS_ZH[name]}”），请在标题行加上这一列",
                f"the required column '{name}' (or '{_LABELS_ZH[name]}') is missing; "
                "add it to the header row",
            )
    return header


def _table_records(
    rows: Iterator[tuple[int, list[Any]]],
    where: Callable[[int], str],
    problems: _Problems,
    convert: Callable[[str, Any], Any],
) -> list[_Record]:
    """Records of a table whose first row is the header; ``convert(field, cell)`` types a cell."""
    records: list[_Record] = []
    header: _Header | None = None
    for number, row in rows:
        if header is None:
            header = _read_header([_cell_str(c) for c in row], where(number), problems)
            if header is None:
                return []
            continue
        if all(_blank(c) for c in row):
            continue
        record = _Record(where(number))
        for i, cell in enumerate(row):
            if i in header.columns:
                record.values[header.columns[i]] = convert(header.columns[i], cell)
            elif i not in header.ignored and not _blank(cell):
                problems.add(
                    record.location,
                    None,
                    f"第 {_column_letter(i)} 列有内容但没有列名；请在标题行为它加上列名，或删除该内容",
                    f"column {_column_letter(i)} has a value but no header; name it in the header row or "
                    "delete the value",
                )
        record.reported |= header.missing
        records.append(record)
    if header is not None and not records and not problems:
        problems.add(
            "file",
            None,
            "文件只有标题行，没有任何知识条目，没有可导入的内容",
            "the file has a header row but no snippets; there is nothing to import",
        )
    return records


def _read_csv(text: str, problems: _Problems) -> list[_Record]:
    if csv.field_size_limit() < 2**27:  # the default (128 KiB) fails on the long fields we report
        csv.field_size_limit(2**27)
    reader = csv.reader(io.StringIO(text, newline=""))

    def rows() -> Iterator[tuple[int, list[Any]]]:
        number = 0
        try:
            for row in reader:
                number += 1
                yield number, row
        except csv.Error as exc:
            problems.add(
                f"row {number + 1}",
                None,
                f"CSV 格式错误（第 {reader.line_num} 行附近：{exc}）；请检查引号是否成对",
                f"malformed CSV near line {reader.line_num} ({exc}); check that quotes are paired",
            )

    def convert(name: str, cell: Any) -> Any:
        return _split_cell(cell) if name in _LIST_FIELDS else cell

    return _table_records(rows(), lambda n: f"row {n}", problems, convert)


def _read_xlsx(data: bytes, problems: _Problems) -> list[_Record]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds (zip, XML, key errors) for a bad workbook
        problems.add(
            "file",
            None,
            "不是有效的 Excel 工作簿（.xlsx）；请在 Excel/WPS 中打开后另存为“Excel 工作簿 (*.xlsx)”再导入",
            "this is not a valid Excel workbook (.xlsx); open it in Excel/WPS and save it as "
            "'Excel Workbook (*.xlsx)', then import it again",
        )
        return []
    try:
        sheets = wb.worksheets
        if not sheets:
            problems.add("file", None, "工作簿中没有工作表", "the workbook has no worksheet")
            return []
        preferred = [s for s in sheets if s.title.strip().lower() in XLSX_SHEETS]
        sheet = preferred[0] if preferred else sheets[0]
        title = sheet.title
        sheet.reset_dimensions()  # some tools write a wrong <dimension>; read what is really there

        def rows() -> Iterator[tuple[int, list[Any]]]:
            for number, row in enumerate(sheet.iter_rows(values_only=True), 1):
                yield number, list(row)

        def convert(name: str, cell: Any) -> Any:
            if name in _DATE_FIELDS:
                return cell.strip() if isinstance(cell, str) else cell
            text = None if cell is None else _cell_str(cell)
            return _split_cell(text) if name in _LIST_FIELDS else text

        return _table_records(rows(), lambda n: f"sheet '{title}', row {n}", problems, convert)
    finally:
        wb.close()


def _cell_str(cell: Any) -> str:
    """A spreadsheet cell as text: ``1001`` (not ``1001.0``), dates as ISO."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, datetime) and cell.time() == time():
        return cell.date().isoformat()
    if isinstance(cell, date | time):
        return cell.isoformat()
    return str(cell)


def _split_cell(cell: str | None) -> list[str] | None:
    if cell is None or not cell.strip():
        return None
    return _LIST_SPLIT.split(_unify_newlines(cell))


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _column_letter(index: int) -> str:
    letters = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(65 + r) + letters
    return letters


def _dump_csv(snippets: Sequence[Snippet]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for s in snippets:
        writer.writerow([_table_value(s, name) or "" for name in COLUMNS])
    # With a BOM so that Excel opens Chinese text correctly; the reader accepts both.
    return _BOM + buf.getvalue().encode("utf-8")


def _table_value(s: Snippet, name: str) -> Any:
    value = getattr(s, name)
    if name in _LIST_FIELDS:
        return LIST_DELIMITER.join(value) or None
    if name in _DATE_FIELDS:
        return value.isoformat() if value else None
    return value if value != "" else None


def _dump_xlsx(snippets: Sequence[Snippet]) -> bytes:
    import openpyxl
    from openpyxl.styles import Font

    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "snippets"
    ws.append(list(COLUMNS))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    widths = {"id": 22, "question": 40, "similar_questions": 50, "answer": 70, "tags": 20, "product": 16}
    for i, name in enumerate(COLUMNS):
        ws.column_dimensions[_column_letter(i)].width = widths.get(name, 12)
    ws.freeze_panes = "A2"
    for r, s in enumerate(snippets, 2):
        for i, name in enumerate(COLUMNS, 1):
            value = _table_value(s, name)
            if name in _DATE_FIELDS:
                value = getattr(s, name)
            if value is None:
                continue
            cell = ws.cell(row=r, column=i)
            cell.value = value
            if isinstance(value, str):
                cell.data_type = "s"  # text starting with "=" stays text, not a formula
            else:
                cell.number_format = "yyyy-mm-dd"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Markdown


def _md_key(key: str) -> str | None:
    """Canonical field of a Markdown ``key:`` line, ``similar_questions`` for the marker."""
    k = key.strip()
    if k.lower() in _MD_MARKERS or k in _MD_MARKERS:
        return "similar_questions"
    return _canonical(k)


def _is_md_marker(line: str) -> tuple[bool, str]:
    bare = line.strip().rstrip(":：").strip()
    if bare.lower() in _MD_MARKERS or bare in _MD_MARKERS:
        return True, ""
    m = _MD_KEY_LINE.match(line)
    if m and _md_key(m.group(1)) == "similar_questions":
        return True, m.group(2)
    return False, ""


def _read_md(text: str, problems: _Problems) -> list[_Record]:
    lines = _unify_newlines(text).split("\n")
    starts = [i for i, line in enumerate(lines) if _MD_HEADING.match(line)]
    if not starts:
        problems.add(
            "file",
            None,
            "没有找到任何“## 问题”标题：每条知识以一行 ## 开头，后面写问题",
            "no '## question' heading found: each snippet starts with a line '## ' followed by its question",
        )
        return []
    records = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        records.append(_md_section(lines, start, end, problems))
    return records


def _md_section(lines: list[str], start: int, end: int, problems: _Problems) -> _Record:
    heading = _MD_HEADING.match(lines[start])
    assert heading is not None
    record = _Record(f"line {start + 1}")
    record.values["question"] = heading.group(1)
    i = start + 1

    def skip_blank() -> None:
        nonlocal i
        while i < end and not lines[i].strip():
            i += 1

    skip_blank()
    # The metadata block: starts with a known key (or a near miss of one, to report typos).
    m = _MD_KEY_LINE.match(lines[i]) if i < end else None
    if m and (_md_key(m.group(1)) in MD_KEYS or _near_md_key(m.group(1))):
        while i < end and lines[i].strip():
            m = _MD_KEY_LINE.match(lines[i])
            if not m:
                break
            key, value, where = m.group(1), m.group(2), f"line {i + 1}"
            canon = _md_key(key)
            if canon == "similar_questions":
                break
            if canon in MD_KEYS:
                if canon in record.field_locations:
                    problems.add(
                        where,
                        canon,
                        f"“{key}”在这条知识中出现了多次"
                        f"（先在{location_zh(record.field_locations[canon])}），请只保留一个",
                        f"'{key}' is given more than once for this snippet (first at "
                        f"{record.field_locations[canon]}); keep only one",
                    )
                else:
                    record.field_locations[canon] = where
                    record.values[canon] = _md_split(value) if canon == "tags" else value
            elif canon in ("question", "answer"):
                problems.add(
                    where,
                    canon,
                    "Markdown 中问题写在 ## 标题里，答案写在元数据之后的正文里，不要写成“键: 值”行",
                    "in Markdown the question is the ## heading and the answer is the text after the "
                    "metadata; do not write them as 'key: value' lines",
                )
            elif _ASCII_KEY.match(key.strip()):
                problems.add(
                    where, key.strip(), *_unknown_field(key.strip(), (*MD_KEYS, "similar questions"))
                )
            else:
                break  # e.g. "注意：…" — the answer starts here
            i += 1
        skip_blank()
    # Similar questions: bullets under a marker line.
    is_marker, inline = _is_md_marker(lines[i]) if i < end else (False, "")
    if is_marker:
        record.field_locations["similar_questions"] = f"line {i + 1}"
        similar = inline.split(LIST_DELIMITER) if inline.strip() else []
        i += 1
        skip_blank()
        while i < end:
            bullet = _MD_BULLET.match(lines[i])
            if not bullet:
                break
            similar.append(bullet.group(1))
            i += 1
        record.values["similar_questions"] = similar
        skip_blank()
    if i < end:
        record.field_locations["answer"] = f"line {i + 1}"
    record.values["answer"] = "\n".join(lines[i:end])
    if not _clean(record.values.get("id") or ""):
        question = _clean(heading.group(1))
        if question:
            record.values["id"] = markdown_id(question)
            record.derived_id = True
    return record


def _near_md_key(key: str) -> bool:
    k = key.strip().lower()
    return bool(_ASCII_KEY.match(k)) and bool(difflib.get_close_matches(k, MD_KEYS, n=1, cutoff=0.75))


def _md_split(value: str) -> list[str]:
    return _MD_TAG_SPLIT.split(value)


def _dump_md(snippets: Sequence[Snippet]) -> bytes:
    parts = ["# 知识库 / Knowledge base\n"]
    for s in snippets:
        block = [f"## {s.question}", f"id: {s.id}", f"kind: {s.kind}", f"status: {s.status}"]
        if s.tags:
            block.append("tags: " + ", ".join(s.tags))
        if s.product:
            block.append(f"product: {s.product}")
        if s.valid_from:
            block.append(f"valid_from: {s.valid_from.isoformat()}")
        if s.valid_to:
            block.append(f"valid_to: {s.valid_to.isoformat()}")
        if s.similar_questions:
            block += ["", "相似问法:"] + [f"- {q}" for q in s.similar_questions]
        block += ["", s.answer]
        parts.append("\n".join(block) + "\n")
    return "\n".join(parts).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Writing


def _check_writable(snippets: Sequence[Snippet], fmt: str) -> None:
    """Refuse values the format would change on the way back (the round trip must be exact)."""
    issues: list[tuple[str, str, str, str]] = []  # id, field, zh, en

    def refuse(s: Snippet, name: str, zh: str, en: str) -> None:
        issues.append((s.id, name, zh, en))

    seen: set[str] = set()
    for s in snippets:
        if s.id in seen:
            refuse(s, "id", "编号重复", "duplicate id")
        seen.add(s.id)
        texts = [s.id, s.question, s.answer, s.product or "", *s.similar_questions, *s.tags]
        if fmt != "jsonl" and any(_BAD_CHARS.search(t) for t in texts):
            refuse(s, "answer", "含有控制字符", "contains control characters")
        if fmt in ("csv", "xlsx"):
            for name in _LIST_FIELDS:
                if any(LIST_DELIMITER in v or "\n" in v or "\r" in v for v in getattr(s, name)):
                    refuse(
                        s,
                        name,
                        "含有“|”或换行（列表分隔符）",
                        "contains '|' or a line break (the list separator)",
                    )
            if fmt == "xlsx" and any(len(t) > XLSX_MAX_CELL_CHARS for t in texts):
                refuse(
                    s,
                    "answer",
                    f"超过 Excel 单元格上限 {XLSX_MAX_CELL_CHARS} 个字符",
                    "is over Excel's cell limit",
                )
        if fmt == "md":
            single = [s.id, s.question, s.product or "", *s.similar_questions, *s.tags]
            if any("\n" in t or "\r" in t for t in single):
                refuse(s, "question", "含有换行", "contains a line break")
            if any(_MD_TAG_SPLIT.search(t) for t in s.tags):
                refuse(s, "tags", "标签含有分隔符 , ， 、 |", "a tag contains a separator , ， 、 |")
            if any(_MD_HEADING.match(line) for line in s.answer.split("\n")):
                refuse(s, "answer", "答案中有以 ## 开头的行", "the answer has a line starting with ##")
            if not s.similar_questions and s.answer and _is_md_marker(s.answer.split("\n", 1)[0])[0]:
                refuse(s, "answer", "答案以“相似问法:”开头", "the answer starts with 'Similar questions:'")
    if issues:
        first = issues[0]
        raise ValidationError(
            f"有 {len(issues)} 条知识无法按 {fmt} 格式准确导出（例如 {first[0]} 的 {first[1]}：{first[2]}）；"
            "请修改这些内容，或改用 JSONL 格式导出",
            f"{len(issues)} snippet(s) cannot be written exactly as {fmt} (e.g. {first[0]}, {first[1]}: "
            f"{first[3]}); change them or export as JSONL",
            details=[{"id": i, "field": f, "message_zh": zh, "message_en": en} for i, f, zh, en in issues],
        )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # keep the old file's permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------
# Small helpers


def _resolve_format(path: Path | None, fmt: str | None) -> str:
    if fmt is None:
        assert path is not None
        return detect_format(path)
    f = fmt.strip().lower().lstrip(".")
    f = {"json": "jsonl", "ndjson": "jsonl", "markdown": "md"}.get(f, f)
    if f not in FORMATS:
        raise ValidationError(
            f"不支持的格式“{fmt}”：请使用 {', '.join(FORMATS)} 之一",
            f"unsupported format '{fmt}'; use one of {', '.join(FORMATS)}",
            details={"format": fmt, "supported": list(FORMATS)},
        )
    return f


def _unify_newlines(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _clean(s: str) -> str:
    return _unify_newlines(s).strip()


def location_zh(location: str) -> str:
    """A location ("line 3", "sheet 'x', row 7") in Chinese, for Chinese messages."""
    m = re.fullmatch(r"(?:sheet '(.*)', )?(?:line|row) (\d+)", location)
    if not m:
        return location
    sheet = f"工作表“{m.group(1)}”" if m.group(1) is not None else ""
    return f"{sheet}第 {m.group(2)} 行"


def _show(s: str, limit: int = 40) -> str:
    """A value quoted in a message: short, and without control characters."""
    s = _BAD_CHARS.sub("?", s.replace("\n", " "))
    return s if len(s) <= limit else s[:limit] + "…"


def _missing(name: str) -> tuple[str, str]:
    label = _LABELS_ZH[name]
    return (
        f"缺少必填字段“{name}”（{label}）或内容为空，请填写",
        f"the required field '{name}' ({label}) is missing or empty; fill it in",
    )


def _unknown_field(name: str, known: Sequence[str], *, column: bool = False) -> tuple[str, str]:
    what_zh, what_en = ("列", "column") if column else ("字段", "field")
    guess = difflib.get_close_matches(name.strip().lower(), known, n=1, cutoff=0.6)
    hint_zh = f"，是不是“{guess[0]}”？" if guess else "。"
    hint_en = f"; did you mean '{guess[0]}'?" if guess else "."
    allowed = ", ".join(known)
    return (
        f"未知的{what_zh}“{_show(name)}”{hint_zh}可用的{what_zh}名：{allowed}",
        f"unknown {what_en} '{_show(name)}'{hint_en} Known {what_en}s: {allowed}",
    )


def _type_zh(value: Any) -> str:
    return _type_names(value)[0]


def _type_en(value: Any) -> str:
    return _type_names(value)[1]


def _type_names(value: Any) -> tuple[str, str]:
    if value is None:
        return "空值 null", "null"
    if isinstance(value, bool):
        return "布尔值 true/false", "true/false"
    if isinstance(value, int | float):
        return f"数字 {value}", f"the number {value}"
    if isinstance(value, str):
        return "文本", "text"
    if isinstance(value, list):
        return "列表 [...]", "a list [...]"
    if isinstance(value, dict):
        return "对象 {...}", "an object {...}"
    if isinstance(value, date | time):
        return f"日期/时间 {value.isoformat()}", f"the date/time {value.isoformat()}"
    return type(value).__name__, type(value).__name__

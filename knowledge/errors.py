"""The knowledge base's domain errors.

Every error carries a stable ``code`` and a message in Chinese and English, so that the CLI and the
HTTP layer can show users what was wrong and what to do without knowing the error's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class KefuError(Exception):
    """Base of all kefu-assist domain errors; the service maps ``code`` to an HTTP status."""

    code = "kefu_error"

    def __init__(self, message_zh: str, message_en: str, *, details: Any = None) -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.message_zh = message_zh
        self.message_en = message_en
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


class NotFoundError(KefuError):
    code = "not_found"


class ConflictError(KefuError):
    """A write carried a stale version: someone else changed the snippet since it was read."""

    code = "version_conflict"


class ValidationError(KefuError):
    code = "validation_error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an import file: where (file, line or row, field) and what."""

    source: str
    location: str  # "line 3", "row 7", "section 2"
    field: str | None
    message_zh: str
    message_en: str

    def __str__(self) -> str:
        where = f"{self.source}, {self.location}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.message_zh} / {self.message_en}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "field": self.field,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
        }


@dataclass
class ImportFailed(KefuError):
    """An import file had errors; nothing was imported."""

    problems: list[Problem] = field(default_factory=list)
    code = "import_failed"

    def __post_init__(self) -> None:
        n = len(self.problems)
        KefuError.__init__(
            self,
            f"文件有 {n} 处错误，未导入任何内容",
            f"the file has {n} error(s); nothing was imported",
            details=[p.to_dict() for p in self.problems],
        )

    def __str__(self) -> str:
        lines = [KefuError.__str__(self)]
        lines += [f"  - {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... (+{len(self.problems) - 50})")
        return "\n".join(lines)

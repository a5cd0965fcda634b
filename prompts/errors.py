"""Errors of the norms package.

They have the same shape as the knowledge base's ``KefuError`` (a stable ``code``, a Chinese and an
English message, ``to_dict``) so that the service's one error handler can map them, but ``prompts``
imports nothing from the other packages, so the tree is rooted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NormsError(Exception):
    """Base of the errors raised by ``prompts``."""

    code = "norms_error"

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


@dataclass(frozen=True)
class NormsProblem:
    """One thing wrong in a norms file, located by its dotted key (``rules.vague.patterns[2]``)."""

    key: str
    message_zh: str
    message_en: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message_zh} / {self.message_en}"

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "message_zh": self.message_zh, "message_en": self.message_en}


class NormsFileError(NormsError):
    """A norms file could not be read or failed validation; it was not loaded."""

    code = "invalid_norms"

    def __init__(self, source: str, problems: list[NormsProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        n = len(self.problems)
        first = self.problems[0] if self.problems else None
        zh = f"规范文件 {source} 有 {n} 处错误，未加载"
        en = f"norms file {source} has {n} error(s); it was not loaded"
        if first is not None:
            zh += f"（第一处：{first.key}：{first.message_zh}）"
            en += f" (first: {first.key}: {first.message_en})"
        super().__init__(zh, en, details=[p.to_dict() for p in self.problems])

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.problems]

    def __str__(self) -> str:
        lines = [f"{self.message_zh} / {self.message_en}"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class TemplateError(NormsError):
    """A template was rendered with a variable missing, unexpected or empty, or does not exist."""

    code = "template_error"

    def __init__(self, template: str, variable: str | None, message_zh: str, message_en: str) -> None:
        self.template = template
        self.variable = variable
        super().__init__(message_zh, message_en, details={"template": template, "variable": variable})

"""The service norms and the prompt/reply templates, as data, with a strict loader.

    from prompts import default_norms, CheckContext
    norms = default_norms("zh")                       # loaded and compiled once per process
    norms.check(text, CheckContext(first_reply=True))  # -> list[Violation]
    norms.fix(text, CheckContext(customer_waited_s=90)).text
    norms.render("apology_wait", action="查询一下物流信息")
    norms.system_prompt()

``check`` and ``fix`` below do the same with the packaged norms of a language. This package imports
nothing from ``knowledge``, ``suggest`` or ``eval``.
"""

from __future__ import annotations

from prompts.checker import AppliedFix, CheckContext, FixResult, NormsChecker, Violation
from prompts.errors import NormsError, NormsFileError, NormsProblem, TemplateError
from prompts.norms import (
    BUILTIN_RULES,
    FIXABLE_RULES,
    PACKAGED_LANGUAGES,
    NormRule,
    Norms,
    Routing,
    WorkingHours,
    default_norms,
    load_norms,
    loads_norms,
    packaged_norms_path,
)
from prompts.templates import NORM_VARIABLES, REQUIRED_TEMPLATES, Template
from prompts.textnorm import NormalizedText, normalize

__all__ = [
    "BUILTIN_RULES",
    "FIXABLE_RULES",
    "NORM_VARIABLES",
    "PACKAGED_LANGUAGES",
    "REQUIRED_TEMPLATES",
    "AppliedFix",
    "CheckContext",
    "FixResult",
    "NormRule",
    "NormalizedText",
    "Norms",
    "NormsChecker",
    "NormsError",
    "NormsFileError",
    "NormsProblem",
    "Routing",
    "Template",
    "TemplateError",
    "Violation",
    "WorkingHours",
    "check",
    "default_norms",
    "fix",
    "load_norms",
    "loads_norms",
    "normalize",
    "packaged_norms_path",
]


def check(text: str, context: CheckContext | None = None, *, language: str = "zh") -> list[Violation]:
    """Check ``text`` against the packaged norms of ``language``."""
    return default_norms(language).check(text, context)


def fix(text: str, context: CheckContext | None = None, *, language: str = "zh") -> FixResult:
    """Repair ``text`` mechanically with the packaged norms of ``language``."""
    return default_norms(language).fix(text, context)

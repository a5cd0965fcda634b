"""Prompt and reply templates: data in the norms file, rendered strictly.

A template is ``str.format`` text with plain ``{name}`` fields (no attributes, indexes, conversions or
format specs). Fields are either *norm variables* that the norms fill themselves (``{greeting}``,
``{working_hours}``, ...) or *placeholders* that the caller must pass. Rendering raises
``TemplateError`` naming the template and the variable when a placeholder is missing or empty, or
when the caller passes a name the template does not declare: a reply never goes out with a gap.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from prompts.errors import TemplateError

# Filled by the norms (see ``Norms.variables``); every template may use them.
NORM_VARIABLES: frozenset[str] = frozenset(
    {
        "greeting",
        "closing",
        "survey",
        "polite_words",
        "working_hours",
        "wait_limit_s",
        "complaint_department",
        "complaint_reply_hours",
        "suggestion_department",
        "customer_info_department",
        "record_form",
        "record_recipient",
        "rules",
    }
)

# The LLM drafter's plan kinds (``suggest.drafting.DRAFT_KINDS``): one ``llm_task_<kind>`` each.
LLM_TASK_KINDS: tuple[str, ...] = (
    "answer",
    "clarify",
    "escalate",
    "tactful_refusal",
    "complaint",
    "suggestion",
    "customer_info",
    "closing",
    "greeting",
)

# The LLM drafter's prompt templates (system message, user message and its parts).
LLM_TEMPLATES: tuple[str, ...] = (
    "system_prompt",
    "llm_output_format",
    "llm_user",
    *(f"llm_task_{kind}" for kind in LLM_TASK_KINDS),
    "llm_first_reply",
    "llm_later_reply",
    "llm_apology_given",
    "llm_traditional",
    "llm_waited",
    "llm_ask",
    "llm_history_header",
    "llm_turn_customer",
    "llm_turn_agent",
    "llm_no_snippets",
    "llm_snippet",
    "llm_guideline_snippet",
    "llm_snippet_title",
)

# The templates the service relies on; a norms file must define all of them.
REQUIRED_TEMPLATES: tuple[str, ...] = (
    *LLM_TEMPLATES,
    "greeting",
    "greeting_again",
    "answer",
    "answer_followup",
    "clarify",
    "clarify_choice",
    "apology_wait",
    "escalation",
    "tactful_refusal",
    "complaint_received",
    "suggestion_received",
    "customer_info_received",
    "closing",
    "auto_out_of_hours",
    "auto_busy",
    "outage_apology",
    "offline_prefix",
    "offline_reply",
    "promotion_mention",
)

_FORMATTER = string.Formatter()


def template_fields(text: str) -> tuple[str, ...]:
    """The field names of a template text, in order of first use.

    Raises ``ValueError`` with a readable reason for anything but plain ``{name}`` fields.
    """
    names: list[str] = []
    for _literal, name, spec, conversion in _FORMATTER.parse(text):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"field {{{name}}} is not a plain name (use letters, digits and _)")
        if spec or conversion:
            raise ValueError(f"field {{{name}}} may not carry a format spec or conversion")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class Template:
    """One template: its text, where it is used, what the caller fills and what output it expects."""

    name: str
    text: str
    used_by: str
    placeholders: tuple[str, ...]
    output: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        return template_fields(self.text)

    def render(self, values: Mapping[str, object], norm_values: Mapping[str, str] | None = None) -> str:
        """Render with the caller's ``values`` (exactly the placeholders) and the norm variables."""
        norm_values = norm_values or {}
        for key in values:
            if key not in self.placeholders:
                declared = ", ".join(self.placeholders) or "—"
                raise TemplateError(
                    self.name,
                    key,
                    f"模板 {self.name} 没有变量 {key}（可用：{declared}）",
                    f"template {self.name} has no variable {key} (declared: {declared})",
                )
        filled: dict[str, str] = {}
        for name in self.fields:
            if name in self.placeholders:
                value = values.get(name)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise TemplateError(
                        self.name,
                        name,
                        f"渲染模板 {self.name} 缺少变量 {name}",
                        f"template {self.name} needs variable {name}, which is missing or empty",
                    )
                filled[name] = str(value)
            elif name in norm_values:
                filled[name] = norm_values[name]
            else:
                raise TemplateError(
                    self.name,
                    name,
                    f"模板 {self.name} 的变量 {name} 没有值",
                    f"template {self.name} uses {name}, which has no value here",
                )
        return self.text.format_map(filled)

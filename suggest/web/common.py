"""What every page and fragment needs: the caller's language and role, and the template context.

The pages are Chinese first; the ``kefu_lang`` cookie (set by the language switch) selects English.
Text in templates is written in both languages at the place it is shown, ``T("会话", "Conversations")``,
so that a template never renders a missing translation key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.response import Template

from knowledge.errors import KefuError
from suggest.auth import AGENTS, EDITORS, READERS

LANG_COOKIE = "kefu_lang"
LANGS = ("zh", "en")

#: Who may use which part of the pages (the server refuses the rest with 403; the pages hide it).
CONSOLE_ROLES = AGENTS
QUEUE_ROLES = ("agent", "editor", "admin")
KB_READERS = READERS
KB_EDITORS = EDITORS
RECORD_READERS = ("agent", "evaluator", "admin")


def lang_of(request: Request[Any, Any, Any]) -> str:
    lang = request.cookies.get(LANG_COOKIE, "zh")
    return lang if lang in LANGS else "zh"


def role_of(request: Request[Any, Any, Any]) -> str | None:
    return getattr(request.scope.get("user"), "role", None)


def translator(lang: str) -> Callable[[str, str], str]:
    def tr(zh: str, en: str) -> str:
        return en if lang == "en" else zh

    return tr


def message(exc: KefuError | Exception, lang: str) -> str:
    """The user-facing message of a domain error in the page's language."""
    zh = getattr(exc, "message_zh", None) or str(exc)
    en = getattr(exc, "message_en", None) or str(exc)
    return en if lang == "en" else zh


def fmt_time(value: str | datetime | None, zone: Any = None) -> str:
    """ISO time as ``MM-DD HH:MM`` in the service's time zone (what an agent reads at a glance)."""
    if not value:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if zone is not None and at.tzinfo is not None:
        at = at.astimezone(zone)
    return at.strftime("%m-%d %H:%M")


def fmt_wait(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def context(request: Request[Any, Any, Any], **values: Any) -> dict[str, Any]:
    lang = lang_of(request)
    role = role_of(request)
    return {
        "lang": lang,
        "T": translator(lang),
        "role": role,
        "can_edit_kb": role in KB_EDITORS,
        "can_console": role in CONSOLE_ROLES,
        "can_queues": role in QUEUE_ROLES,
        "can_records": role in RECORD_READERS,
        "fmt_time": fmt_time,
        "fmt_wait": fmt_wait,
        **values,
    }


def render(
    request: Request[Any, Any, Any],
    template: str,
    /,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> Template:
    return Template(
        template_name=template,
        context=context(request, **values),
        status_code=status_code,
        headers=headers or {},
    )

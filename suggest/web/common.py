"""What every page and fragment needs: the caller's language and role, and the template context.

The pages are Chinese first; the ``kefu_lang`` cookie (set by the language switch) selects English.
Text in templates is written in both languages at the place it is shown, ``T("会话", "Conversations")``,
so that a template never renders a missing translation key.

Every time on every page is shown in one zone, the service's (the norms' working-hours zone), and the
page header says which, with its UTC offset: an agent in the console and an editor reading a snippet's
history must be able to compare the times they see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from functools import cache
from typing import Any

from litestar import Request
from litestar.response import Template
from markupsafe import Markup

from knowledge.errors import KefuError
from knowledge.io import location_zh
from prompts import WorkingHours, default_norms
from suggest.auth import AGENTS, EDITORS, READERS

LANG_COOKIE = "kefu_lang"
LANGS = ("zh", "en")

#: Who may use which part of the pages (the server refuses the rest with 403; the pages hide it).
CONSOLE_ROLES = AGENTS
QUEUE_ROLES = ("agent", "editor", "admin")
KB_READERS = READERS
KB_EDITORS = EDITORS
#: Candidates and gaps are content work: agents do not see them (as in /v1/knowledge/candidates, gaps).
KB_LEARNING_READERS = ("editor", "evaluator", "admin")
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


def _aware(value: str | datetime) -> datetime:
    # The stores write UTC; SQLite gives it back without a zone.
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def fmt_time(value: str | datetime | None, zone: tzinfo | None = None) -> str:
    """ISO time as ``MM-DD HH:MM`` in ``zone`` (what an agent reads at a glance); a time without a
    zone is UTC, as the stores write it."""
    if not value:
        return ""
    return _aware(value).astimezone(zone or UTC).strftime("%m-%d %H:%M")


def utc_offset(zone: tzinfo, at: datetime | None = None) -> str:
    """``UTC+08:00``: the zone's offset now (or at ``at``)."""
    off = (at or datetime.now(UTC)).astimezone(zone).utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def time_tag(value: str | datetime | None, zone: tzinfo) -> Markup:
    """A ``<time>`` in ``zone``: ``MM-DD HH:MM`` shown, the full date and the offset on hover."""
    if not value:
        return Markup("")
    local = _aware(value).astimezone(zone)
    full = f"{local:%Y-%m-%d %H:%M:%S} {utc_offset(zone, local)}"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        local.isoformat(timespec="seconds"), full, local.strftime("%m-%d %H:%M")
    )


def service_hours(request: Request[Any, Any, Any]) -> WorkingHours | None:
    """The working hours of the norms the service runs with (None in an app without a workflow)."""
    workflow = getattr(request.app.state, "workflow", None)
    return workflow.norms.hours if workflow is not None else None


@cache
def _display_of(lang: str) -> dict[str, Any]:
    h = default_norms(lang).hours
    return {
        "day_names": h.day_names,
        "through": h.through,
        "separator": h.separator,
        "display_format": h.display_format,
    }


def hours_text(hours: WorkingHours, lang: str) -> str:
    """The service's hours in the page's language (the words of the packaged norms of that language)."""
    return dataclasses.replace(hours, **_display_of(lang)).describe()


def person(actor: str | None) -> str:
    """One display name for whoever did something: an API key's name is recorded as ``key:NAME`` by
    the knowledge base and as ``NAME`` by decisions; the pages show ``NAME`` for both."""
    return (actor or "").removeprefix("key:")


def location(loc: str | None, lang: str) -> str:
    """Where in a file (``line 3``, ``sheet 'x', row 7``) in the page's language."""
    return (loc or "") if lang == "en" else location_zh(loc or "")


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
    hours = service_hours(request)
    zone: tzinfo = hours.zone if hours is not None else UTC

    def local_time(value: str | datetime | None, _zone: tzinfo | None = None) -> str:
        # Always the service's zone (an explicit zone argument of older templates is the same one).
        return fmt_time(value, zone)

    return {
        "lang": lang,
        "T": translator(lang),
        "role": role,
        "can_edit_kb": role in KB_EDITORS,
        "can_console": role in CONSOLE_ROLES,
        "can_queues": role in QUEUE_ROLES,
        "can_records": role in RECORD_READERS,
        "zone": zone,
        "zone_name": str(zone),
        "zone_offset": utc_offset(zone),
        "hours_text": hours_text(hours, lang) if hours is not None else "",
        "fmt_time": local_time,
        "when": lambda value: time_tag(value, zone),
        "fmt_wait": fmt_wait,
        "person": person,
        "location": lambda loc: location(loc, lang),
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

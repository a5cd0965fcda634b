"""The browser pages, served by the same Litestar app: agent console (/console), knowledge editor (/kb),
records and quality (/records). Jinja templates and HTMX (vendored in static/, no build step, nothing
loaded from another origin).

``create_app`` mounts :func:`web_router` and :func:`template_config`. Errors of the ``/ui`` fragments are
rendered as a short HTML message in the page's language (the JSON API keeps its JSON errors); the status
codes are the API's, from the one mapping in suggest/app.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from markupsafe import escape

from knowledge.errors import KefuError
from prompts import NormsError
from suggest.web.common import lang_of, message
from suggest.web.console import ConsoleFragments
from suggest.web.kb import KnowledgeFragments
from suggest.web.pages import console_page, home, kb_page, records_page, whoami
from suggest.web.records import RecordsFragments

WEB_DIR = Path(__file__).parent
log = logging.getLogger("kefu.web")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=WEB_DIR / "templates", engine=JinjaTemplateEngine)


def _error_fragment(status_of: Callable[[Exception], int]) -> Callable[..., Response[str]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
        lang = lang_of(request)
        if isinstance(exc, KefuError | NormsError):
            status, text = status_of(exc), message(exc, lang)
        elif isinstance(exc, ValidationException):
            status = 400
            text = "the form is incomplete or invalid" if lang == "en" else "表单内容不完整或格式不对"
        elif isinstance(exc, HTTPException):
            status, text = exc.status_code, str(exc.detail)
        else:
            log.error("unhandled error in a page fragment: %s", exc, exc_info=exc)
            status = 500
            text = (
                "internal error (logged); please try again"
                if lang == "en"
                else "服务内部错误，已记录日志；请重试"
            )
        body = f'<div class="flash error" role="alert" data-status="{status}">{escape(text)}</div>'
        # Shown in the page's message area, whatever the request meant to replace.
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        return Response(body, status_code=status, media_type="text/html", headers=headers)

    return handle


def web_router(status_of: Callable[[Exception], int]) -> Router:
    handle = _error_fragment(status_of)
    static = create_static_files_router(
        path="/static",
        directories=[WEB_DIR / "static"],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        # Five minutes: pages need not ask again on every navigation, and an upgrade shows soon.
        cache_control=CacheControlHeader(max_age=300),
    )
    return Router(
        path="/",
        route_handlers=[
            home,
            console_page,
            kb_page,
            records_page,
            whoami,
            ConsoleFragments,
            KnowledgeFragments,
            RecordsFragments,
            static,
        ],
        exception_handlers={KefuError: handle, NormsError: handle, HTTPException: handle, Exception: handle},
    )

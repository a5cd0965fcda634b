"""The page shells (/console, /kb, /records) and who the signed-in key is.

A shell carries no data: browsers cannot send the API key on a navigation, so the shells are served
without a key and every piece of data comes from an HTMX fragment (``/ui/...``) that carries the key
from sessionStorage as a Bearer header. The fragments go through the same authentication and role
guards as the JSON API.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.response import Redirect, Template

from suggest.auth import READERS, allow
from suggest.web.common import render

#: The shells load nothing but this origin's own files; data enters the page only through htmx swaps.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "frame-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
_SHELL_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
_OPEN = {"exclude_from_auth": True}


def _shell(request: Request[Any, Any, Any], page: str) -> Template:
    return render(request, f"{page}.html", headers=_SHELL_HEADERS, page=page)


@get("/", opt=_OPEN, include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/console")


@get("/console", opt=_OPEN, include_in_schema=False)
async def console_page(request: Request[Any, Any, Any]) -> Template:
    """The agent console: waiting conversations, drafts, decisions, escalations and routed items."""
    return _shell(request, "console")


@get("/kb", opt=_OPEN, include_in_schema=False)
async def kb_page(request: Request[Any, Any, Any]) -> Template:
    """The knowledge editor: hit testing, snippets, history, candidates, gaps, import."""
    return _shell(request, "kb")


@get("/records", opt=_OPEN, include_in_schema=False)
async def records_page(request: Request[Any, Any, Any]) -> Template:
    """Service records and the latest evaluation report."""
    return _shell(request, "records")


@get("/ui/whoami", guards=[allow(*READERS)], include_in_schema=False)
async def whoami(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The role and name of the key the page signed in with (the page hides what the role may not do)."""
    key = request.scope.get("user")
    return Response(
        {"role": getattr(key, "role", None), "name": getattr(key, "name", None)},
        headers={"Cache-Control": "no-store"},
    )

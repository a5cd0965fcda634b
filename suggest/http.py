"""Small request helpers shared by the controllers: who is calling, and the version they read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import Request

from knowledge.errors import ConflictError, ValidationError
from suggest.errors import PreconditionFailed, PreconditionRequired


def caller(request: Request[Any, Any, Any]) -> str:
    """The name of the API key that made the request (recorded as the author of a change)."""
    key = request.scope.get("user")
    return str(getattr(key, "name", "anonymous"))


def if_match(request: Request[Any, Any, Any]) -> int:
    """The version the writer read, from If-Match (``"v3"``); a write without it is refused (428)."""
    raw = request.headers.get("if-match", "").strip()
    if not raw:
        raise PreconditionRequired(
            "请带上 If-Match 请求头（读取时得到的 ETag），以免覆盖别人的修改",
            "send the If-Match header (the ETag you read) so that nobody's change is overwritten",
        )
    tag = raw.removeprefix("W/").strip('"').removeprefix("v")
    if not tag.isdigit():
        raise ValidationError(f"If-Match 无效：{raw}", f'invalid If-Match: {raw!r} (use the ETag, e.g. "v3")')
    return int(tag)


@contextmanager
def stale_is_412() -> Iterator[None]:
    """Over HTTP a stale version is a failed precondition (412), as If-Match prescribes."""
    try:
        yield
    except ConflictError as e:
        raise PreconditionFailed(e.message_zh, e.message_en, details=e.details) from e

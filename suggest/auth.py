"""API keys: ``Authorization: Bearer kefu_...``, roles, and route guards.

Roles: agent (suggestions, decisions, reading the KB), editor (changing the KB), evaluator (reading),
admin (everything). Keys are stored hashed (suggest.storage); a verified key is cached for a few
seconds so that a request costs no extra query, which also bounds how long a revoked key still works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from suggest.errors import Forbidden, Unauthorized
from suggest.storage import ApiKey, SuggestStore

CACHE_SECONDS = 5.0
#: Who may do what.
AGENTS = ("agent", "admin")
EDITORS = ("editor", "admin")
READERS = ("agent", "editor", "evaluator", "admin")

_OPEN_KEY = ApiKey("open", "admin", "no keys required", datetime.now(UTC), None, None)


class KeyCache:
    def __init__(self, store: SuggestStore, ttl_s: float = CACHE_SECONDS) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def verify(self, key: str) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = self.store.verify_key(key)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, found)
        return found


def auth_middleware(require_keys: bool, cache_of: Callable[[Any], KeyCache]) -> type:
    class ApiKeyAuth(AbstractAuthenticationMiddleware):
        def __init__(self, app: ASGIApp) -> None:
            super().__init__(app, exclude=["^/health", "^/metrics", "^/schema"])

        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            if not require_keys:
                return AuthenticationResult(user=_OPEN_KEY, auth=None)
            header = connection.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized(
                    "需要 API 密钥：请加上请求头 Authorization: Bearer <密钥>（kefu keys create 可以创建）",
                    "an API key is required: send Authorization: Bearer <key> (create one with kefu keys create)",
                )
            key = cache_of(connection.app).verify(token.strip())
            if key is None:
                raise Unauthorized("API 密钥无效或已被吊销", "the API key is invalid or revoked")
            return AuthenticationResult(user=key, auth=token)

    return ApiKeyAuth


def allow(
    *roles: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]:
    """A route guard that admits the given roles only.

    A coroutine function on purpose: Litestar runs a plain function guard in its thread pool, a thread
    hop per request for a dictionary lookup.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        key = connection.scope.get("user")
        role = getattr(key, "role", None)
        if role not in roles:
            raise Forbidden(
                f"角色 {role} 无权进行此操作（需要：{'、'.join(roles)}）",
                f"role {role!r} may not do this (needs one of: {', '.join(roles)})",
            )

    return guard

"""A real server on the demo KB for the browser-page tests, with one key per role and a movable clock.

``KEFU_SCREENSHOTS=1 pytest -m browser tests/test_web_*.py`` also writes the pages' screenshots to
docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from suggest.clock import FixedClock
from suggest.settings import AppSettings, Settings
from suggest.storage import SuggestStore
from tests.helpers_server import WORKING_HOURS, serve

ROLES = ("agent", "editor", "evaluator", "admin")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@dataclass
class WebEnv:
    base: str
    keys: dict[str, str]
    clock: FixedClock
    kb: KnowledgeBase

    def call(self, method: str, path: str, role: str | None = "admin", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if role:
            headers["Authorization"] = f"Bearer {self.keys[role]}"
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kw)

    def sign_in(self, page: Any, role: str, path: str = "/console") -> None:
        """Open a page through the one-click link (``#key=...``), as ``kefu keys demo`` prints it."""
        page.goto(f"{self.base}{path}#key={self.keys[role]}")
        page.wait_for_selector("#who:not([hidden])")


@contextmanager
def web_env(
    root: Path, snippets: list[Snippet], embedder: SentenceTransformerEmbedder, *, second_agent: bool = False
) -> Iterator[WebEnv]:
    """A served app on the demo KB with a key per role (``second_agent``: also ``agent2``, a colleague)."""
    ks = KnowledgeSettings(database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index")
    store = Store(ks.database_url)
    store.import_snippets(snippets, actor="test")
    keys_store = SuggestStore(store.engine)
    keys = {role: keys_store.create_key(role, f"{role}-1")[0] for role in ROLES}
    if second_agent:
        keys["agent2"] = keys_store.create_key("agent", "agent-2")[0]
    clock = FixedClock(WORKING_HOURS)
    kb = KnowledgeBase(ks, store=store, embedder=embedder)
    try:
        with serve(Settings(knowledge=ks, app=AppSettings(key_cache_s=0)), kb, clock=clock) as running:
            yield WebEnv(running.base, keys, clock, kb)
    finally:
        kb.close()


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the docs when KEFU_SCREENSHOTS is set (the tests never depend on it)."""
    if os.environ.get("KEFU_SCREENSHOTS", "").lower() in ("1", "true", "yes"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)

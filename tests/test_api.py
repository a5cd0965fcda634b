"""The HTTP API over a real socket: uvicorn serving the app, httpx as the client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from suggest.settings import AppSettings, Settings
from tests.helpers_server import serve


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[tuple[str, KnowledgeBase]]:
    root = tmp_path_factory.mktemp("api")
    ks = KnowledgeSettings(database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    with serve(Settings(knowledge=ks, app=AppSettings(require_keys=False)), kb) as running:
        yield running.base, kb
    kb.close()


def test_health_reports_database_and_index(server: tuple[str, KnowledgeBase]) -> None:
    base, kb = server
    r = httpx.get(f"{base}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["database"]["dialect"] == "sqlite"
    assert body["checks"]["index"]["snippets"] == 95
    assert body["checks"]["index"]["kb_revision"] == kb.store.revision()


def test_search_traditional_query(server: tuple[str, KnowledgeBase]) -> None:
    base, _ = server
    r = httpx.post(f"{base}/v1/knowledge/search", json={"query": "請問怎麼申請退貨？", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["hits"][0]["snippet_id"] == "faq-returns-process"
    assert {"matched_text", "matched_field", "bm25", "dense", "confidence"} <= set(body["hits"][0])
    assert len(body["hits"]) == 3


def test_search_filters(server: tuple[str, KnowledgeBase]) -> None:
    base, _ = server
    r = httpx.post(f"{base}/v1/knowledge/search", json={"query": "空气炸锅", "kinds": ["product"], "k": 5})
    assert r.status_code == 200 and {h["kind"] for h in r.json()["hits"]} == {"product"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "   "}, 422, "validation_error"),
        ({"query": "退货", "k": 0}, 422, "validation_error"),
        ({"query": "退货", "kinds": ["nope"]}, 422, "validation_error"),
        ({"k": 3}, 400, "bad_request"),
        ({"query": 5}, 400, "bad_request"),
    ],
)
def test_bad_search_requests_get_bilingual_errors(
    server: tuple[str, KnowledgeBase], body: dict[str, object], status: int, code: str
) -> None:
    base, _ = server
    r = httpx.post(f"{base}/v1/knowledge/search", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["message_zh"] and err["message_en"]


def test_edit_reaches_a_running_server_without_restart(server: tuple[str, KnowledgeBase]) -> None:
    base, kb = server
    # Another process (here: another Store on the same database) publishes a new snippet.
    other = Store(kb.store.url)
    other.add(
        Snippet(
            id="faq-api-new", question="你们支持数字人民币支付吗", answer="支持，结算时选择数字人民币即可。"
        ),
        actor="editor",
    )
    other.close()
    deadline = time.monotonic() + 10
    while True:
        hits = httpx.post(f"{base}/v1/knowledge/search", json={"query": "能用数字人民币付款吗"}).json()[
            "hits"
        ]
        if hits and hits[0]["snippet_id"] == "faq-api-new":
            break
        assert time.monotonic() < deadline, hits
        time.sleep(0.5)


def test_openapi_schema(server: tuple[str, KnowledgeBase]) -> None:
    base, _ = server
    r = httpx.get(f"{base}/schema/openapi.json")
    assert r.status_code == 200
    assert "/v1/knowledge/search" in r.json()["paths"]

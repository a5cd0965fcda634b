"""The suggestion API with an LLM drafter: a local server that speaks the OpenAI chat API stands in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from prompts.textnorm import is_traditional
from suggest.clock import FixedClock
from suggest.settings import AppSettings, LLMSettings, Secret, Settings
from tests.helpers_server import WORKING_HOURS, Running, serve

if TYPE_CHECKING:
    from tests.fake_openai import FakeLLM


@pytest.fixture
def llm_app(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
    fake_llm: FakeLLM,
) -> Iterator[tuple[Running, FakeLLM]]:
    root = tmp_path_factory.mktemp("llm")
    ks = KnowledgeSettings(database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    llm = LLMSettings(
        base_url=fake_llm.base_url,
        model="fake-model",
        api_key=Secret("sk-test"),
        timeout_s=1.0,
        max_retries=0,
    )
    settings = Settings(knowledge=ks, app=AppSettings(require_keys=False), llm=llm)
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    with serve(settings, kb, clock=FixedClock(WORKING_HOURS)) as running:
        yield running, fake_llm
    kb.close()


def _suggest(running: Running, message: str = "请问怎么申请退货？", **body: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{running.base}/v1/suggestions",
        json={"conversation_id": "c-llm", "customer_message": message, **body},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_llm_drafts_are_guarded_and_cite_snippets(llm_app: tuple[Running, FakeLLM]) -> None:
    running, llm = llm_app
    llm.behave(n=3)
    body = _suggest(running)
    assert body["drafter"] == "llm" and body["fallback"] is False
    assert all(d["source"] == "llm" for d in body["drafts"])
    assert body["drafts"][0]["citations"][0]["snippet_id"] == "faq-returns-process"
    # The norms reach the model, and the guard still greets on the first reply.
    assert "您好，我是在线客服，很高兴为您服务" in llm.last.system
    assert "[faq-returns-process]" in llm.last.user
    assert all(d["text"].startswith("您好") for d in body["drafts"])


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({"status": 500}, "error status 500"),
        ({"delay": 3.0}, "timeout"),
        ({"content": "这不是 JSON"}, "malformed output"),
        ({"drafts": []}, "malformed output"),
    ],
)
def test_any_llm_failure_falls_back_to_templates(
    llm_app: tuple[Running, FakeLLM], behaviour: dict[str, Any], reason: str
) -> None:
    running, llm = llm_app
    llm.behave(**behaviour)
    body = _suggest(running)
    assert body["fallback"] is True and body["fallback_reason"].startswith(reason)
    assert body["drafter"] == "template"
    assert body["drafts"] and all(d["source"] == "template" for d in body["drafts"])
    metrics = httpx.get(f"{running.base}/metrics").text
    assert "kefu_llm_fallbacks_total" in metrics


def test_ungrounded_llm_draft_is_flagged_and_ranked_last(llm_app: tuple[Running, FakeLLM]) -> None:
    running, llm = llm_app
    llm.behave(
        drafts=[
            {
                "text": "退货请在订单页申请售后，我们保证明天就能到账，还送您50元优惠券。",
                "citations": ["faq-returns-process"],
            },
            {
                "text": "退货请在“我的订单”中点击“申请售后”，我们会在1个工作日内审核。",
                "citations": ["faq-returns-process"],
            },
        ]
    )
    body = _suggest(running, n=2)
    first, last = body["drafts"]
    assert first["ungrounded"] == [] and "1个工作日" in first["text"]
    assert set(last["ungrounded"]) >= {"50元", "保证"}


def test_stream_sends_meta_deltas_and_the_final_suggestion(llm_app: tuple[Running, FakeLLM]) -> None:
    running, llm = llm_app
    llm.behave(n=2, chunk_chars=6)
    events: list[tuple[str, Any]] = []
    body = {"conversation_id": "c-stream", "customer_message": "退款多久能到账", "n": 2}
    with httpx.stream("POST", f"{running.base}/v1/suggestions/stream", json=body, timeout=30) as r:
        assert r.status_code == 201 or r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line.split(":", 1)[1])))
    names = [n for n, _ in events]
    assert names[0] == "meta" and names[-1] == "suggestion" and names.count("delta") > 3
    final = events[-1][1]
    assert final["drafter"] == "llm" and len(final["drafts"]) == 2
    stored = httpx.post(
        f"{running.base}/v1/suggestions/{final['id']}/decision",
        json={"action": "approve", "draft_id": final["drafts"][0]["id"], "agent_id": "a"},
    )
    assert stored.status_code == 201  # the streamed suggestion was stored like any other


def test_stream_falls_back_when_the_llm_fails(llm_app: tuple[Running, FakeLLM]) -> None:
    running, llm = llm_app
    llm.behave(status=500)
    body = {"conversation_id": "c-stream-2", "customer_message": "退款多久能到账"}
    with httpx.stream("POST", f"{running.base}/v1/suggestions/stream", json=body, timeout=30) as r:
        text = "".join(r.iter_text())
    final = json.loads(text.strip().split("data:")[-1])
    assert final["fallback"] is True and final["fallback_reason"].startswith("error status 500")


def test_llm_drafts_follow_the_customers_script_and_greet_once(llm_app: tuple[Running, FakeLLM]) -> None:
    """Issue 19: a traditional message gets traditional drafts (converted after the LLM), the prompt
    says so, and an LLM draft that greets again on a later reply is repaired by the guard."""
    running, llm = llm_app
    llm.behave(n=2)
    body = _suggest(running, "請問怎麼申請退貨？", conversation_id="c-llm-trad")
    assert body["script"] == "traditional" and body["drafter"] == "llm"
    assert "客户使用繁体字" in llm.last.user
    assert "退貨" in body["drafts"][0]["text"]
    for d in body["drafts"]:  # (the fake quotes each snippet it was given, one a draft)
        assert is_traditional(d["text"]) and "退货" not in d["text"] and d["violations"] == [], d["text"]
    history = [
        {"role": "customer", "text": "你好"},
        {"role": "agent", "text": "您好，我是在线客服，很高兴为您服务。"},
    ]
    llm.behave(
        drafts=[
            {
                "text": "您好，我是在线客服，很高兴为您服务。退货请在“我的订单”中点击“申请售后”。",
                "citations": ["faq-returns-process"],
            }
        ]
    )
    later = _suggest(running, "请问怎么申请退货？", conversation_id="c-llm-later", history=history, n=1)
    assert later["first_reply"] is False
    assert "不要再问候" in llm.last.user
    (d,) = later["drafts"]
    assert d["text"].startswith("退货请在"), d["text"]
    assert "repeated_greeting" in d["fixes"] and d["violations"] == []


def test_english_message_gets_the_english_prompt(llm_app: tuple[Running, FakeLLM]) -> None:
    running, llm = llm_app
    llm.behave(
        drafts=[
            {
                "text": "We deliver only to mainland China; Hong Kong is not supported yet.",
                "citations": ["faq-en-shipping-overseas"],
            }
        ]
    )
    body = _suggest(running, "Hello, do you deliver to Hong Kong?", conversation_id="c-llm-en", n=1)
    assert body["language"] == "en"
    assert (
        llm.last.system.startswith("You draft replies")
        and "Hello, this is online customer service" in llm.last.system
    )
    (d,) = body["drafts"]
    assert d["text"].startswith("Hello, this is online customer service.") and d["violations"] == [], d[
        "text"
    ]

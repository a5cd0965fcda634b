"""The LLM drafter against a local server speaking the OpenAI chat API (tests/fake_openai.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from knowledge.model import Snippet
from knowledge.retriever import Hit
from prompts import default_norms
from suggest.drafting import DraftCandidate, DrafterError, DraftJob, Plan, Turn
from suggest.openai_drafter import OpenAIDrafter, _DraftTextScanner
from suggest.settings import LLMSettings, Secret

if TYPE_CHECKING:
    from tests.fake_openai import FakeLLM


NORMS = default_norms("zh")
RETURNS = Snippet(
    "faq-returns-7d", "可以七天无理由退货吗？", "支持7天无理由退货，商品需保持完好、不影响二次销售。"
)
SHIPPING = Snippet("faq-shipping-time", "下单后多久发货？", "付款后48小时内发货，节假日顺延。")
COST = Snippet(
    "policy-cost-price", "商品的进货价是多少？", "进货价属于商业机密，不对外提供。", kind="restricted"
)
STABLE_WORDS = ("timeout", "error status", "connection", "malformed output")


def hit(snippet: Snippet, score: float) -> Hit:
    return Hit(snippet, snippet.question, "question", score, score * 10, None, 1.0, score, "high")


def job(
    kind: str = "answer",
    hits: tuple[Hit, ...] = (hit(RETURNS, 0.92), hit(SHIPPING, 0.41)),
    *,
    n: int = 3,
    message: str = "买了的东西可以退吗？",
    history: tuple[Turn, ...] = (),
    alternatives: tuple[Hit, ...] = (),
) -> DraftJob:
    return DraftJob(
        customer_message=message,
        history=history,
        plan=Plan(kind, hits, alternatives=alternatives, reason="test"),
        n=n,
        norms=NORMS,
        first_reply=True,
        customer_waited_s=None,
        intent="question",
    )


def drafter(
    fake_llm: FakeLLM, *, timeout_s: float = 5.0, max_retries: int = 0, api_key: str = ""
) -> OpenAIDrafter:
    settings = LLMSettings(
        base_url=fake_llm.base_url,
        model="fake-model",
        api_key=Secret(api_key),
        timeout_s=timeout_s,
        max_retries=max_retries,
        temperature=0.3,
    )
    return OpenAIDrafter(settings)


def failure(call: Any) -> str:
    with pytest.raises(DrafterError) as info:
        call()
    reason = str(info.value)
    assert reason.split(":", 1)[0].startswith(STABLE_WORDS), reason  # the metrics label
    return reason


def collect(d: OpenAIDrafter, j: DraftJob) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [ev async for ev in d.stream(j)]

    return asyncio.run(run())


# -- ordinary requests ------------------------------------------------------------------------------


def test_drafts_cite_the_plans_snippets(fake_llm: FakeLLM) -> None:
    drafts = drafter(fake_llm).draft(job())
    assert len(drafts) == 3
    assert len({d.text for d in drafts}) == 3
    assert all(d.source == "llm" and d.kind == "answer" for d in drafts)
    first = drafts[0]
    assert RETURNS.answer in first.text
    assert [(c.snippet_id, c.text, c.score) for c in first.citations] == [
        ("faq-returns-7d", RETURNS.answer, 0.92)
    ]
    assert drafts[1].citations[0].snippet_id == "faq-shipping-time"


def test_request_carries_the_norms_and_the_snippets(fake_llm: FakeLLM) -> None:
    history = (Turn("customer", "你好"), Turn("agent", "您好，我是在线客服，很高兴为您服务"))
    drafter(fake_llm).draft(job(n=2, history=history))
    req = fake_llm.last
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "fake-model"
    assert req.body["temperature"] == 0.3
    assert req.body["response_format"] == {"type": "json_object"}
    assert not req.stream
    assert req.headers["authorization"] == "Bearer unused"  # no key configured
    # the system prompt is written from the norms, plus the JSON format
    assert NORMS.greeting in req.system
    assert NORMS.system_prompt() in req.system
    assert '{"drafts": [{"text"' in req.system and "正好 2 条" in req.system
    # the snippets, one per line, the plan and the history
    user = req.user
    assert "买了的东西可以退吗？" in user
    assert f"[faq-returns-7d] {RETURNS.question}: {RETURNS.answer}" in user
    assert f"[faq-shipping-time] {SHIPPING.question}: {SHIPPING.answer}" in user
    assert "根据资料回答" in user
    assert "客户: 你好" in user and "客服: 您好，我是在线客服" in user
    assert "请起草 2 条" in user


def test_restricted_snippet_is_a_guideline_never_quoted(fake_llm: FakeLLM) -> None:
    fake_llm.behave(
        drafts=[{"text": "非常抱歉，这属于公司内部信息，不方便透露，请您谅解。", "citations": [COST.id]}]
    )
    drafts = drafter(fake_llm).draft(job("tactful_refusal", (hit(COST, 0.8),)))
    assert "〔内部指引" in fake_llm.last.user and COST.answer in fake_llm.last.user
    assert "委婉" in fake_llm.last.user
    assert drafts[0].kind == "tactful_refusal"
    assert drafts[0].citations[0].text == COST.question  # the guideline itself is not shown


def test_clarify_plan_names_the_two_close_snippets(fake_llm: FakeLLM) -> None:
    a, b = hit(RETURNS, 0.6), hit(SHIPPING, 0.58)
    drafts = drafter(fake_llm).draft(job("clarify", (a, b), alternatives=(a, b)))
    assert RETURNS.question in fake_llm.last.user and "确认" in fake_llm.last.user
    assert {d.kind for d in drafts} == {"answer"}


def test_json_in_a_code_fence_is_accepted(fake_llm: FakeLLM) -> None:
    fake_llm.behave(fenced=True, n=2)
    drafts = drafter(fake_llm).draft(job(n=2))
    assert len(drafts) == 2 and drafts[0].citations[0].snippet_id == "faq-returns-7d"


def test_unknown_citations_are_dropped(fake_llm: FakeLLM) -> None:
    fake_llm.behave(
        drafts=[
            {
                "text": "您好，支持7天无理由退货。",
                "citations": ["faq-returns-7d", "faq-invented", 7, "faq-returns-7d"],
            },
            {"text": "您好，这个问题我请负责人核实后回复您。", "citations": ["faq-invented"]},
        ]
    )
    drafts = drafter(fake_llm).draft(job())
    assert [c.snippet_id for c in drafts[0].citations] == ["faq-returns-7d"]
    assert drafts[1].citations == []


def test_at_most_n_drafts_and_unusable_ones_are_skipped(fake_llm: FakeLLM) -> None:
    fake_llm.behave(
        drafts=[
            {"text": "   ", "citations": []},
            {"citations": ["faq-returns-7d"]},
            {"text": "您好，支持7天无理由退货。", "citations": "faq-returns-7d"},  # not a list
            {"text": "您好，付款后48小时内发货。", "citations": ["faq-shipping-time"]},
            {"text": "您好，付款后48小时内发货。", "citations": ["faq-shipping-time"]},  # repeated
            {"text": "您好，支持7天无理由退货，商品需保持完好。", "citations": ["faq-returns-7d"]},
            {"text": "您好，请问您的订单号是多少？", "citations": []},
        ]
    )
    drafts = drafter(fake_llm).draft(job(n=2))
    assert [d.text for d in drafts] == [
        "您好，付款后48小时内发货。",
        "您好，支持7天无理由退货，商品需保持完好。",
    ]


def test_a_failed_request_is_retried(fake_llm: FakeLLM) -> None:
    fake_llm.behave(status=500, error_times=1)
    drafts = drafter(fake_llm, max_retries=1).draft(job())
    assert len(drafts) == 3 and len(fake_llm.requests) == 2


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ({"content": "您好，支持七天无理由退货。"}, "malformed output: not JSON"),
        ({"content": '{"drafts": [{"text": "您好'}, "malformed output: not JSON"),
        ({"content": '{"drafts": [{"text": "您好', "finish_reason": "length"}, "malformed output: cut off"),
        ({"content": "```json\n{drafts: []}\n```"}, "malformed output: the fenced block is not JSON"),
        ({"content": '{"replies": ["您好"]}'}, "malformed output: expected an object"),
        ({"content": '["您好"]'}, "malformed output: expected an object"),
        ({"content": ""}, "malformed output: empty message"),
        ({"drafts": []}, "malformed output: no drafts"),
        ({"drafts": [{"text": ""}, {"text": 3}]}, "malformed output: drafts[0] has no text"),
    ],
)
def test_malformed_output(fake_llm: FakeLLM, behaviour: dict[str, Any], expected: str) -> None:
    fake_llm.behave(**behaviour)
    assert failure(lambda: drafter(fake_llm).draft(job())).startswith(expected)


@pytest.mark.parametrize("status", [500, 429, 401])
def test_error_status(fake_llm: FakeLLM, status: int) -> None:
    fake_llm.behave(status=status)
    reason = failure(lambda: drafter(fake_llm).draft(job()))
    assert reason.startswith(f"error status {status}:") and "fake error status" in reason


def test_timeout(fake_llm: FakeLLM) -> None:
    fake_llm.behave(delay=3.0)
    t0 = time.perf_counter()
    reason = failure(lambda: drafter(fake_llm, timeout_s=0.3).draft(job()))
    assert reason.startswith("timeout:") and "0.3s" in reason
    assert time.perf_counter() - t0 < 2.0


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = LLMSettings(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=Secret("k"), timeout_s=1, max_retries=0
    )
    assert failure(lambda: OpenAIDrafter(settings).draft(job())).startswith("connection:")


def test_configured_key_is_sent(fake_llm: FakeLLM) -> None:
    drafter(fake_llm, api_key="sk-test").draft(job())
    assert fake_llm.last.headers["authorization"] == "Bearer sk-test"


# -- streaming --------------------------------------------------------------------------------------


def test_stream_yields_text_deltas_then_the_drafts(fake_llm: FakeLLM) -> None:
    fake_llm.behave(chunk_chars=5)
    events = collect(drafter(fake_llm), job())
    assert fake_llm.last.stream and fake_llm.last.body["response_format"] == {"type": "json_object"}
    assert [e["type"] for e in events][-1] == "drafts"
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) > 6  # the text arrives in pieces
    final: list[DraftCandidate] = events[-1]["drafts"]
    assert len(final) == 3 and final[0].citations[0].snippet_id == "faq-returns-7d"
    written: dict[int, str] = {}
    for e in deltas:
        written[e["index"]] = written.get(e["index"], "") + e["text"]
    assert written == {i: d.text for i, d in enumerate(final)}


def test_stream_arrives_while_the_model_writes(fake_llm: FakeLLM) -> None:
    fake_llm.behave(chunk_delay=0.05, chunk_chars=20)

    async def first_delta_and_end() -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        async for ev in drafter(fake_llm).stream(job()):
            if ev["type"] == "delta" and first is None:
                first = time.perf_counter() - t0
        assert first is not None
        return first, time.perf_counter() - t0

    first, end = asyncio.run(first_delta_and_end())
    assert first < end / 2


def test_stream_failures(fake_llm: FakeLLM) -> None:
    d = drafter(fake_llm, timeout_s=0.3)
    fake_llm.behave(status=500)
    assert failure(lambda: collect(d, job())).startswith("error status 500:")
    fake_llm.behave(
        content='{"drafts": [{"text": "您好，支持7天无理由退货。", "citations": []}'
    )  # never closed
    assert failure(lambda: collect(d, job())).startswith("malformed output")
    fake_llm.behave(drafts=[])
    assert failure(lambda: collect(d, job())).startswith("malformed output: no drafts")
    fake_llm.behave(chunk_delay=2.0)  # stalls in the middle of the answer
    t0 = time.perf_counter()
    assert failure(lambda: collect(d, job())).startswith("timeout:")
    assert time.perf_counter() - t0 < 1.5


def test_stream_drops_unknown_citations(fake_llm: FakeLLM) -> None:
    fake_llm.behave(
        drafts=[{"text": "您好，支持7天无理由退货。", "citations": ["faq-invented", "faq-returns-7d"]}]
    )
    final = collect(drafter(fake_llm), job())[-1]["drafts"]
    assert [c.snippet_id for c in final[0].citations] == ["faq-returns-7d"]


# -- the streaming scanner --------------------------------------------------------------------------


def test_scanner_reports_only_draft_texts_across_chunk_boundaries() -> None:
    doc = {
        "note": "skip me",
        "drafts": [
            {"citations": ["a"], "text": '引号"与\\反斜杠\n换行 \U0001f600 é', "style": "x"},
            {"text": "第二条", "meta": {"text": "nested, not a draft text"}},
        ],
    }
    raw = "```json\n" + json.dumps(doc, ensure_ascii=True) + "\n```"
    for size in (1, 2, 3, 7, len(raw)):
        scanner = _DraftTextScanner()
        got: dict[int, str] = {}
        for i in range(0, len(raw), size):
            for index, text in scanner.feed(raw[i : i + size]):
                got[index] = got.get(index, "") + text
        assert got == {0: doc["drafts"][0]["text"], 1: "第二条"}, size  # type: ignore[index]

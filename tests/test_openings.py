"""Openings said once, and the customer's language and script (issue 19, part B).

The suggestion pipeline as the service builds it (SQLite store with the demo KB, the bundled model,
the template drafter, a fixed clock): one greeting per conversation, one apology for a late reply,
the late-reply apology only when the customer really waited, English drafts wholly English,
traditional drafts in traditional characters, and follow-up questions that offer a related snippet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.retriever import Hit
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from prompts import CheckContext, default_norms
from prompts.intents import default_intents
from prompts.textnorm import is_traditional, language_of
from suggest.clock import FixedClock
from suggest.drafting import DraftJob, Plan, Turn
from suggest.openai_drafter import build_messages
from suggest.pipeline import SuggestionPipeline, SuggestionRequest
from suggest.settings import Settings
from suggest.storage import SuggestStore
from suggest.template_drafter import follow_up_hit
from tests.conftest import snippet

SH = ZoneInfo("Asia/Shanghai")
MORNING = datetime(2026, 11, 26, 10, 0, tzinfo=SH)  # Thursday, open
EVENING = datetime(2026, 11, 26, 21, 0, tzinfo=SH)  # Thursday, closed since 17:30
NORMS = default_norms("zh")
GREETING = "您好，我是在线客服，很高兴为您服务"
OFFLINE = NORMS.render("offline_prefix")
CJK = re.compile(r"[\u3400-\u9fff]")


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[tuple[SuggestionPipeline, FixedClock]]:
    root: Path = tmp_path_factory.mktemp("openings")
    ks = KnowledgeSettings(database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    kb.open_index()
    clock = FixedClock(MORNING)
    pipeline = SuggestionPipeline(
        kb, SuggestStore(store.engine), NORMS, default_intents("zh"), Settings().suggest, clock=clock
    )
    yield pipeline, clock
    kb.close()


def _ask(
    env: tuple[SuggestionPipeline, FixedClock], conv: str, message: str, at: datetime, **kw: Any
) -> dict[str, Any]:
    pipeline, clock = env
    clock.set(at)
    return pipeline.suggest(SuggestionRequest(conversation_id=conv, customer_message=message, **kw))


def _approve(env: tuple[SuggestionPipeline, FixedClock], response: dict[str, Any], at: datetime) -> None:
    d = response["drafts"][0]
    env[0].store.record_decision(
        suggestion_id=response["id"],
        conversation_id=response["conversation_id"],
        action="approve",
        draft_id=d["id"],
        final_text=d["text"],
        agent_id="a1",
        reason=None,
        violations=[],
        at=at.astimezone(UTC),  # the service's clock is UTC (the store keeps naive UTC times)
    )


def _rules(response: dict[str, Any]) -> set[str]:
    return {v["rule_id"] for d in response["drafts"] for v in d["violations"]}


# -- openings said once ------------------------------------------------------------------------------


def test_out_of_hours_first_reply_greets_once_and_apologises_once(env: Any) -> None:
    # the escalation template opens with its own 非常抱歉: after the offline apology it goes
    r = _ask(env, "o-1", "可以去你们仓库自提吗", EVENING)
    assert r["offline"] and r["late_apology"] and r["first_reply"]
    for d in r["drafts"]:
        text = d["text"]
        assert text.startswith(GREETING + "。" + OFFLINE), text
        assert text.count("您好") == 1 and text.count("抱歉") == 1, text
        assert d["violations"] == []


def test_follow_up_after_the_agent_replied_out_of_hours_neither_greets_nor_apologises(env: Any) -> None:
    first = _ask(env, "o-2", "运费怎么算", EVENING)
    _approve(env, first, EVENING)
    r = _ask(env, "o-2", "那偏远地区呢", EVENING + timedelta(minutes=1))
    assert r["offline"] and not r["late_apology"] and not r["first_reply"]
    for d in r["drafts"]:
        assert "您好" not in d["text"] and OFFLINE not in d["text"], d["text"]
        assert not _rules(r) & {"repeated_greeting", "stacked_apology"}


def test_message_left_after_closing_waits_and_is_apologised_for_without_a_second_greeting(env: Any) -> None:
    first = _ask(env, "o-3", "运费怎么算", MORNING)
    _approve(env, first, MORNING)
    # the agent answered in the morning; the customer writes again in the evening: nobody answers now
    r = _ask(env, "o-3", "退款多久能到账", EVENING)
    assert r["late_apology"] and not r["first_reply"]
    for d in r["drafts"]:
        assert d["text"].startswith(OFFLINE), d["text"]
        assert "您好" not in d["text"] and d["violations"] == []


def test_history_with_an_undated_agent_reply_just_before_is_a_follow_up(env: Any) -> None:
    history = [
        Turn("customer", "运费怎么算"),
        Turn("agent", "您好，我是在线客服，很高兴为您服务。满99元包邮。"),
    ]
    r = _ask(env, "o-4", "退款多久能到账", EVENING, history=history)
    assert not r["late_apology"] and not r["first_reply"]
    assert all(OFFLINE not in d["text"] and "您好" not in d["text"] for d in r["drafts"])


def test_a_hello_later_in_the_conversation_is_not_greeted_again(env: Any) -> None:
    first = _ask(env, "o-5", "你好", MORNING)
    assert first["drafts"][0]["text"].startswith(GREETING)
    _approve(env, first, MORNING)
    again = _ask(env, "o-5", "你好，在吗", MORNING + timedelta(minutes=5))
    assert again["plan"]["kind"] == "greeting"
    assert [d["text"] for d in again["drafts"]] == [NORMS.render("greeting_again")]
    assert again["drafts"][0]["violations"] == []


def test_closed_since_is_the_end_of_the_last_opening_period() -> None:
    hours = NORMS.hours
    assert hours.closed_since(MORNING) is None
    assert hours.closed_since(EVENING) == datetime(2026, 11, 26, 17, 30, tzinfo=SH)
    # lunch break, and Sunday (closed all day) back to Saturday's close
    assert hours.closed_since(datetime(2026, 11, 26, 12, 30, tzinfo=SH)) == datetime(
        2026, 11, 26, 12, 0, tzinfo=SH
    )
    assert hours.closed_since(datetime(2026, 11, 29, 11, 0, tzinfo=SH)) == datetime(
        2026, 11, 28, 17, 30, tzinfo=SH
    )


# -- the customer's language and script --------------------------------------------------------------


def test_language_of_counts_letters_not_presence() -> None:
    assert language_of("Do you ship to Hong Kong?") == "en"
    assert language_of("Y1空气炸锅多少钱") == "zh"
    assert language_of("Is the Y1 空气炸锅 in stock?") == "en"
    assert language_of("請問運費怎麼算？") == "zh"
    assert language_of("？？") == "zh"


def test_english_message_gets_wholly_english_drafts(env: Any) -> None:
    r = _ask(env, "e-1", "Hello, do you deliver to Hong Kong?", MORNING)
    assert r["language"] == "en" and r["drafts"]
    for d in r["drafts"]:
        assert not CJK.search(d["text"]) and "。" not in d["text"], d["text"]
        assert d["text"].startswith(default_norms("en").greeting), d["text"]
        assert d["violations"] == []
    assert r["drafts"][0]["citations"][0]["snippet_id"] == "faq-en-shipping-overseas"


def test_english_question_without_an_english_snippet_is_passed_on_in_english(env: Any) -> None:
    r = _ask(env, "e-2", "Can I pick up my order at your warehouse?", EVENING)
    assert r["escalate"] and r["late_apology"]
    en = default_norms("en")
    for d in r["drafts"]:
        assert not CJK.search(d["text"]), d["text"]
        assert d["text"].count("sorry") == 1 and d["violations"] == [], d["text"]
        assert en.render("offline_prefix").strip() in d["text"]


def test_traditional_message_gets_traditional_drafts_that_keep_the_norms(env: Any) -> None:
    r = _ask(env, "t-1", "請問運費怎麼算？有包郵嗎？", EVENING)
    assert r["script"] == "traditional" and r["drafts"]
    for d in r["drafts"]:
        assert is_traditional(d["text"]), d["text"]
        assert "运费" not in d["text"] and "運費" in d["text"]
        assert d["text"].startswith("您好，我是在線客服，很高興為您服務。非常抱歉未能及時回覆您的留言"), d[
            "text"
        ]
        assert d["violations"] == []


def test_llm_prompt_says_later_reply_apology_given_and_traditional() -> None:
    job = DraftJob(
        customer_message="請問運費怎麼算？",
        history=(Turn("customer", "你好"), Turn("agent", "您好，我是在线客服，很高兴为您服务。")),
        plan=Plan("answer"),
        n=2,
        norms=NORMS,
        first_reply=False,
        customer_waited_s=3600,
        intent="order",
        traditional=True,
        apology_given=True,
    )
    user = build_messages(job)[1]["content"]
    for name in ("llm_later_reply", "llm_apology_given", "llm_traditional"):
        assert NORMS.render(name) in user
    # the wait is apologised for by the service: the LLM is not asked to apologise again
    assert NORMS.render("llm_waited", seconds=3600) not in user
    first = build_messages(replace(job, first_reply=True, apology_given=False, traditional=False))[1][
        "content"
    ]
    assert NORMS.render("llm_first_reply") in first and NORMS.render("llm_later_reply") not in first
    assert NORMS.render("llm_waited", seconds=3600) in first
    en = build_messages(replace(job, norms=default_norms("en"), traditional=False))
    assert not CJK.search(en[0]["content"])  # the system prompt of an English job is English


# -- the follow-up question -----------------------------------------------------------------------


def _hit(s: Snippet, score: float, confidence: str = "medium") -> Hit:
    return Hit(s, s.question, "question", score, score, None, 1.0, score, confidence)


def _job(message: str, hits: tuple[Hit, ...]) -> DraftJob:
    return DraftJob(message, (), Plan("answer", hits), 3, NORMS, True, None, "inquiry")


def test_follow_up_offers_a_related_snippet_never_another_product_or_a_paraphrase() -> None:
    best = snippet("y1", "Y1空气炸锅容量多大？", "容量5.5升。", product="Y1", tags=("产品",))
    other_product = snippet("p3", "P3牙刷续航多久？", "续航30天。", product="P3", tags=("产品",))
    paraphrase = snippet("y1b", "Y1空气炸锅的容量是多大？", "5.5升。", product="Y1", tags=("产品",))
    unrelated = snippet("inv", "怎么开发票？", "在订单详情中申请。", tags=("发票",))
    related = snippet("y1c", "空气炸锅怎么清洗？", "炸篮可拆洗。", product="Y1", tags=("使用",))
    hits = (_hit(best, 1.0, "high"), _hit(other_product, 0.9), _hit(paraphrase, 0.9), _hit(unrelated, 0.8))
    assert follow_up_hit(_job("Y1空气炸锅容量是多少", hits), hits[0]) is None
    with_related = (*hits, _hit(related, 0.7))
    chosen = follow_up_hit(_job("Y1空气炸锅容量是多少", with_related), hits[0])
    assert chosen is not None and chosen.snippet_id == "y1c"
    # a tag in common makes a topic; a low-confidence hit is never offered
    tagged = snippet("ship", "运费怎么算？", "满99元包邮。", tags=("物流",))
    near = snippet("remote", "偏远地区能送到吗？", "偏远地区另收10元。", tags=("物流",))
    low = (_hit(tagged, 1.0, "high"), _hit(near, 0.3, "low"))
    assert follow_up_hit(_job("运费怎么算", low), low[0]) is None
    close = (_hit(tagged, 1.0, "high"), _hit(near, 0.8))
    chosen = follow_up_hit(_job("运费怎么算", close), close[0])
    assert chosen is not None and chosen.snippet_id == "remote"


def test_checker_flags_openings_in_agent_written_replies_of_both_scripts() -> None:
    ctx = CheckContext(first_reply=True)
    for text in (
        "您好，非常抱歉未能及时回复您的留言。您好，我是在线客服，很高兴为您服务。",
        "您好，非常抱歉未能及時回覆您的留言。您好，我是線上客服，很高興為您服務。",
    ):
        assert [v.rule_id for v in NORMS.check(text, ctx)] == ["repeated_greeting"]
        fixed = NORMS.fix(text, ctx)
        assert fixed.violations == [] and fixed.text.count("您好") == 1
        assert is_traditional(fixed.text) == is_traditional(text)

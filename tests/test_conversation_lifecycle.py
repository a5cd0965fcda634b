"""The agent's day over real HTTP and on both databases (issue 19): conversation lifecycle, concurrent
claims, replies of one's own, stale decisions refused, records by customer turn."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.store import Store
from suggest.conversations import ConversationDesk
from suggest.errors import ClaimedByOther
from suggest.records_cli import run_records
from suggest.storage import SuggestStore
from tests.web_env import WebEnv, web_env

AT = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


# -- storage: migration from a blank database, and claims that race ----------------------------------------


def _conversation(store: SuggestStore, conversation_id: str, suggestion_id: str = "s-1") -> None:
    store.record_suggestion(
        suggestion_id=suggestion_id,
        conversation_id=conversation_id,
        customer_message="怎么退货",
        channel=None,
        customer=None,
        response={
            "drafts": [{"id": "d-1", "text": "您好", "kind": "answer"}],
            "intent": {"label": "inquiry"},
        },
        intent="inquiry",
        intent_confidence=1.0,
        route=None,
        escalate=False,
        fallback=False,
        drafter="template",
        kb_revision=0,
        at=AT,
    )


def test_blank_database_migrates_to_the_lifecycle_schema(db_url: str) -> None:
    kb = Store(db_url)
    try:
        SuggestStore(kb.engine)
        insp = inspect(kb.engine)
        assert {"owner", "claimed_at", "closed_at", "closed_by"} <= {
            c["name"] for c in insp.get_columns("conversations")
        }
        assert "conversation_events" in insp.get_table_names()
        decisions = {c["name"]: c for c in insp.get_columns("decisions")}
        assert decisions["suggestion_id"]["nullable"] and "reply_to" in decisions
        assert {"turns", "closed_at"} <= {c["name"] for c in insp.get_columns("service_records")}
        SuggestStore(kb.engine)  # a second start finds nothing to do
    finally:
        kb.close()


def test_of_agents_claiming_at_once_exactly_one_wins(db_url: str) -> None:
    kb = Store(db_url)
    try:
        store = SuggestStore(kb.engine)
        _conversation(store, "race-1")
        desk = ConversationDesk(kb.engine)
        won: list[str] = []
        lost: list[str] = []
        start = threading.Barrier(6)

        def claim(agent: str) -> None:
            start.wait()
            try:
                desk.claim("race-1", agent, AT)
                won.append(agent)
            except ClaimedByOther as e:
                lost.append(e.details["owner"])

        threads = [threading.Thread(target=claim, args=(f"agent-{i}",)) for i in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(won) == 1 and len(lost) == 5
        assert set(lost) == {won[0]}  # everyone who lost is told who won
        life = desk.lifecycle("race-1")
        assert life["owner"] == won[0] and life["status"] == "claimed"
        assert [e["action"] for e in life["events"]] == ["claim"]
    finally:
        kb.close()


# -- over HTTP, two agents and an admin --------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("lifecycle"), demo_snippets, minilm, second_agent=True) as e:
        yield e


def ask(env: WebEnv, conversation: str, message: str, **body: Any) -> dict[str, Any]:
    r = env.call(
        "POST",
        "/v1/suggestions",
        "agent",
        json={"conversation_id": conversation, "customer_message": message, **body},
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def decide(env: WebEnv, s: dict[str, Any], role: str = "agent", **body: Any) -> Any:
    body.setdefault("agent_id", "agent-1" if role == "agent" else f"{role}-1")
    if body.get("action", "approve") == "approve":
        body.setdefault("action", "approve")
        body.setdefault("draft_id", s["drafts"][0]["id"])
    return env.call("POST", f"/v1/suggestions/{s['id']}/decision", role, json=body)


def test_a_decision_on_drafts_for_an_older_message_is_refused_with_the_newer_message(env: WebEnv) -> None:
    old = ask(env, "st-1", "请问怎么申请退货？")
    new = ask(env, "st-1", "怎麼退款到賬要多久")
    r = decide(env, old)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "stale_suggestion" and "怎麼退款" in err["message_zh"] and err["message_en"]
    assert [m["text"] for m in err["details"]["newer_messages"]] == ["怎麼退款到賬要多久"]
    thread = env.call("GET", "/v1/conversations/st-1", "agent").json()
    assert thread["agent_replies"] == 0  # nothing was sent
    # The drafts of the newest message go; an explicit confirmation sends the old one anyway.
    assert decide(env, new).status_code == 201
    forced = decide(env, old, action="edit", final_text="您好，退货请在订单页申请。", confirm_stale=True)
    assert forced.status_code == 201, forced.text


def test_claim_transfer_take_over_and_close_with_the_survey(env: WebEnv) -> None:
    s = ask(env, "lc-1", "运费怎么算", customer={"name": "李女士"})
    claim = env.call("POST", "/v1/conversations/lc-1/claim", "agent")
    assert claim.status_code == 200 and claim.json()["owner"] == "agent-1"
    other = env.call("POST", "/v1/conversations/lc-1/claim", "agent2")
    assert other.status_code == 409 and other.json()["error"]["code"] == "claimed_by_other"
    assert other.json()["error"]["details"]["owner"] == "agent-1"
    # The colleague is warned (409) before answering a conversation someone else holds ...
    r = decide(env, s, "agent2", agent_id="agent-2")
    assert r.status_code == 409 and r.json()["error"]["code"] == "claimed_by_other"
    rejected = decide(env, s, "agent2", agent_id="agent-2", action="reject", reason="不是我的")
    assert rejected.status_code == 409  # nor may they settle the owner's drafts
    # ... and the colleague's transfer needs the owner or an admin.
    t = env.call("POST", "/v1/conversations/lc-1/transfer", "agent2", json={"to": "agent-2"})
    assert t.status_code == 409
    t = env.call("POST", "/v1/conversations/lc-1/transfer", "agent", json={"to": "agent-2", "note": "下班"})
    assert t.status_code == 200 and t.json()["owner"] == "agent-2"
    assert decide(env, s, "agent2", agent_id="agent-2").status_code == 201
    # An explicit take-over answers anyway, and says so in the conversation's history.
    s2 = ask(env, "lc-1", "那偏远地区呢")
    assert decide(env, s2, "agent", take_over=True).status_code == 201
    life = env.call("GET", "/v1/conversations/lc-1", "agent2").json()
    assert life["owner"] == "agent-1" and life["status"] == "claimed"
    assert [(e["action"], e["actor"], e["target"]) for e in life["events"]] == [
        ("claim", "agent-1", None),
        ("transfer", "agent-1", "agent-2"),
        ("transfer", "agent-1", "agent-1"),
    ]
    # Only the owner (or an admin) closes it; closing sends the survey and completes the record.
    assert env.call("POST", "/v1/conversations/lc-1/close", "agent2", json={}).status_code == 409
    closed = env.call("POST", "/v1/conversations/lc-1/close", "agent", json={})
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["status"] == "closed" and body["closed_by"] == "agent-1" and "评价" in body["closing_message"]
    rec = env.call("GET", "/v1/records/lc-1", "agent").json()
    assert rec["status"] == "closed" and rec["closed_at"] and rec["customer_name"] == "李女士"
    assert "评价" not in (rec["final_reply"] or "")  # the answer stays the answer, not the survey
    assert env.call("POST", "/v1/conversations/lc-1/close", "agent", json={}).status_code == 409
    # The customer writes again: the conversation opens again, unclaimed.
    ask(env, "lc-1", "还有一个问题")
    again = env.call("GET", "/v1/conversations/lc-1", "agent").json()
    assert again["status"] == "open" and again["owner"] is None
    assert env.call("POST", "/v1/conversations/nope/claim", "agent").status_code == 404
    assert env.call("POST", "/v1/conversations/lc-1/transfer", "agent", json={"to": " "}).status_code == 422


def test_own_reply_after_rejecting_and_queue_items_follow_what_was_sent(env: WebEnv) -> None:
    s = ask(env, "own-1", "我要投诉，快递三天还没到！")
    assert s["route"] == "售后服务部"
    queue = "/v1/queues/%E5%94%AE%E5%90%8E%E6%9C%8D%E5%8A%A1%E9%83%A8"
    before = env.call("GET", queue, "agent").json()["count"]
    rej = decide(env, s, action="reject", reason="要先查物流")
    assert rej.status_code == 201
    assert env.call("GET", queue, "agent").json()["count"] == before  # rejected drafts open nothing
    own = decide(env, s, action="write", final_text="您好，我马上为您查询物流，请稍等。")
    assert own.status_code == 201, own.text
    out = own.json()
    assert out["action"] == "write" and out["settled_drafts"] is False and out["queue_item_id"] is None
    assert env.call("GET", queue, "agent").json()["count"] == before
    # An own reply may route the complaint explicitly; the item comes with it.
    routed = decide(
        env, s, action="write", final_text="您好，已为您转交售后服务部处理。", route_to="售后服务部"
    )
    assert routed.status_code == 201 and routed.json()["queue_item_id"]
    assert env.call("GET", queue, "agent").json()["count"] == before + 1
    assert decide(env, s, action="write", final_text="x", route_to="财务部").status_code == 422
    assert decide(env, s).status_code == 409  # the drafts were rejected: approving one now is refused
    rec = env.call("GET", "/v1/records/own-1", "agent").json()
    assert (
        rec["turns"][0]["answer"] == "您好，已为您转交售后服务部处理。" and rec["routed_to"] == "售后服务部"
    )


def test_record_of_a_multi_question_conversation(env: WebEnv) -> None:
    hello = ask(env, "mq-1", "在吗")
    rec = env.call("GET", "/v1/records/mq-1", "agent").json()
    assert rec["intent"] == "chit_chat" and rec["summary"] == "在吗"  # never a row with no question
    decide(env, hello)
    q1 = ask(env, "mq-1", "请问怎么申请退货？")
    decide(env, q1)
    q2 = ask(env, "mq-1", "运费怎么算？")
    decide(env, q2, action="write", final_text="您好，满99元包邮，不满收10元运费。")
    rec = env.call("GET", "/v1/records/mq-1", "agent").json()
    assert [t["question"] for t in rec["turns"]] == ["在吗", "请问怎么申请退货？", "运费怎么算？"]
    assert rec["summary"] == "请问怎么申请退货？ / 运费怎么算？"  # the greeting no longer counts
    assert rec["intent"] == q1["intent"]["label"]
    assert rec["turns"][1]["answer"] == q1["drafts"][0]["text"]
    assert rec["turns"][2]["answer"] == "您好，满99元包邮，不满收10元运费。"
    assert rec["turns"][2]["answered_by"] == "agent-1"
    listed = env.call("GET", "/v1/records", "agent", params={"agent": "agent-1", "status": "answered"}).json()
    assert "mq-1" in [r["conversation_id"] for r in listed["items"]]
    assert env.call("GET", "/v1/records", "agent", params={"agent": "nobody"}).json()["count"] == 0
    assert env.call("GET", "/v1/records", "agent", params={"status": "bogus"}).status_code == 422
    csv = env.call("GET", "/v1/records/export", "agent", params={"format": "csv", "agent": "agent-1"})
    text = csv.content.decode("utf-8-sig")
    assert "问答明细" in text and "2. 问：请问怎么申请退货？" in text and "售后" in text


def test_two_agents_approving_the_same_drafts_at_once_send_one_reply(env: WebEnv, tmp_path: Path) -> None:
    s = ask(env, "race-http", "怎么开发票")
    codes: list[int] = []
    start = threading.Barrier(2)

    def send(role: str) -> None:
        start.wait()
        codes.append(decide(env, s, role, agent_id="agent-1" if role == "agent" else "agent-2").status_code)

    threads = [threading.Thread(target=send, args=(r,)) for r in ("agent", "agent2")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [201, 409]
    assert env.call("GET", "/v1/conversations/race-http", "agent").json()["agent_replies"] == 1


def test_records_cli_exports_one_agents_records(
    env: WebEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = ask(env, "cli-1", "怎么开发票")
    decide(env, s, "agent2", agent_id="agent-2")
    monkeypatch.setenv("KEFU_DATABASE_URL", env.kb.store.url)
    out = tmp_path / "mine.csv"
    args = argparse.Namespace(
        start="2026-11-26", end=None, format=None, output=out, agent="agent-2", status="answered"
    )
    assert run_records(args) == 0
    text = out.read_bytes().decode("utf-8-sig")
    assert "cli-1" in text and "mq-1" not in text and "1. 问：怎么开发票" in text

"""The seed's workflow over real HTTP, with the service clock injected (issue: service workflow)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from suggest.clock import FixedClock
from suggest.settings import AppSettings, Settings, WorkflowSettings
from tests.helpers_server import serve

SHANGHAI = ZoneInfo("Asia/Shanghai")
THURSDAY_10AM = datetime(2026, 11, 26, 10, 0, tzinfo=SHANGHAI)


class Api:
    def __init__(self, base: str, clock: FixedClock) -> None:
        self.base = base
        self.clock = clock

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=30, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=json, timeout=30, **kw)

    def suggest(self, conv: str, message: str, **body: Any) -> dict[str, Any]:
        r = self.post("/v1/suggestions", {"conversation_id": conv, "customer_message": message, **body})
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def approve(self, s: dict[str, Any], agent: str = "agent-7", index: int = 0) -> dict[str, Any]:
        r = self.post(
            f"/v1/suggestions/{s['id']}/decision",
            {"action": "approve", "draft_id": s["drafts"][index]["id"], "agent_id": agent},
        )
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture
def api(
    tmp_path: Path,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Api]:
    ks = KnowledgeSettings(database_url=f"sqlite:///{tmp_path / 'kb.db'}", index_dir=tmp_path / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    clock = FixedClock(THURSDAY_10AM)
    settings = Settings(
        knowledge=ks, app=AppSettings(require_keys=False), workflow=WorkflowSettings(busy_waiting=3)
    )
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    with serve(settings, kb, clock=clock) as running:
        yield Api(running.base, clock)
    kb.close()


# -- 1. intents and routing to department queues ---------------------------------------------------


def test_complaint_and_suggestion_reach_department_queues_when_the_reply_is_sent(api: Api) -> None:
    c = api.suggest("w-complaint", "我要投诉，你们的快递太慢了，客服态度也差！")
    assert c["intent"]["label"] == "complaint" and c["route"] == "售后服务部"
    assert "售后服务部" in c["drafts"][0]["text"] and "24小时" in c["drafts"][0]["text"]
    s = api.suggest("w-suggest", "建议你们出个粉色的吹风机")
    assert s["route"] == "销售部" and "销售部" in s["drafts"][0]["text"]
    # Drafts alone open nothing: the items come with the replies that promise them.
    assert api.get(f"/v1/queues/{quote('售后服务部')}").json()["count"] == 0
    assert api.get(f"/v1/queues/{quote('销售部')}").json()["count"] == 0
    sent = api.approve(c)
    assert sent["queue_item_id"] and sent["escalation_id"] is None
    api.approve(s)
    after_sales = api.get(f"/v1/queues/{quote('售后服务部')}").json()
    assert [i["conversation_id"] for i in after_sales["items"]] == ["w-complaint"]
    item = after_sales["items"][0]
    assert item["kind"] == "complaint" and item["status"] == "open"
    info = api.suggest("w-info", "我的手机号是13812345678，有事打这个就行", customer={"name": "陈先生"})
    assert info["intent"]["label"] == "customer_info" and info["route"] == "销售部"
    assert info["escalate"] is False and info["plan"]["kind"] == "customer_info"
    assert info["drafts"][0]["kind"] == "customer_info" and "销售部" in info["drafts"][0]["text"]
    assert "13812345678" not in info["drafts"][0]["text"]  # the customer's number is not read back
    api.approve(info)
    sales = api.get(f"/v1/queues/{quote('销售部')}").json()
    assert [i["kind"] for i in sales["items"]] == ["suggestion", "customer_info"]
    assert sales["items"][1]["customer_name"] == "陈先生"  # lists say who, not only an id
    assert api.get("/v1/escalations").json()["count"] == 0  # details left are no question to escalate
    done = api.post(f"/v1/queues/{quote('售后服务部')}/{item['id']}/done", {"note": "已电话联系客户"})
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert api.post(f"/v1/queues/{quote('售后服务部')}/{item['id']}/done", {}).status_code == 409
    assert api.get(f"/v1/queues/{quote('售后服务部')}").json()["count"] == 0


# -- 2. escalation instead of guessing ---------------------------------------------------------------


def test_escalation_is_opened_on_send_flagged_when_old_and_answered_back_into_the_conversation(
    api: Api,
) -> None:
    s = api.suggest("w-esc", "我家的猫最近不爱吃猫粮怎么办")
    assert s["escalate"] is True and s["drafts"][0]["kind"] == "escalate"
    assert api.get("/v1/escalations").json()["count"] == 0  # not before the agent sends it
    gaps = api.get("/v1/knowledge/gaps").json()["items"]
    assert any("猫粮" in ex["text"] for g in gaps for ex in g["examples"])
    assert api.approve(s)["escalation_id"]
    items = api.get("/v1/escalations").json()["items"]
    assert len(items) == 1 and items[0]["conversation_id"] == "w-esc" and items[0]["overdue"] is False
    assert items[0]["created_by"] == "agent-7"
    assert api.get("/v1/records/w-esc").json()["escalated"] is True
    api.clock.advance(25 * 3600)
    esc = api.get("/v1/escalations").json()
    assert esc["overdue"] == 1 and esc["items"][0]["overdue"] is True
    r = api.post(
        f"/v1/escalations/{items[0]['id']}/resolve",
        {"answer": "您好，本店不销售宠物用品，建议咨询宠物医生。"},
    )
    assert r.status_code == 200, r.text
    snippet = r.json()["snippet"]
    assert snippet["status"] == "draft" and snippet["answer"].startswith("您好，本店不销售宠物用品")
    got = api.get(f"/v1/knowledge/snippets/{snippet['id']}").json()
    assert got["question"] == "我家的猫最近不爱吃猫粮怎么办"
    # The loop closes: the gap leaves the list, the record says the answer is ready, and the answer is
    # the conversation's next draft.
    gaps = api.get("/v1/knowledge/gaps").json()["items"]
    assert not any("猫粮" in ex["text"] for g in gaps for ex in g["examples"])
    rec = api.get("/v1/records/w-esc").json()
    assert rec["status"] == "answer_ready" and rec["turns"][0]["escalation_answer"].startswith("您好，本店")
    ready = api.get(f"/v1/suggestions/{r.json()['draft_suggestion_id']}")
    assert ready.status_code == 200 and ready.json()["drafts"][0]["text"].startswith("您好，本店不销售")
    sent = api.approve(ready.json())
    assert sent["final_text"].startswith("您好，本店不销售")
    rec = api.get("/v1/records/w-esc").json()
    assert rec["status"] == "answered" and rec["turns"][0]["answer"].startswith("您好，本店不销售")
    assert api.post(f"/v1/escalations/{items[0]['id']}/resolve", {"answer": "x"}).status_code == 409
    assert api.get("/v1/escalations").json()["count"] == 0
    manual = api.post("/v1/escalations", {"conversation_id": "w-esc", "question": "客户要求开具纸质发票"})
    assert manual.status_code == 201 and manual.json()["status"] == "open"


# -- 3. waiting customers ------------------------------------------------------------------------------


def test_waiting_customers_longest_first_and_late_replies_apologise(api: Api) -> None:
    api.suggest("w-wait-1", "运费怎么算")
    api.clock.advance(30)
    api.suggest("w-wait-2", "可以开专票吗")
    api.clock.advance(50)
    waiting = api.get("/v1/conversations?status=waiting").json()["items"]
    assert [w["conversation_id"] for w in waiting] == ["w-wait-1", "w-wait-2"]
    assert waiting[0]["waiting_s"] == 80 and waiting[0]["over_limit"] is True
    assert waiting[1]["waiting_s"] == 50 and waiting[1]["over_limit"] is False
    # The customer of w-wait-1 writes again: the wait counts from the first unanswered message.
    again = api.suggest("w-wait-1", "在吗？运费到底多少")
    assert again["customer_waited_s"] == 80
    assert again["drafts"][0]["text"].startswith(
        ("抱歉", "非常抱歉", "很抱歉", "不好意思", "您好，我是在线客服")
    ), again["drafts"][0]["text"]
    assert "抱歉" in again["drafts"][0]["text"][:40]
    api.approve(again)  # the drafts of the newest message (the older ones are stale now)
    left = [w["conversation_id"] for w in api.get("/v1/conversations?status=waiting").json()["items"]]
    assert left == ["w-wait-2"]


# -- 4. auto-reply and offline messages ----------------------------------------------------------------


def test_auto_reply_outside_hours_and_when_busy(api: Api) -> None:
    sunday = datetime(2026, 11, 29, 10, 0, tzinfo=SHANGHAI).isoformat()
    r = api.get("/v1/auto-reply", params={"at": sunday}).json()
    assert r["due"] is True and r["reason"] == "out_of_hours" and "工作时间" in r["text"]
    lunch = datetime(2026, 11, 26, 12, 30, tzinfo=SHANGHAI).isoformat()
    assert api.get("/v1/auto-reply", params={"at": lunch}).json()["reason"] == "out_of_hours"
    r = api.get("/v1/auto-reply").json()
    assert r["due"] is False and r["open"] is True
    for i in range(4):
        api.suggest(f"w-busy-{i}", "怎么退货")
    r = api.get("/v1/auto-reply").json()
    assert r["due"] is True and r["reason"] == "busy" and r["waiting"] == 4
    assert api.get("/v1/auto-reply", params={"at": "yesterday"}).status_code == 422


def test_messages_left_while_closed_are_offline_messages_with_drafts_ready(api: Api) -> None:
    api.clock.set(datetime(2026, 11, 26, 20, 0, tzinfo=SHANGHAI))
    a = api.suggest("w-night-1", "退款多久能到账")
    api.clock.advance(3600)
    api.suggest("w-night-2", "可以分期吗")
    assert a["drafts"][0]["text"].startswith(
        "您好，我是在线客服，很高兴为您服务。非常抱歉未能及时回复您的留言"
    )
    api.clock.set(datetime(2026, 11, 27, 8, 30, tzinfo=SHANGHAI))
    api.suggest("w-day", "怎么注销账户")  # in working hours: not an offline message
    offline = api.get("/v1/offline-messages").json()
    assert [m["conversation_id"] for m in offline["items"]] == ["w-night-1", "w-night-2"]
    assert all(m["drafts"] for m in offline["items"])
    api.approve(offline["items"][0])
    assert [m["conversation_id"] for m in api.get("/v1/offline-messages").json()["items"]] == ["w-night-2"]


# -- 5. outage recovery -----------------------------------------------------------------------------------


def test_recovery_apologises_to_every_waiting_customer_before_answering(api: Api) -> None:
    api.suggest("w-out-1", "退款多久能到账")
    api.suggest("w-out-2", "能开增值税专用发票吗")
    api.clock.advance(600)
    r = api.post("/v1/recovery", {"cause": "网络中断"})
    assert r.status_code == 201
    items = r.json()["items"]
    assert {i["conversation_id"] for i in items} == {"w-out-1", "w-out-2"}
    for i in items:
        text = i["drafts"][0]["text"]
        assert "由于网络中断" in text and text.index("抱歉") < 30
        assert i["customer_waited_s"] == pytest.approx(600, abs=1)
    assert api.post("/v1/recovery", {"cause": ""}).status_code == 422


# -- 6/7. service records, satisfaction ---------------------------------------------------------------------


def test_records_filled_edited_exported_and_rated(api: Api, tmp_path: Path) -> None:
    s = api.suggest("w-rec", "请问怎么申请退货？", customer={"id": "u-1", "name": "王女士"}, channel="web")
    api.clock.advance(42)
    api.approve(s, agent="agent-7")
    bye = api.suggest("w-rec", "好的，谢谢")
    assert bye["drafts"][0]["kind"] == "closing" and "评价" in bye["drafts"][0]["text"]
    api.approve(bye, agent="agent-7")
    rec = api.get("/v1/records/w-rec")
    body = rec.json()
    assert body["customer_name"] == "王女士" and body["channel"] == "web" and body["intent"] == "after_sales"
    assert body["summary"] == "请问怎么申请退货？" and body["agent_id"] == "agent-7"
    assert [t["question"] for t in body["turns"]] == ["请问怎么申请退货？", "好的，谢谢"]
    assert body["turns"][0]["answer"] == s["drafts"][0]["text"]
    assert body["first_response_s"] == pytest.approx(42, abs=1) and body["status"] == "closed"
    assert body["final_reply"].startswith("感谢您的咨询") or "评价" in body["final_reply"]
    life = api.get("/v1/conversations/w-rec").json()  # the closing reply, with its survey, ended it
    assert life["status"] == "closed" and life["closed_by"] == "agent-7" and body["closed_at"]
    r = api.post("/v1/conversations/w-rec/satisfaction", {"score": 5, "comment": "很满意"})
    assert r.status_code == 200 and r.json()["satisfaction"] == 5
    assert api.post("/v1/conversations/w-rec/satisfaction", {"score": 9}).status_code == 422
    etag = api.get("/v1/records/w-rec").headers["etag"]
    edit = httpx.patch(
        f"{api.base}/v1/records/w-rec", json={"summary": "咨询退货流程"}, headers={"If-Match": etag}
    )
    assert edit.status_code == 200 and edit.json()["summary"] == "咨询退货流程"
    stale = httpx.patch(f"{api.base}/v1/records/w-rec", json={"notes": "x"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    listing = api.get("/v1/records", params={"from": "2026-11-26", "to": "2026-11-26"}).json()
    assert [r["conversation_id"] for r in listing["items"]] == ["w-rec"]
    assert api.get("/v1/records", params={"from": "2026-11-27"}).json()["count"] == 0
    csv = api.get("/v1/records/export", params={"format": "csv", "from": "2026-11-26", "to": "2026-11-26"})
    assert (
        csv.status_code == 200
        and "问题摘要" in csv.content.decode("utf-8-sig")
        and "咨询退货流程" in csv.text
    )
    xlsx = api.get("/v1/records/export", params={"format": "xlsx", "from": "2026-11-26", "to": "2026-11-26"})
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(xlsx.content))
    assert wb.sheetnames == ["汇总", "2026-11-26"]
    day = wb["2026-11-26"]
    assert day["A1"].value == "时间" and day["G2"].value == "咨询退货流程" and day["O2"].value == 5
    assert day["F2"].value == "售后" and day["H2"].value.startswith("1. 问：请问怎么申请退货？")


# -- 8. promotions -------------------------------------------------------------------------------------------


def test_current_promotion_is_mentioned_and_expired_ones_never(api: Api) -> None:
    s = api.suggest("w-promo", "破壁机能做热豆浆吗")
    mentions = [d for d in s["drafts"] if "活动正在进行中" in d["text"]]
    assert len(mentions) == 1 and "冬季破壁机赠品活动" in mentions[0]["text"]
    assert "promo-2026-h5-gift" in [c["snippet_id"] for c in mentions[0]["citations"]]
    api.clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=SHANGHAI))  # the promotion has ended
    later = api.suggest("w-promo-2", "破壁机能做热豆浆吗")
    assert not any("活动正在进行中" in d["text"] for d in later["drafts"])


def test_records_are_filtered_by_the_service_days_not_utc_days(api: Api) -> None:
    # 07:00 in Shanghai on the 27th is still the 26th in UTC.
    api.clock.set(datetime(2026, 11, 27, 7, 0, tzinfo=SHANGHAI))
    api.suggest("w-early", "退款多久能到账")
    on_27 = api.get("/v1/records", params={"from": "2026-11-27", "to": "2026-11-27"}).json()
    assert [r["conversation_id"] for r in on_27["items"]] == ["w-early"]
    assert api.get("/v1/records", params={"from": "2026-11-26", "to": "2026-11-26"}).json()["count"] == 0
    assert api.get("/v1/records", params={"from": "2026-11-28", "to": "2026-11-27"}).status_code == 422

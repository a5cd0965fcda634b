"""End-to-end tests of the suggestion service over real HTTP on the demo KB (issue: suggestion service)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from suggest.clock import FixedClock
from suggest.settings import AppSettings, Settings, SuggestSettings
from suggest.storage import SuggestStore
from tests.helpers_server import WORKING_HOURS, Running, serve


class Client:
    def __init__(self, base: str, keys: dict[str, str]) -> None:
        self.base = base
        self.keys = keys

    def call(self, method: str, path: str, role: str | None = "admin", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if role:
            headers["Authorization"] = f"Bearer {self.keys[role]}"
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kw)

    def suggest(self, message: str, conversation: str, role: str = "agent", **body: Any) -> httpx.Response:
        return self.call(
            "POST",
            "/v1/suggestions",
            role,
            json={"conversation_id": conversation, "customer_message": message, **body},
        )


@pytest.fixture(scope="module")
def app_env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[tuple[Running, Client]]:
    root = tmp_path_factory.mktemp("suggest")
    ks = KnowledgeSettings(database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    keys_store = SuggestStore(store.engine)
    keys = {
        role: keys_store.create_key(role, f"test {role}")[0]
        for role in ("agent", "editor", "evaluator", "admin")
    }
    settings = Settings(knowledge=ks, app=AppSettings(key_cache_s=0))
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    with serve(settings, kb, clock=FixedClock(WORKING_HOURS)) as running:
        yield running, Client(running.base, keys)
    kb.close()


@pytest.fixture
def client(app_env: tuple[Running, Client]) -> Client:
    return app_env[1]


def _conv(request: pytest.FixtureRequest) -> str:
    return f"conv-{request.node.name}"[:120]


# -- 1. the app ----------------------------------------------------------------------------------


def test_health_schema_and_metrics(client: Client) -> None:
    assert client.call("GET", "/health", role=None).json()["status"] == "ok"
    paths = client.call("GET", "/schema/openapi.json", role=None).json()["paths"]
    assert {"/v1/suggestions", "/v1/suggestions/{suggestion_id}/decision", "/v1/knowledge/snippets"} <= set(
        paths
    )
    client.suggest("怎么退货", "conv-metrics")
    text = client.call("GET", "/metrics", role=None).text
    for name in (
        "kefu_http_requests_total",
        "kefu_http_request_seconds_bucket",
        "kefu_drafts_total",
        "kefu_acceptance_rate",
    ):
        assert name in text


# -- 2. suggestions ------------------------------------------------------------------------------


def test_answer_greets_first_and_cites(client: Client, request: pytest.FixtureRequest) -> None:
    r = client.suggest("請問怎麼申請退貨？", _conv(request), n=3)
    assert r.status_code == 201
    body = r.json()
    assert body["intent"]["label"] == "after_sales" and 0 < body["intent"]["confidence"] <= 1
    assert body["plan"]["kind"] == "answer" and body["escalate"] is False and body["first_reply"] is True
    assert len(body["drafts"]) == 3
    assert len({d["text"] for d in body["drafts"]}) == 3  # the drafts differ
    assert body["script"] == "traditional" and body["language"] == "zh"
    for d in body["drafts"]:
        # the customer writes traditional characters: so does the draft (issue 19)
        assert d["text"].startswith("您好，我是在線客服，很高興為您服務")
        assert "退貨" in d["text"] and "退货" not in d["text"]
        assert d["citations"][0]["snippet_id"] == "faq-returns-process"
        assert d["violations"] == []
    assert body["retrieval"]["hits"][0]["snippet_id"] == "faq-returns-process"
    assert set(body["timings_ms"]) >= {"retrieve", "draft", "guard", "total"}


def test_late_reply_apologises_first_and_second_reply_does_not_greet(
    client: Client, request: pytest.FixtureRequest
) -> None:
    conv = _conv(request)
    first = client.suggest("运费怎么算", conv).json()
    d = first["drafts"][0]
    assert (
        client.call(
            "POST",
            f"/v1/suggestions/{first['id']}/decision",
            json={"action": "approve", "draft_id": d["id"], "agent_id": "a1"},
        ).status_code
        == 201
    )
    second = client.suggest("那偏远地区呢？新疆包邮吗", conv, customer_waited_s=120).json()
    assert second["first_reply"] is False
    text = second["drafts"][0]["text"]
    assert "很高兴为您服务" not in text
    assert text.startswith(("抱歉", "非常抱歉", "不好意思", "很抱歉")), text


def test_agent_written_reply_that_greets_again_or_stacks_apologies_is_flagged(
    client: Client, request: pytest.FixtureRequest
) -> None:
    """Issue 19: the norms check what the agent sends too; a later reply must not greet again."""
    conv = _conv(request)
    first = client.suggest("运费怎么算", conv).json()
    client.call(
        "POST",
        f"/v1/suggestions/{first['id']}/decision",
        json={"action": "approve", "draft_id": first["drafts"][0]["id"], "agent_id": "a1"},
    )
    second = client.suggest("那偏远地区呢？新疆包邮吗", conv).json()
    own = "您好，我是在线客服，很高兴为您服务。非常抱歉，新疆不包邮。非常抱歉，运费另计。"
    r = client.call(
        "POST",
        f"/v1/suggestions/{second['id']}/decision",
        json={"action": "edit", "draft_id": second["drafts"][0]["id"], "final_text": own, "agent_id": "a1"},
    )
    assert r.status_code == 201
    rules = [v["rule_id"] for v in r.json()["violations"]]
    assert rules.count("repeated_greeting") == 1 and rules.count("stacked_apology") == 1, rules
    # the same text checked as the console's badge does, from the suggestion
    badge = client.call("POST", "/v1/norms/check", json={"text": own, "suggestion_id": second["id"]}).json()
    assert {v["rule_id"] for v in badge["violations"]} >= {"repeated_greeting", "stacked_apology"}


def test_english_conversation_is_checked_by_the_english_norms(
    client: Client, request: pytest.FixtureRequest
) -> None:
    body = client.suggest("Hello, do you deliver to Hong Kong?", _conv(request)).json()
    assert body["language"] == "en"
    r = client.call(
        "POST",
        f"/v1/suggestions/{body['id']}/decision",
        json={"action": "approve", "draft_id": body["drafts"][0]["id"], "agent_id": "a1"},
    )
    assert r.status_code == 201 and r.json()["violations"] == []


def test_escalates_instead_of_guessing(client: Client, request: pytest.FixtureRequest) -> None:
    body = client.suggest("我家的猫最近不爱吃猫粮怎么办", _conv(request)).json()
    assert body["escalate"] is True and body["plan"]["kind"] == "escalate"
    assert all(d["kind"] == "escalate" for d in body["drafts"])
    for d in body["drafts"]:
        assert "不知道" not in d["text"] and "不清楚" not in d["text"]


def test_restricted_question_gets_tactful_refusal(client: Client, request: pytest.FixtureRequest) -> None:
    body = client.suggest("这个吹风机进货价是多少", _conv(request)).json()
    assert body["intent"]["label"] == "restricted"
    assert body["drafts"][0]["kind"] == "tactful_refusal"
    assert "成本价" in body["drafts"][0]["text"] or "内部信息" in body["drafts"][0]["text"]


def test_complaint_routes_to_after_sales(client: Client, request: pytest.FixtureRequest) -> None:
    body = client.suggest("我要投诉，你们的快递太慢了！", _conv(request)).json()
    assert body["intent"]["label"] == "complaint" and body["route"] == "售后服务部"
    assert body["drafts"][0]["kind"] == "complaint" and "24小时" in body["drafts"][0]["text"]


def test_closing(client: Client, request: pytest.FixtureRequest) -> None:
    body = client.suggest("好的，谢谢你", _conv(request)).json()
    assert body["drafts"][0]["kind"] == "closing"


def test_clarify_when_two_snippets_are_close(client: Client, request: pytest.FixtureRequest) -> None:
    body = client.suggest("多少钱", _conv(request)).json()
    kinds = [d["kind"] for d in body["drafts"]]
    assert body["plan"]["kind"] in ("clarify", "escalate"), body["plan"]
    if body["plan"]["kind"] == "clarify":
        assert kinds[0] == "clarify" and len(body["drafts"][0]["citations"]) == 2


# -- 5. decisions --------------------------------------------------------------------------------


def test_decisions_approve_edit_reject(client: Client, request: pytest.FixtureRequest) -> None:
    conv = _conv(request)
    s1 = client.suggest("支持哪些支付方式", conv).json()
    r = client.call(
        "POST",
        f"/v1/suggestions/{s1['id']}/decision",
        json={"action": "edit", "draft_id": s1["drafts"][0]["id"], "final_text": "好的", "agent_id": "a1"},
    )
    assert r.status_code == 201
    assert {v["rule_id"] for v in r.json()["violations"]} >= {"too_short"}
    again = client.call(
        "POST",
        f"/v1/suggestions/{s1['id']}/decision",
        json={"action": "approve", "draft_id": s1["drafts"][0]["id"], "agent_id": "a1"},
    )
    assert again.status_code == 409
    s2 = client.suggest("可以分期吗", conv).json()
    wrong_draft = client.call(
        "POST",
        f"/v1/suggestions/{s2['id']}/decision",
        json={"action": "approve", "draft_id": f"{s2['id']}-1", "agent_id": "a1"},
    )
    assert wrong_draft.status_code == 404  # a draft has its own id; the message lists them
    assert s2["drafts"][0]["id"] in wrong_draft.json()["error"]["message_en"]
    no_reason = client.call(
        "POST", f"/v1/suggestions/{s2['id']}/decision", json={"action": "reject", "agent_id": "a1"}
    )
    assert no_reason.status_code == 422 and no_reason.json()["error"]["message_en"]
    ok = client.call(
        "POST",
        f"/v1/suggestions/{s2['id']}/decision",
        json={"action": "reject", "agent_id": "a1", "reason": "不准确"},
    )
    assert ok.status_code == 201
    unknown = client.call(
        "POST", "/v1/suggestions/nope/decision", json={"action": "reject", "agent_id": "a1", "reason": "x"}
    )
    assert unknown.status_code == 404
    metrics = client.call("GET", "/metrics", role=None).text
    assert 'kefu_decisions_total{action="edit"}' in metrics


# -- 6. knowledge endpoints ------------------------------------------------------------------------


def test_snippet_crud_with_etags(client: Client) -> None:
    new = {
        "id": "faq-api-crud",
        "question": "你们支持数字人民币支付吗",
        "answer": "支持，结算时选择数字人民币即可。",
        "status": "published",
    }
    assert client.call("POST", "/v1/knowledge/snippets", role="agent", json=new).status_code == 403
    r = client.call("POST", "/v1/knowledge/snippets", role="editor", json=new)
    assert r.status_code == 201 and r.headers["etag"] == '"v1"'
    assert client.call("POST", "/v1/knowledge/snippets", role="editor", json=new).status_code == 409
    got = client.call("GET", "/v1/knowledge/snippets/faq-api-crud", role="agent")
    assert got.status_code == 200 and got.headers["etag"] == '"v1"'
    no_match = client.call("PUT", "/v1/knowledge/snippets/faq-api-crud", role="editor", json={"answer": "x"})
    assert no_match.status_code == 428
    ok = client.call(
        "PUT",
        "/v1/knowledge/snippets/faq-api-crud",
        role="editor",
        json={"answer": "支持数字人民币，结算时选择即可。"},
        headers={"If-Match": '"v1"'},
    )
    assert ok.status_code == 200 and ok.headers["etag"] == '"v2"'
    stale = client.call(
        "PUT",
        "/v1/knowledge/snippets/faq-api-crud",
        role="editor",
        json={"answer": "被覆盖"},
        headers={"If-Match": '"v1"'},
    )
    assert stale.status_code == 412
    assert (
        client.call("GET", "/v1/knowledge/snippets/faq-api-crud").json()["answer"]
        == "支持数字人民币，结算时选择即可。"
    )
    # The change is used by the very next suggestion.
    body = client.suggest("能用数字人民币付款吗", "conv-crud").json()
    assert body["drafts"][0]["citations"][0]["snippet_id"] == "faq-api-crud"
    assert "支持数字人民币" in body["drafts"][0]["text"]
    assert (
        client.call(
            "DELETE", "/v1/knowledge/snippets/faq-api-crud", role="editor", headers={"If-Match": '"v1"'}
        ).status_code
        == 412
    )
    assert (
        client.call(
            "DELETE", "/v1/knowledge/snippets/faq-api-crud", role="editor", headers={"If-Match": '"v2"'}
        ).status_code
        == 204
    )
    assert client.call("GET", "/v1/knowledge/snippets/faq-api-crud").status_code == 404
    listing = client.call("GET", "/v1/knowledge/snippets?kind=restricted", role="evaluator").json()
    assert listing["total"] == 7


def test_import_endpoint(client: Client, tmp_path: Path) -> None:
    good = '{"id": "faq-imp-1", "question": "可以开纸质发票吗", "answer": "目前只提供电子发票。"}\n'
    r = client.call(
        "POST", "/v1/knowledge/import", role="editor", files={"data": ("more.jsonl", good.encode())}
    )
    assert r.status_code == 200 and r.json()["created"] == 1
    bad = good.replace("faq-imp-1", "faq-imp-2") + '{"id": "faq-imp-3", "question": ""}\n'
    r = client.call(
        "POST", "/v1/knowledge/import", role="editor", files={"data": ("bad.jsonl", bad.encode())}
    )
    assert r.status_code == 422
    problems = r.json()["error"]["details"]
    assert problems[0]["location"] == "line 2" and problems[0]["field"] == "question"
    assert client.call("GET", "/v1/knowledge/snippets/faq-imp-2").status_code == 404  # nothing imported


# -- 7. API keys -----------------------------------------------------------------------------------


def test_keys_and_roles(client: Client, app_env: tuple[Running, Client]) -> None:
    r = client.call(
        "POST", "/v1/suggestions", role=None, json={"conversation_id": "x", "customer_message": "hi"}
    )
    assert r.status_code == 401 and r.json()["error"]["message_zh"]
    bad = client.call(
        "POST", "/v1/suggestions", role=None, headers={"Authorization": "Bearer kefu_nope_nope"}, json={}
    )
    assert bad.status_code == 401
    assert client.suggest("怎么退货", "conv-roles", role="editor").status_code == 403
    s = client.suggest("怎么退货", "conv-roles").json()
    d = client.call(
        "POST",
        f"/v1/suggestions/{s['id']}/decision",
        role="editor",
        json={"action": "approve", "draft_id": s["drafts"][0]["id"], "agent_id": "e"},
    )
    assert d.status_code == 403
    running, _ = app_env
    store = SuggestStore(running.kb.store.engine)
    key, info = store.create_key("agent", "short-lived")
    assert (
        httpx.post(
            f"{running.base}/v1/knowledge/search",
            headers={"Authorization": f"Bearer {key}"},
            json={"query": "退货"},
        ).status_code
        == 200
    )
    store.revoke_key(info.id)
    assert (
        httpx.post(
            f"{running.base}/v1/knowledge/search",
            headers={"Authorization": f"Bearer {key}"},
            json={"query": "退货"},
        ).status_code
        == 401
    )


# -- 8. bad input ----------------------------------------------------------------------------------


def _count_suggestions(running: Running) -> int:
    from sqlalchemy import func, select

    from suggest.schema import suggestions

    with running.kb.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(suggestions)).scalar_one())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"conversation_id": "c", "customer_message": ""}, 422),
        ({"conversation_id": "c", "customer_message": "   \n "}, 422),
        ({"conversation_id": "c", "customer_message": "字" * 4001}, 422),
        ({"conversation_id": "c", "customer_message": "退货", "n": 9}, 422),
        ({"conversation_id": "c", "customer_message": 42}, 400),
        ({"conversation_id": "c"}, 400),
        (
            {"conversation_id": "c", "customer_message": "退货", "history": [{"role": "boss", "text": "x"}]},
            400,
        ),
        ({"conversation_id": "c", "customer_message": "退货", "customer_waited_s": -5}, 422),
        ("not json at all", 400),
    ],
)
def test_bad_input_is_4xx_and_stores_nothing(app_env: tuple[Running, Client], body: Any, status: int) -> None:
    running, client = app_env
    before = _count_suggestions(running)
    if isinstance(body, str):
        r = client.call(
            "POST",
            "/v1/suggestions",
            role="agent",
            content=body,
            headers={"content-type": "application/json"},
        )
    else:
        r = client.call("POST", "/v1/suggestions", role="agent", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message_zh"] and err["message_en"]
    assert _count_suggestions(running) == before


def test_refuse_switch_blocks_error_level_reply(
    tmp_path: Path, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder
) -> None:
    ks = KnowledgeSettings(database_url=f"sqlite:///{tmp_path / 'kb.db'}", index_dir=tmp_path / "index")
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets[:20], actor="t")
    settings = Settings(
        knowledge=ks,
        app=AppSettings(require_keys=False),
        suggest=replace(SuggestSettings(), refuse_error_level=True),
    )
    kb = KnowledgeBase(ks, store=store, embedder=minilm)
    with serve(settings, kb, clock=FixedClock(WORKING_HOURS)) as running:
        s = httpx.post(
            f"{running.base}/v1/suggestions", json={"conversation_id": "c1", "customer_message": "怎么下单"}
        ).json()
        r = httpx.post(
            f"{running.base}/v1/suggestions/{s['id']}/decision",
            json={
                "action": "edit",
                "draft_id": s["drafts"][0]["id"],
                "final_text": "这不是我们的问题，你自己看吧",
                "agent_id": "a",
            },
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "norms_refused"
        ok = httpx.post(
            f"{running.base}/v1/suggestions/{s['id']}/decision",
            json={"action": "approve", "draft_id": s["drafts"][0]["id"], "agent_id": "a"},
        )
        assert ok.status_code == 201  # the refused decision was not stored
    kb.close()

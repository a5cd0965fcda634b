"""Candidate similar questions from approved replies, over real HTTP and from the CLI."""

from __future__ import annotations

from collections.abc import Iterator
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
from suggest.settings import AppSettings, Settings
from suggest.storage import SuggestStore
from tests.helpers_server import WORKING_HOURS, serve


class Api:
    def __init__(self, base: str, keys: dict[str, str]) -> None:
        self.base, self.keys = base, keys

    def __call__(self, method: str, path: str, role: str = "editor", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kw)

    def answer_and_decide(self, message: str, conversation: str, action: str = "approve") -> dict[str, Any]:
        """Ask for drafts as an agent and approve (or edit) the first answer draft."""
        sug = self(
            "POST",
            "/v1/suggestions",
            "agent",
            json={"conversation_id": conversation, "customer_message": message},
        )
        assert sug.status_code == 201, sug.text
        body = sug.json()
        draft = next(d for d in body["drafts"] if d["kind"] == "answer")
        decision: dict[str, Any] = {"action": action, "draft_id": draft["id"], "agent_id": "a-1"}
        if action == "edit":
            decision["final_text"] = draft["text"] + "请问还有其他问题吗？"
        r = self("POST", f"/v1/suggestions/{body['id']}/decision", "agent", json=decision)
        assert r.status_code == 201, r.text
        return dict(body)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    demo_model_dir: Path,
) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("candidates")
    ks = KnowledgeSettings(
        database_url=f"sqlite:///{root / 'kb.db'}", index_dir=root / "index", auto_tune_after=0
    )
    store = Store(ks.database_url)
    store.import_snippets(demo_snippets, actor="t")
    keys_store = SuggestStore(store.engine)
    keys = {
        role: keys_store.create_key(role, f"test {role}")[0]
        for role in ("agent", "editor", "evaluator", "admin")
    }
    kb = KnowledgeBase(ks, store=store, embedder=SentenceTransformerEmbedder(str(demo_model_dir)))
    with serve(
        Settings(knowledge=ks, app=AppSettings(key_cache_s=0)), kb, clock=FixedClock(WORKING_HOURS)
    ) as running:
        yield Api(running.base, keys)
    kb.close()


def _pending(api: Api, role: str = "editor") -> list[dict[str, Any]]:
    r = api("GET", "/v1/knowledge/candidates", role)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] >= len(body["items"])
    return list(body["items"])


def test_approved_answer_becomes_a_candidate_and_accepting_indexes_it(api: Api) -> None:
    message = "请问退货要怎么申请呢"
    body = api.answer_and_decide(message, "cand-1")
    cited = next(d for d in body["drafts"] if d["kind"] == "answer")["citations"][0]["snippet_id"]
    cand = next(c for c in _pending(api) if c["text"] == message)
    assert cand["snippet_id"] == cited and cand["status"] == "pending" and cand["suggestion_id"] == body["id"]
    assert cand["conversation_id"] == "cand-1" and cand["snippet_question"] and cand["decided_at"] is None
    # The same message approved again does not make a second candidate.
    api.answer_and_decide(message, "cand-1b")
    assert sum(1 for c in _pending(api) if c["text"] == message) == 1
    # Evaluators may read, agents may not; only editors and admins decide.
    assert api("GET", "/v1/knowledge/candidates", "evaluator").status_code == 200
    assert api("GET", "/v1/knowledge/candidates", "agent").status_code == 403
    assert (
        api(
            "POST", "/v1/knowledge/candidates", "agent", json={"id": cand["id"], "action": "accept"}
        ).status_code
        == 403
    )
    version = api("GET", f"/v1/knowledge/snippets/{cited}").json()["version"]

    r = api(
        "POST", "/v1/knowledge/candidates", json={"id": cand["id"], "action": "accept", "reason": "好问法"}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert (
        done["status"] == "accepted"
        and done["decided_by"] == "key:test editor"
        and done["reason"] == "好问法"
    )
    snippet = api("GET", f"/v1/knowledge/snippets/{cited}").json()
    assert message in snippet["similar_questions"] and snippet["version"] == version + 1
    hits = api("POST", "/v1/knowledge/search", json={"query": message, "k": 1}).json()["hits"]
    assert hits[0]["snippet_id"] == cited and hits[0]["matched_text"] == message  # indexed at once
    assert all(c["id"] != cand["id"] for c in _pending(api))
    accepted = api("GET", "/v1/knowledge/candidates?status=accepted").json()["items"]
    assert accepted[0]["id"] == cand["id"]
    again = api("POST", "/v1/knowledge/candidates", json={"id": cand["id"], "action": "reject"})
    assert again.status_code == 409 and again.json()["error"]["message_zh"]


def test_edit_makes_a_candidate_reject_does_not_and_rejecting_keeps_the_snippet(api: Api) -> None:
    api.answer_and_decide("发票怎么开啊，要电子的", "cand-2", action="edit")
    cand = next(c for c in _pending(api) if c["text"] == "发票怎么开啊，要电子的")
    before = api("GET", f"/v1/knowledge/snippets/{cand['snippet_id']}").json()
    r = api(
        "POST", "/v1/knowledge/candidates", json={"id": cand["id"], "action": "reject", "reason": "太口语"}
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    after = api("GET", f"/v1/knowledge/snippets/{cand['snippet_id']}").json()
    assert after["version"] == before["version"]
    sug = api(
        "POST",
        "/v1/suggestions",
        "agent",
        json={"conversation_id": "cand-3", "customer_message": "会员积分能抵现金吗"},
    ).json()
    api(
        "POST",
        f"/v1/suggestions/{sug['id']}/decision",
        "agent",
        json={"action": "reject", "agent_id": "a", "reason": "不对"},
    )
    assert all(c["text"] != "会员积分能抵现金吗" for c in _pending(api))


def test_editor_adds_a_similar_question_directly(api: Api) -> None:
    r = api(
        "POST", "/v1/knowledge/candidates", json={"snippet_id": "faq-returns-process", "text": "退货的步骤"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted" and r.json()["snippet_id"] == "faq-returns-process"
    snippet = api("GET", "/v1/knowledge/snippets/faq-returns-process").json()
    assert "退货的步骤" in snippet["similar_questions"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"id": 999999, "action": "accept"}, 404),
        ({"id": 1, "action": "maybe"}, 422),
        ({"id": "x", "action": "accept"}, 422),
        ({"id": 1, "action": "accept", "colour": "red"}, 422),
        ({"snippet_id": "nope", "text": "x"}, 404),
        ({"snippet_id": "faq-returns-process", "text": "  "}, 422),
        ({"text": "x"}, 422),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(api: Api, body: dict[str, Any], status: int) -> None:
    before = api("GET", "/v1/knowledge/candidates?status=accepted").json()["total"]
    r = api("POST", "/v1/knowledge/candidates", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message_zh"] and err["message_en"]
    assert api("GET", "/v1/knowledge/candidates?status=accepted").json()["total"] == before
    assert api("GET", "/v1/knowledge/candidates?status=bogus").status_code == 422


def test_cli_lists_accepts_and_rejects(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    demo_snippets: list[Snippet],
) -> None:
    from datetime import UTC, datetime

    from knowledge.candidates import record_candidate
    from knowledge.store import writing
    from suggest.cli import main

    url = f"sqlite:///{tmp_path / 'kb.db'}"
    monkeypatch.setenv("KEFU_DATABASE_URL", url)
    monkeypatch.setenv("KEFU_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("KEFU_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("KEFU_EMBEDDING_MODEL", "")
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    with writing(store.engine) as conn:
        ids = [
            record_candidate(
                conn,
                snippet_id="faq-returns-process",
                text=t,
                suggestion_id="s",
                conversation_id="c",
                at=datetime.now(UTC),
            )
            for t in ("退货咋弄", "退货流程是怎样的？", "退货咋弄")
        ]
    store.close()
    assert ids[0] is not None and ids[1] is None and ids[2] is None  # known question, duplicate
    assert main(["kb", "candidates"]) == 0
    out = capsys.readouterr().out
    assert "退货咋弄" in out and "(1 / 1 pending)" in out
    assert main(["kb", "candidates", "--accept", str(ids[0])]) == 0
    assert "accepted" in capsys.readouterr().out
    assert main(["kb", "show", "faq-returns-process"]) == 0
    assert "退货咋弄" in capsys.readouterr().out
    assert main(["kb", "candidates", "--reject", str(ids[0])]) == 1
    assert "already decided" in capsys.readouterr().err
    assert main(["kb", "candidates", "--accept", "4242"]) == 1
    assert "does not exist" in capsys.readouterr().err

"""The pages' server side over real HTTP (no browser): shells, keys and roles on the fragments, the norms
check endpoint, the evaluation report and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.duplicates import import_snippets
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from tests.web_env import WebEnv, web_env

HTMX = Path(__file__).resolve().parents[1] / "suggest" / "web" / "static" / "htmx.min.js"


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("web-http"), demo_snippets, minilm) as e:
        yield e


def test_shells_and_static_files_need_no_key_and_carry_no_data(env: WebEnv) -> None:
    for path in ("/console", "/kb", "/records"):
        r = env.call("GET", path, role=None)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert 'src="/static/htmx.min.js"' in r.text and "http://" not in r.text.replace(env.base, "")
        assert "faq-returns" not in r.text and "退货流程" not in r.text  # no knowledge or records in a shell
    r = env.call("GET", "/", role=None, follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/console"
    js = env.call("GET", "/static/htmx.min.js", role=None)
    assert js.status_code == 200 and js.content == HTMX.read_bytes()
    assert env.call("GET", "/static/kefu.js", role=None).status_code == 200
    # English when the language cookie says so.
    en = env.call("GET", "/kb", role=None, cookies={"kefu_lang": "en"})
    assert '<html lang="en">' in en.text and "Hit testing" in en.text


def test_fragments_need_a_key_and_the_right_role(env: WebEnv) -> None:
    r = env.call("GET", "/ui/console/conversations", role=None)
    assert r.status_code == 401 and r.headers["hx-retarget"] == "#flash" and "API 密钥" in r.text
    r = env.call("GET", "/ui/console/conversations", role=None, headers={"Authorization": "Bearer kefu_x_y"})
    assert r.status_code == 401
    allowed = {
        ("GET", "/ui/console/conversations"): {"agent", "admin"},
        ("GET", "/ui/console/queues"): {"agent", "editor", "admin"},
        ("GET", "/ui/kb/new"): {"editor", "admin"},
        ("GET", "/ui/kb/snippets?q=faq-shipping-fee"): {"agent", "editor", "evaluator", "admin"},
        ("GET", "/ui/records/"): {"agent", "evaluator", "admin"},
        ("GET", "/ui/kb/candidates"): {"editor", "evaluator", "admin"},
        ("GET", "/ui/kb/gaps"): {"editor", "evaluator", "admin"},
    }
    for (method, path), roles in allowed.items():
        for role in ("agent", "editor", "evaluator", "admin"):
            r = env.call(method, path, role)
            assert r.status_code == (200 if role in roles else 403), (path, role, r.status_code)
    assert env.call("GET", "/ui/whoami", "evaluator").json() == {"role": "evaluator", "name": "evaluator-1"}
    # Evaluators read candidates and gaps; only editors and admins decide them.
    assert env.call("POST", "/ui/kb/candidates/1", "evaluator", data={"action": "accept"}).status_code == 403
    assert (
        env.call(
            "POST", "/ui/kb/gaps/gap-1/snippet", "evaluator", data={"id": "x", "question": "q", "answer": "a"}
        ).status_code
        == 403
    )
    assert env.call("POST", "/ui/kb/candidates/1", "editor", data={"action": "maybe"}).status_code == 422
    assert env.call("GET", "/ui/kb/candidates?status=maybe", "editor").status_code == 422
    # Errors are shown in the page's language.
    r = env.call("GET", "/ui/kb/new", "agent", cookies={"kefu_lang": "en"})
    assert r.status_code == 403 and "may not do this" in r.text


def test_norms_check_endpoint(env: WebEnv) -> None:
    r = env.call("POST", "/v1/norms/check", "agent", json={"text": "不知道哦"})
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and {"vague", "filler"} <= {v["rule_id"] for v in body["violations"]}
    assert body["errors"] + body["warnings"] == len(body["violations"])
    good = env.call("POST", "/v1/norms/check", "evaluator", json={"text": "您好，退货请在订单页申请售后。"})
    assert good.json() == {"ok": True, "errors": 0, "warnings": 0, "violations": []}
    # The first reply must greet; a customer kept waiting must get an apology.
    first = env.call(
        "POST", "/v1/norms/check", "agent", json={"text": "退货请在订单页申请售后。", "first_reply": True}
    ).json()
    assert not first["ok"]
    sug = env.call(
        "POST",
        "/v1/suggestions",
        "agent",
        json={"conversation_id": "http-norms", "customer_message": "怎么退货"},
    ).json()
    by_sug = env.call(
        "POST",
        "/v1/norms/check",
        "agent",
        json={"text": "退货请在订单页申请售后。", "suggestion_id": sug["id"]},
    ).json()
    assert by_sug["violations"] == first["violations"]  # that suggestion is the conversation's first reply
    assert env.call("POST", "/v1/norms/check", "agent", json={"text": "x" * 4001}).status_code == 422
    assert (
        env.call("POST", "/v1/norms/check", "agent", json={"text": "好", "suggestion_id": "nope"}).status_code
        == 404
    )
    assert env.call("POST", "/v1/norms/check", None, json={"text": "好"}).status_code == 401
    # The console's live badge uses the same check.
    badge = env.call(
        "POST", "/ui/console/check", "agent", data={"final_text": "不知道哦", "suggestion_id": sug["id"]}
    )
    assert badge.status_code == 200 and 'data-norms="error"' in badge.text


def test_bad_input_changes_nothing_and_says_why(env: WebEnv) -> None:
    r = env.call("POST", "/ui/console/decide", "agent", data={"suggestion_id": "nope", "action": "approve"})
    assert r.status_code == 404 and "nope" in r.text
    r = env.call("POST", "/ui/console/decide", "agent", data={"suggestion_id": "nope", "action": "sell"})
    assert r.status_code == 422
    r = env.call("POST", "/ui/console/messages", "agent", data={"message": "   "})
    assert r.status_code == 422 and "不能为空" in r.text
    assert env.call("GET", "/ui/records/?from=2026-11-27&to=2026-11-26", "agent").status_code == 422
    assert env.call("GET", "/ui/records/?from=yesterday", "agent").status_code == 422
    before = env.kb.store.revision()
    r = env.call("POST", "/ui/kb/snippets", "editor", data={"id": "bad id!", "question": "", "answer": "x"})
    assert r.status_code == 422 and "没有保存" in r.text
    r = env.call("POST", "/ui/kb/search", "agent", data={"query": " "})
    assert r.status_code == 422
    r = env.call("POST", "/ui/kb/import", "editor", files={"data": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 422
    assert env.kb.store.revision() == before


def test_evaluation_report_is_shown_when_present(
    env: WebEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_EVAL_DIR", str(tmp_path))
    r = env.call("GET", "/ui/records/eval", "evaluator")
    assert r.status_code == 200 and 'data-eval="none"' in r.text and "make eval" in r.text
    assert env.call("GET", "/ui/records/eval/report.html", "evaluator").status_code == 404
    report = {
        "kind": "drafts",
        "title": "kefu eval drafts",
        "created_at": "2026-11-26T02:00:00+00:00",
        "machine": "2 cores",
        "metrics": {
            "hit@1": {"value": 0.9123456, "reason": "93/101", "delta": 0.02, "higher_is_better": True},
            "latency_ms": {"value": 41.27, "reason": "p50", "delta": 3.5, "higher_is_better": False},
            "norms.greeting": {"value": 1.0, "reason": "101/101"},
            "groundedness": {"value": None, "reason": "no case applies"},
        },
        "baseline": {"path": "old/report.json"},
        "figures": {"rules": [{"rule": "greeting", "value": 1.0}]},
        "cases": [{"id": f"c{i}", "text": "x" * 500} for i in range(101)],
        "failing": [],
    }
    (tmp_path / "report.json").write_text(json.dumps(report), "utf-8")
    (tmp_path / "report.html").write_text("<h1>评测报告</h1><script>alert(1)</script>", "utf-8")
    r = env.call("GET", "/ui/records/eval", "agent")
    assert 'data-eval="found"' in r.text
    # The headline metrics, named and formatted, with their change; not the report's flattened keys.
    assert "首位命中" in r.text and "0.912" in r.text and "+0.020" in r.text
    assert 'data-metric="latency_ms"' in r.text and "41.3" in r.text and "+3.5" in r.text
    assert r.text.index('data-metric="hit@1"') < r.text.index('data-metric="norms.greeting"')
    assert "n/a" in r.text  # groundedness did not apply: n/a, never 0
    assert "101 个用例" in r.text and "11-26 10:00" in r.text  # run at 02:00 UTC = 10:00 Beijing
    assert "cases.0" not in r.text and "xxxxx" not in r.text
    en = env.call("GET", "/ui/records/eval", "agent", cookies={"kefu_lang": "en"})
    assert "hit@1" in en.text and "首位命中" not in en.text and "101 cases" in en.text
    assert "open-report" in r.text
    html = env.call("GET", "/ui/records/eval/report.html", "evaluator")
    assert html.status_code == 200 and "评测报告" in html.text
    assert html.headers["content-security-policy"] == "sandbox"  # its scripts never run with the page's key
    assert env.call("GET", "/ui/records/eval", "editor").status_code == 403
    # A report.json of another shape is named as such, and the full report can still be opened.
    (tmp_path / "report.json").write_text(json.dumps({"retrieval": {"recall@5": 0.9}}), "utf-8")
    r = env.call("GET", "/ui/records/eval", "agent")
    assert 'data-eval="not-a-report"' in r.text and "open-report" in r.text and "recall@5" not in r.text


def test_keys_demo_prints_the_console_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from suggest.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEFU_DEMO_KEY_FILE", raising=False)
    (tmp_path / "db").mkdir()
    monkeypatch.setenv("KEFU_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'kefu.db'}")
    assert main(["keys", "demo", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    # Beside the configured database, not ./var whatever the database is.
    assert not (tmp_path / "var").exists()
    key = (tmp_path / "db" / "demo-admin.key").read_text("utf-8").strip()
    assert str(tmp_path / "db" / "demo-admin.key") in out
    assert f"http://127.0.0.1:8123/console#key={key}" in out
    assert "http://127.0.0.1:8123/kb" in out and "http://127.0.0.1:8123/records" in out
    assert main(["keys", "demo", "--port", "8123"]) == 0  # the same key the second time
    assert f"/console#key={key}" in capsys.readouterr().out


def test_the_demo_key_file_belongs_to_its_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from suggest.keys_cli import demo_key_file

    monkeypatch.delenv("KEFU_DEMO_KEY_FILE", raising=False)
    assert demo_key_file("sqlite:///var/kefu.db") == Path("var/demo-admin.key")  # make serve's default
    assert demo_key_file("sqlite:////srv/kefu/prod.db") == Path("/srv/kefu/demo-admin.key")
    pg = demo_key_file("postgresql+psycopg://root:secret@127.0.0.1:5432/kefu")
    assert pg == Path("var/demo-admin-127.0.0.1-5432-kefu.key") and "secret" not in str(pg)
    assert demo_key_file("postgresql+psycopg://root@db1/kefu") != demo_key_file(
        "postgresql+psycopg://root@db2/kefu"
    )
    monkeypatch.setenv("KEFU_DEMO_KEY_FILE", "/tmp/x.key")
    assert demo_key_file("sqlite:///var/kefu.db") == Path("/tmp/x.key")


def test_the_import_api_names_new_snippets_that_repeat_published_ones(env: WebEnv) -> None:
    published = env.kb.store.get("faq-shipping-fee")
    rows = [
        {
            "id": "faq-api-twin",
            "question": "新的问法",
            "similar_questions": [published.question.rstrip("？?")],
            "answer": "另写的答案。",
        },
        {"id": "faq-api-alone", "question": "完全不同的新问题？", "answer": "完全不同的答案。"},
    ]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    r = env.call("POST", "/v1/knowledge/import", "editor", files={"data": ("twins.jsonl", body.encode())})
    assert r.status_code == 200 and r.json()["created"] == 2  # warned, not refused
    assert r.json()["duplicates"] == [
        {
            "snippet_id": "faq-api-twin",
            "field": "similar_questions",
            "text": published.question.rstrip("？?"),
            "published_id": "faq-shipping-fee",
            "published_field": "question",
        }
    ]
    # Importing the same file again creates nothing, so it warns about nothing.
    r = env.call("POST", "/v1/knowledge/import", "editor", files={"data": ("twins.jsonl", body.encode())})
    assert r.status_code == 200 and r.json()["unchanged"] == 2 and r.json()["duplicates"] == []


def test_a_big_import_compares_with_every_published_snippet(env: WebEnv) -> None:
    """Past SEARCHED_TEXTS new questions the published snippets are listed instead of searched: the same
    warnings either way."""
    shipping = env.kb.store.get("faq-shipping-time")
    rows = [
        Snippet(id=f"faq-big-{i}", question=q, answer=f"第{i}条的答案。", status="draft")
        for i, q in enumerate([shipping.similar_questions[0], "一个从没有人问过的问题"])
    ]
    by_search = published_duplicates_of(env, rows, searched_texts=200)
    for s in rows:
        env.kb.store.delete(s.id, expected_version=1, actor="test")
    by_listing = published_duplicates_of(env, rows, searched_texts=0)
    assert by_search == by_listing == [("faq-big-0", "question", "faq-shipping-time", "similar_questions")]


def published_duplicates_of(
    env: WebEnv, rows: list[Snippet], *, searched_texts: int
) -> list[tuple[str, ...]]:
    report, found = import_snippets(
        env.kb.store, env.kb.retriever, rows, actor="test", searched_texts=searched_texts
    )
    assert sorted(report.created) == sorted(s.id for s in rows)
    return [(d.snippet_id, d.field, d.published_id, d.published_field) for d in found]

"""Sign-in and roles in headless Chromium: what a role may not do is hidden in the page and refused by the
server; the key lives in the tab's session only; the pages switch to English."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from tests.web_env import WebEnv, screenshot, web_env

pytestmark = pytest.mark.browser

FETCH = """async ([path, body, key]) => {
  const r = await fetch(path, {method: 'POST', headers: {'Authorization': 'Bearer ' + key,
    'Content-Type': 'application/x-www-form-urlencoded'}, body});
  return [r.status, await r.text()];
}"""


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("web-roles"), demo_snippets, minilm) as e:
        yield e


def test_an_agent_is_refused_the_editors_actions(page: Any, env: WebEnv) -> None:
    env.sign_in(page, "agent", "/kb")
    # Hidden in the page: the import tab, candidates and gaps, new snippet, save/publish, "as similar".
    for sel in (
        ".tabs [data-tab='tab-import']",
        ".tabs [data-tab='tab-candidates']",
        ".tabs [data-tab='tab-gaps']",
        "#tab-snippets button:has-text('新建条目')",
    ):
        assert page.locator(sel).is_hidden(), sel
    page.locator(".searchbar input[name=query]").fill("怎么退货")
    page.locator(".searchbar button[type=submit]").click()
    page.wait_for_selector("#search-results tr[data-hit]")
    assert page.locator("#search-results button", has_text="加为相似问").count() == 0
    page.locator("#search-results a.open-snippet").first.click()
    page.wait_for_selector("#snippet-editor [data-editing]")
    assert page.locator("#snippet-editor textarea[name=answer]").is_disabled()  # inside a disabled fieldset
    assert (
        page.locator(
            "#snippet-editor .save-btn, #snippet-editor .publish-btn, #snippet-editor .archive-btn"
        ).count()
        == 0
    )
    sid = page.locator("#snippet-editor [data-editing]").get_attribute("data-editing")
    before = env.kb.store.get(sid)

    # Refused by the server, whatever the page shows: the fragments and the JSON API answer 403.
    key = env.keys["agent"]
    for path, body in (
        (f"/ui/kb/snippets/{sid}", f"id={sid}&question=x&answer=y&version={before.version}"),
        (f"/ui/kb/snippets/{sid}/status", f"status=archived&version={before.version}"),
        (f"/ui/kb/snippets/{sid}/similar", f"text=agent-was-here&version={before.version}"),
        ("/ui/kb/snippets", "id=agent-new&question=x&answer=y"),
    ):
        status, text = page.evaluate(FETCH, [path, body, key])
        assert status == 403, (path, status, text)
        assert "无权" in text
    status = page.evaluate(
        """async ([key]) => (await fetch('/v1/knowledge/snippets', {method: 'POST', headers: {
             'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'},
             body: JSON.stringify({id: 'agent-new', question: 'x', answer: 'y'})})).status""",
        [key],
    )
    assert status == 403
    assert env.kb.store.get(sid) == before and env.kb.store.find("agent-new") is None

    # An htmx request the page did not offer is refused and the refusal is shown in the page.
    page.evaluate(
        "([sid]) => htmx.ajax('POST', '/ui/kb/snippets/' + sid + '/status', "
        "{target: '#snippet-editor', values: {status: 'archived', version: 1}})",
        [sid],
    )
    page.wait_for_selector("#flash .flash.error[data-status='403']")
    assert env.kb.store.get(sid).status == before.status


def test_an_evaluator_reads_records_but_not_the_console(
    page: Any, env: WebEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_EVAL_DIR", str(tmp_path))
    env.sign_in(page, "evaluator", "/console")
    page.wait_for_selector("#app .empty", state="visible")
    assert "不能使用" in page.locator("#app").inner_text()
    assert page.locator("header nav a[href='/console']").is_hidden()
    status, _ = page.evaluate(FETCH, ["/ui/console/messages", "message=hi", env.keys["evaluator"]])
    assert status == 403
    page.goto(f"{env.base}/records")
    page.wait_for_selector("#records-table [data-records]")
    page.wait_for_selector("#eval [data-eval='none']")
    # After `make eval`: its figures, and the full report in a sandboxed frame.
    report = {"kind": "drafts", "metrics": {"hit@5": {"value": 0.91, "reason": "91/100"}}}
    (tmp_path / "report.json").write_text(json.dumps(report), "utf-8")
    (tmp_path / "report.html").write_text("<h1>评测报告</h1><p id='x'>recall@5 0.91</p>", "utf-8")
    page.reload()
    page.wait_for_selector("#eval [data-eval='found']")
    assert "前五命中" in page.locator("#eval").inner_text() and "0.910" in page.locator("#eval").inner_text()
    page.locator("#open-report").click()
    page.wait_for_selector("#eval-frame:not([hidden])")
    assert page.frame_locator("#eval-frame").locator("#x").inner_text() == "recall@5 0.91"


def test_sign_in_keeps_the_key_in_the_tab_session_only(page: Any, env: WebEnv) -> None:
    page.goto(f"{env.base}/console")
    page.wait_for_selector("#signin:not([hidden])")
    screenshot(page, "sign-in")
    page.locator("#key").fill("kefu_nothere_wrong")
    page.locator("#signin-form button[type=submit]").click()
    page.wait_for_function("() => document.querySelector('#signin-error').textContent.length > 0")
    assert "无效" in page.locator("#signin-error").inner_text()
    assert page.evaluate("sessionStorage.getItem('kefu_key')") is None

    page.locator("#key").fill(env.keys["agent"])
    page.locator("#signin-form button[type=submit]").click()
    page.wait_for_selector("#who:not([hidden])")
    assert "agent-1" in page.locator("#who").inner_text()
    assert env.keys["agent"] not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length") == 0
    page.reload()  # the same tab keeps its session
    page.wait_for_selector("#conv-list .side-title")
    other = page.context.new_page()  # a new tab does not share it
    other.goto(f"{env.base}/console")
    other.wait_for_selector("#signin:not([hidden])")
    other.close()
    page.locator("#signout").click()
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('kefu_key')") is None


def test_the_pages_switch_to_english(page: Any, env: WebEnv) -> None:
    env.sign_in(page, "admin", "/console")
    page.wait_for_selector("#conv-list .side-title")
    page.locator("#lang").click()
    page.wait_for_selector("#conv-list .side-title:has-text('Open conversations')")
    assert page.locator("header nav a[href='/kb']").inner_text() == "Knowledge base"
    assert page.locator("html").get_attribute("lang") == "en"
    page.locator("#lang").click()  # and back
    page.wait_for_selector("#conv-list .side-title:has-text('进行中的会话')")


def test_an_editor_gets_the_escalations_tab_of_the_console_and_nothing_it_may_not_use(
    page: Any, env: WebEnv
) -> None:
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/ui/" in r.url else None)
    env.sign_in(page, "editor", "/console")
    page.wait_for_selector("#queues section.card")
    assert page.locator(".tabs [data-tab='tab-conv']").is_hidden()
    assert page.locator("#tab-conv").is_hidden() and page.locator("#tab-queues").is_visible()
    page.wait_for_selector("#autoreply .badge")
    assert 403 not in statuses and page.locator("#flash .flash").count() == 0

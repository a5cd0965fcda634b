"""The knowledge editor in headless Chromium: hit testing, similar questions, create/publish/archive,
revision history with a diff, import errors by line, and the candidates and gaps panels."""

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


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("web-kb"), demo_snippets, minilm) as e:
        yield e


def search(page: Any, query: str) -> Any:
    page.locator(".tabs [data-tab='tab-search']").click()
    page.evaluate("() => document.querySelector('#search-results').replaceChildren()")
    page.locator(".searchbar input[name=query]").fill(query)
    page.locator(".searchbar button[type=submit]").click()
    page.wait_for_selector(f"#search-results [data-query='{query}']")
    return page.locator("#search-results tr[data-hit]")


def open_snippet(page: Any, snippet_id: str) -> None:
    page.locator(".tabs [data-tab='tab-snippets']").click()
    page.locator("#tab-snippets input[name=q]").fill(snippet_id)
    page.locator("#tab-snippets .filters button[type=submit]").click()
    page.locator(f"#snippet-list a[data-snippet='{snippet_id}']").click()
    page.wait_for_selector(f"#snippet-editor [data-editing='{snippet_id}']")


def test_editor_adds_a_similar_question_and_the_search_now_hits_it(page: Any, env: WebEnv) -> None:
    query, target = "蓝莓计划怎么参加", "faq-shipping-fee"
    env.sign_in(page, "editor", "/kb")
    hits = search(page, query)
    assert hits.count() > 0 and hits.first.get_attribute("data-hit") != target
    first = hits.first
    assert first.locator("[data-matched]").inner_text() != query
    screenshot(page, "kb-search")

    open_snippet(page, target)
    similar = page.locator("#snippet-editor textarea[name=similar_questions]")
    before = similar.input_value().splitlines()
    similar.fill("\n".join([*before, query]))
    page.locator("#snippet-editor .save-btn").click()
    page.wait_for_selector("#snippet-editor .flash.ok")
    assert page.locator("#snippet-editor [data-editing]").get_attribute("data-version") == "2"
    screenshot(page, "kb-editor")

    # The revision history shows the added similar question as an insertion.
    page.locator("#snippet-editor button", has_text="修订历史").click()
    page.wait_for_selector("#snippet-history li[data-version='2']")
    assert page.locator("#snippet-history li[data-version='2'] ins").inner_text() == query

    hits = search(page, query)
    top = hits.first
    assert top.get_attribute("data-hit") == target
    assert top.locator("[data-matched]").inner_text() == query
    assert "相似问" in top.locator("td.matched").inner_text()
    assert top.locator(".conf-high").count() == 1

    # The hit-testing table adds a tested query to a hit in one click, and the results stay on screen.
    query2 = "纸质凭据能邮寄吗"
    hits = search(page, query2)
    shown = hits.count()
    row = page.locator("#search-results tr[data-hit='faq-invoice-electronic']")
    assert row.locator("[data-matched]").inner_text() != query2
    row.locator("button", has_text="加为相似问").click()
    row.locator("[data-similar-added='faq-invoice-electronic']").wait_for()
    assert page.locator("#tab-search").is_visible() and hits.count() == shown
    assert query2 in env.kb.store.get("faq-invoice-electronic").similar_questions
    # The scores read on one scale: confidence 0-1, the rank score relative to the first hit.
    confidences = [
        float(c) for c in hits.locator("td.conf").evaluate_all("els => els.map(e => e.dataset.confidence)")
    ]
    assert all(0 <= c <= 1 for c in confidences)
    assert hits.first.locator("td.rank").inner_text() == "100%"
    hits = search(page, query2)
    assert hits.first.get_attribute("data-hit") == "faq-invoice-electronic"
    assert hits.first.locator("[data-matched]").inner_text() == query2


def test_create_publish_archive_and_the_history_diff(page: Any, env: WebEnv) -> None:
    env.sign_in(page, "editor", "/kb")
    page.locator(".tabs [data-tab='tab-snippets']").click()
    page.locator("#tab-snippets button", has_text="新建条目").click()
    form = page.locator("#snippet-editor form")
    form.wait_for()
    form.locator("input[name=id]").fill("faq-web-gift-wrap")
    form.locator("input[name=question]").fill("可以礼品包装吗？")
    form.locator("textarea[name=similar_questions]").fill("能包装成礼物吗\n有礼盒吗")
    form.locator("textarea[name=answer]").fill("可以，下单时备注礼品包装即可，免费。")
    form.locator("input[name=tags]").fill("礼品, 包装")
    page.locator("#snippet-editor .save-btn").click()
    page.wait_for_selector("#snippet-editor [data-editing='faq-web-gift-wrap'] .flash.ok")
    assert env.kb.store.get("faq-web-gift-wrap").status == "draft"

    page.locator("#snippet-editor textarea[name=answer]").fill("可以，下单时备注礼品包装即可，收费5元。")
    page.locator("#snippet-editor .save-btn").click()
    page.wait_for_selector("#snippet-editor [data-version='2'] .flash.ok")
    page.locator("#snippet-editor .publish-btn").click()
    page.wait_for_selector("#snippet-editor [data-version='3'] .flash.ok")
    assert env.kb.store.get("faq-web-gift-wrap").status == "published"
    page.locator("#snippet-editor .archive-btn").click()
    page.wait_for_selector("#snippet-editor [data-version='4'] .flash.ok")
    assert env.kb.store.get("faq-web-gift-wrap").status == "archived"

    page.locator("#snippet-editor button", has_text="修订历史").click()
    history = page.locator("#snippet-history")
    history.locator("li[data-version='4']").wait_for()
    assert [history.locator(f"li[data-version='{v}']").count() for v in (1, 2, 3, 4)] == [1, 1, 1, 1]
    answer_diff = history.locator("li[data-version='2'] .difftext")
    assert answer_diff.locator("del").inner_text() == "免费"
    assert answer_diff.locator("ins").inner_text() == "收费5元"
    assert "已归档" in history.locator("li[data-version='4'] ins").inner_text()  # labels, not codes
    assert "status" not in history.locator("li[data-version='4']").inner_text()
    assert "key:" not in history.inner_text() and "editor-1" in history.inner_text()  # one display name
    history.scroll_into_view_if_needed()
    screenshot(page, "kb-history")

    # A stale form (someone saved since it was read) is refused, and nothing changes.
    page.evaluate("() => { document.querySelector('#snippet-editor input[name=version]').value = '1'; }")
    page.locator("#snippet-editor textarea[name=answer]").fill("被覆盖的答案")
    page.locator("#snippet-editor .save-btn").click()
    page.wait_for_selector("#flash .flash.error[data-status='412']")
    assert env.kb.store.get("faq-web-gift-wrap").answer == "可以，下单时备注礼品包装即可，收费5元。"


def test_import_shows_every_problem_by_line_and_imports_nothing(
    page: Any, env: WebEnv, tmp_path: Path
) -> None:
    good = {
        "id": "faq-web-import-ok",
        "question": "可以开箱验货吗？",
        "answer": "可以，签收前请当面开箱检查。",
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps(good, ensure_ascii=False),
                json.dumps(
                    {"id": "faq-web-import-bad", "question": "类型不对", "kind": "gossip"}, ensure_ascii=False
                ),
                "{not json",
            ]
        )
        + "\n",
        "utf-8",
    )
    env.sign_in(page, "editor", "/kb")
    page.locator(".tabs [data-tab='tab-import']").click()
    page.locator("#tab-import input[type=file]").set_input_files(str(bad))
    page.locator("#tab-import button[type=submit]").click()
    page.wait_for_selector("#import-result [data-import='failed']")
    locations = page.locator("#import-result td.loc").all_inner_texts()
    assert "第 2 行" in locations and "第 3 行" in locations  # in the page's language
    assert "类型" in page.locator("#import-result table").inner_text()
    assert env.kb.store.find("faq-web-import-ok") is None  # any error imports nothing
    screenshot(page, "kb-import")

    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(good, ensure_ascii=False) + "\n", "utf-8")
    page.locator("#tab-import input[type=file]").set_input_files(str(ok))
    page.locator("#tab-import button[type=submit]").click()
    page.wait_for_selector("#import-result [data-import='ok']")
    assert env.kb.store.get("faq-web-import-ok").answer == good["answer"]


def test_import_warns_when_a_new_snippet_repeats_a_published_one(
    page: Any, env: WebEnv, tmp_path: Path
) -> None:
    published = env.kb.store.get("faq-returns-process")
    assert published.status == "published"
    twin = {"id": "faq-web-twin", "question": published.question + " ", "answer": "另一种说法的答案。"}
    fresh = {"id": "faq-web-fresh", "question": "网页导入的全新问题？", "answer": "全新的答案。"}
    f = tmp_path / "twins.jsonl"
    f.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in (twin, fresh)) + "\n", "utf-8")
    env.sign_in(page, "editor", "/kb")
    page.locator(".tabs [data-tab='tab-import']").click()
    page.locator("#tab-import input[type=file]").set_input_files(str(f))
    page.locator("#tab-import button[type=submit]").click()
    page.wait_for_selector("#import-result [data-import='ok']")
    warning = page.locator("#import-result [data-import-duplicates]")
    assert warning.get_attribute("data-import-duplicates") == "1"  # a warning, naming which one
    item = warning.locator("li[data-duplicate='faq-web-twin']")
    assert (
        item.get_attribute("data-of") == "faq-returns-process" and "faq-returns-process" in item.inner_text()
    )
    assert env.kb.store.get("faq-web-twin").question.strip() == published.question  # imported all the same
    assert env.kb.store.find("faq-web-fresh") is not None


def test_candidates_and_gaps_are_decided_in_the_page(page: Any, env: WebEnv) -> None:
    """Candidates from an approved reply are accepted in the page; a gap becomes a snippet in one step."""
    text = "网页候选测试退货怎么弄"
    r = env.call(
        "POST", "/v1/suggestions", "agent", json={"conversation_id": "cand-web", "customer_message": text}
    )
    assert r.status_code == 201
    sug = r.json()
    draft = next(d for d in sug["drafts"] if d["citations"])
    r = env.call(
        "POST",
        f"/v1/suggestions/{sug['id']}/decision",
        "agent",
        json={"action": "approve", "draft_id": draft["id"], "agent_id": "agent-1"},
    )
    assert r.status_code in (200, 201), r.text
    target = draft["citations"][0]["snippet_id"]
    for i in range(2):
        r = env.call(
            "POST",
            "/v1/suggestions",
            "agent",
            json={"conversation_id": f"gap-web-{i}", "customer_message": "可以去你们仓库自提吗"},
        )
        assert r.status_code == 201

    env.sign_in(page, "editor", "/kb")
    page.locator(".tabs [data-tab='tab-candidates']").click()
    item = page.locator("#cand-list li[data-candidate-id]", has_text=text)
    item.wait_for()
    item.locator(".accept-btn").click()
    page.locator("#cand-list .flash.ok", has_text=text).wait_for()
    assert text in env.kb.store.get(target).similar_questions
    page.locator("#cand-filter select[name=status]").select_option("accepted")
    page.locator("#cand-list [data-candidates='accepted'] ~ ul li", has_text=text).wait_for()
    assert "已接受" in page.locator("#cand-list li", has_text=text).inner_text()

    page.locator(".tabs [data-tab='tab-gaps']").click()
    gap = page.locator("#gap-list li[data-gap-id]", has_text="自提").first
    gap.wait_for()
    assert "已转交" in gap.inner_text() or "置信度低" in gap.inner_text()  # reasons as labels
    assert "escalated" not in gap.inner_text() and "low_confidence" not in gap.inner_text()
    gap.locator("summary").click()
    gap.locator("input[name=id]").fill("faq-web-pickup")
    gap.locator("textarea[name=answer]").fill("暂不支持仓库自提，所有订单均由快递配送。")
    gap.locator("button[type=submit]").click()
    page.locator("#gap-list .flash.ok", has_text="faq-web-pickup").wait_for()
    assert env.kb.store.get("faq-web-pickup").status == "published"
    assert page.locator("#gap-list li[data-gap-id]", has_text="仓库自提").count() == 0

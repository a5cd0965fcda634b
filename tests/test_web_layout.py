"""The pages at phone width (390x844: one column, nothing wider than the screen, nothing clipped) and
one time zone on every page (the norms' zone, shown with its offset in the header)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from tests.test_web_console import simulate
from tests.web_env import WebEnv, screenshot, web_env

pytestmark = pytest.mark.browser
SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE = {"width": 390, "height": 844}

#: Each visible element's box and whether its content is wider than it (clipped or overflowing).
BOXES = """(sels) => sels.flatMap((sel) => Array.from(document.querySelectorAll(sel))
  .filter((el) => el.getClientRects().length > 0)
  .map((el) => { const r = el.getBoundingClientRect();
    return {sel, left: r.left, right: r.right, scroll: el.scrollWidth, client: el.clientWidth}; }))"""


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("web-layout"), demo_snippets, minilm) as e:
        yield e


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True, has_touch=True)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def local(value: str | datetime) -> str:
    """How a page must show a stored time: MM-DD HH:MM in Beijing time (a time without zone is UTC)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return at.astimezone(SHANGHAI).strftime("%m-%d %H:%M")


def utc(value: str | datetime) -> str:
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return at.astimezone(UTC).strftime("%m-%d %H:%M")


def assert_fits(page: Any, selectors: list[str]) -> None:
    """No horizontal overflow: the page is no wider than the screen, and every main panel lies within it
    with its content not wider than itself (wide tables scroll inside their own box)."""
    width = page.evaluate("window.innerWidth")
    assert width == PHONE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    boxes = page.evaluate(BOXES, selectors)
    assert {b["sel"] for b in boxes} == set(selectors), "a panel to check is not on screen"
    for b in boxes:
        assert b["left"] >= -0.5 and b["right"] <= width + 0.5, b
        assert b["scroll"] <= b["client"] + 1, b


def assert_zone_in_header(page: Any) -> None:
    tz = page.locator("#tz")
    assert tz.is_visible()
    assert tz.get_attribute("data-tz") == "Asia/Shanghai" and tz.get_attribute("data-offset") == "UTC+08:00"
    assert "UTC+08:00" in tz.inner_text()


def test_the_console_stacks_at_phone_width_and_shows_service_time(phone: Any, env: WebEnv) -> None:
    env.sign_in(phone, "agent", "/console")
    phone.wait_for_selector("#autoreply [data-open]")
    simulate(phone, "请问怎么申请退货？我上周买的电水壶有点问题，想退掉", "phone-1", "手机上的王女士")
    assert_zone_in_header(phone)
    # The columns are stacked: the list above the conversation, both the screen's width.
    side = phone.locator(".conv-side").bounding_box()
    view = phone.locator("#conv-view").bounding_box()
    assert side["y"] + side["height"] <= view["y"] + 1 and view["width"] > 300
    assert_fits(
        phone,
        ["header.top", "#autoreply", ".tabs", "#conv-list", "#conv-view", "#conv-view .draft", ".next-msg"],
    )
    # Every draft's actions are reachable (not cut off at the right edge).
    for box in phone.locator("#conv-view .draft .approve").all():
        b = box.bounding_box()
        assert b["x"] + b["width"] <= PHONE["width"]
    # The clock stands at Thursday 10:00 Beijing time: that is the time shown, not 02:00 UTC.
    messages = phone.locator("#conv-view .thread").inner_text()
    assert "11-26 10:00" in messages and "11-26 02:00" not in messages
    phone.locator("#conv-view .draft").first.scroll_into_view_if_needed()
    screenshot(phone, "console-phone")


def test_the_knowledge_editor_fits_a_phone_and_shows_service_time(
    phone: Any, env: WebEnv, tmp_path: Path
) -> None:
    sid = "faq-shipping-time"
    current = env.kb.store.get(sid)
    env.kb.store.update(
        sid,
        {"similar_questions": [*current.similar_questions, "手机上问几天发货"]},
        expected_version=current.version,
        actor="key:editor-1",
    )
    r = env.call(
        "POST", "/v1/knowledge/candidates", "editor", json={"snippet_id": sid, "text": "手机候选怎么发货"}
    )
    assert r.status_code in (200, 201), r.text
    candidate = r.json()
    r = env.call(
        "POST",
        "/v1/suggestions",
        "agent",
        json={"conversation_id": "gap-phone", "customer_message": "可以去你们仓库自提吗"},
    )
    assert r.status_code == 201
    gaps = env.call("GET", "/v1/knowledge/gaps", "editor").json()["items"]
    gap = next(g for g in gaps if any(e["conversation_id"] == "gap-phone" for e in g["examples"]))
    revisions = env.kb.store.history(sid)

    env.sign_in(phone, "editor", "/kb")
    assert_zone_in_header(phone)
    phone.locator(".searchbar input[name=query]").fill("发货要几天")
    phone.locator(".searchbar button[type=submit]").click()
    phone.wait_for_selector("#search-results tr[data-hit]")
    assert_fits(
        phone, ["header.top", ".tabs", ".searchbar", "#search-results .card", "#search-results tr[data-hit]"]
    )
    screenshot(phone, "kb-phone")

    # The editor and the history: the snippet's last change and every revision in Beijing time.
    phone.locator(f"#search-results a.open-snippet[data-snippet='{sid}']").first.click()
    phone.wait_for_selector(f"#snippet-editor [data-editing='{sid}']")
    updated = phone.locator("#snippet-editor .updated").inner_text()
    saved = env.kb.store.get(sid)
    assert saved.updated_at is not None
    assert local(saved.updated_at) in updated and utc(saved.updated_at) not in updated
    assert "key:" not in updated and "editor-1" in updated
    phone.locator("#snippet-editor button", has_text="修订历史").click()
    phone.wait_for_selector(f"#snippet-history li[data-version='{revisions[-1].version}']")
    for rev in revisions:
        shown = phone.locator(f"#snippet-history li[data-version='{rev.version}'] time").first
        assert shown.inner_text() == local(rev.at)
        assert shown.get_attribute("datetime").endswith("+08:00") and "UTC+08:00" in shown.get_attribute(
            "title"
        )
    assert_fits(phone, ["#snippet-editor .card", "#snippet-editor form", "#snippet-history .card"])

    # Candidates and gaps: also Beijing time (they used to show UTC).
    phone.locator(".tabs [data-tab='tab-candidates']").click()
    phone.locator("#cand-filter select[name=status]").select_option("accepted")
    item = phone.locator(f"#cand-list li[data-candidate-id='{candidate['id']}']")
    item.wait_for()
    assert local(candidate["created_at"]) in item.inner_text()
    assert utc(candidate["created_at"]) not in item.inner_text()
    assert_fits(phone, ["#cand-list li[data-candidate-id]"])
    phone.locator(".tabs [data-tab='tab-gaps']").click()
    row = phone.locator(f"#gap-list li[data-gap-id='{gap['id']}']")
    row.wait_for()
    assert local(gap["last_seen"]) in row.inner_text() and utc(gap["last_seen"]) not in row.inner_text()
    assert local(gap["last_seen"]) == "11-26 10:00"  # the service clock of the suggestion
    assert_fits(phone, ["#gap-list li[data-gap-id]"])


def test_records_fit_a_phone_and_show_service_time(
    phone: Any, env: WebEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_EVAL_DIR", str(tmp_path))
    report = {
        "kind": "drafts",
        "title": "kefu eval drafts",
        "created_at": "2026-11-26T01:30:00+00:00",
        "metrics": {
            "replies_clean": {"value": 0.97, "reason": "98/101"},
            "groundedness": {"value": 1.0, "reason": "101/101"},
            "intent_accuracy": {"value": 0.93, "reason": "94/101"},
            "norms.greeting": {"value": 1.0, "reason": "101/101"},
        },
        "cases": [{"id": "c1"}],
        "failing": [],
    }
    (tmp_path / "report.json").write_text(json.dumps(report), "utf-8")
    r = env.call(
        "POST",
        "/v1/suggestions",
        "agent",
        json={
            "conversation_id": "rec-phone",
            "customer_message": "你们的发票怎么开？要电子的",
            "customer": {"id": "u1", "name": "李先生"},
        },
    )
    assert r.status_code == 201
    sug = r.json()
    r = env.call(
        "POST",
        f"/v1/suggestions/{sug['id']}/decision",
        "agent",
        json={"action": "approve", "draft_id": sug["drafts"][0]["id"], "agent_id": "agent-1"},
    )
    assert r.status_code in (200, 201), r.text
    record = next(
        x
        for x in env.call("GET", "/v1/records", "agent").json()["items"]
        if x["conversation_id"] == "rec-phone"
    )

    env.sign_in(phone, "agent", "/records")
    assert_zone_in_header(phone)
    row = phone.locator("#records-table tr[data-record='rec-phone']")
    row.wait_for()
    assert (
        local(record["started_at"]) in row.inner_text() and utc(record["started_at"]) not in row.inner_text()
    )
    phone.wait_for_selector("#eval [data-eval='found']")
    summary = phone.locator("#eval").inner_text()
    assert "11-26 09:30" in summary  # the report's 01:30 UTC
    assert_fits(
        phone, ["header.top", "#records-form", "#records-table > .card", "#eval", "#eval table.figures"]
    )
    screenshot(phone, "records-phone")


def test_english_pages_are_english_and_chinese_pages_chinese(page: Any, env: WebEnv) -> None:
    env.sign_in(page, "admin", "/console")
    hours = page.locator("#autoreply .hours")
    hours.wait_for()
    assert "周一" in hours.inner_text()
    page.context.add_cookies([{"name": "kefu_lang", "value": "en", "url": env.base}])
    page.reload()
    page.wait_for_selector("#autoreply .hours")
    text = page.locator("#autoreply .hours").inner_text()
    assert "Monday" in text and "周" not in text  # working hours follow the page's language
    assert "Time zone" in page.locator("#tz").inner_text()
    page.goto(f"{env.base}/kb")
    page.wait_for_selector("#who:not([hidden])")
    page.locator(".tabs [data-tab='tab-snippets']").click()
    options = page.locator("#tab-snippets select[name=status] option").all_inner_texts()
    assert "published" in options
    page.context.add_cookies([{"name": "kefu_lang", "value": "zh", "url": env.base}])
    page.reload()
    page.wait_for_selector("#who:not([hidden])")
    page.locator(".tabs [data-tab='tab-snippets']").click()
    options = page.locator("#tab-snippets select[name=status] option").all_inner_texts()
    assert "已发布" in options and "published" not in options

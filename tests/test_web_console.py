"""The agent console in headless Chromium: drafts, editing with live norm checks, keyboard shortcuts,
approval into the service records, waiting times, offline messages first, escalations and queues."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.model import Snippet
from tests.helpers_server import WORKING_HOURS
from tests.web_env import WebEnv, screenshot, web_env

pytestmark = pytest.mark.browser
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
) -> Iterator[WebEnv]:
    with web_env(tmp_path_factory.mktemp("web-console"), demo_snippets, minilm) as e:
        yield e


@pytest.fixture(autouse=True)
def _working_hours(env: WebEnv) -> Iterator[None]:
    env.clock.set(WORKING_HOURS)
    yield
    env.clock.set(WORKING_HOURS)


def simulate(page: Any, message: str, conversation_id: str, name: str = "") -> None:
    """The console's demo form: a customer's message arrives and its drafts are shown."""
    form = page.locator(".simulate")
    if not form.evaluate("d => d.open"):
        form.locator("summary").click()
    form.locator("input[name=conversation_id]").fill(conversation_id)
    form.locator("input[name=customer_name]").fill(name)
    form.locator("textarea[name=message]").fill(message)
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f"#conv-view .conv-head[data-conversation='{conversation_id}'] ~ .drafts .draft")


def test_agent_gets_drafts_edits_with_live_norms_approves_and_finds_the_record(
    page: Any, env: WebEnv
) -> None:
    env.sign_in(page, "agent")
    assert "key=" not in page.url  # the one-click link's key left the address bar at once
    assert page.evaluate("sessionStorage.getItem('kefu_key')") == env.keys["agent"]
    page.wait_for_selector("#autoreply [data-open='true']")

    simulate(page, "请问怎么申请退货？", "web-flow", "王女士")
    drafts = page.locator("#conv-view .draft")
    assert drafts.count() == 3
    for i in range(3):
        d = drafts.nth(i)
        assert d.locator(".kind").get_attribute("data-kind") == "answer"
        assert d.locator(".draft-text").inner_text().startswith("您好，我是在线客服")
        assert d.locator(".norm-badge").first.get_attribute("data-norms") == "ok"
    # A citation opens the cited snippet beside the drafts.
    drafts.nth(0).locator("button.cite", has_text="faq-returns-process").click()
    page.wait_for_selector("#peek [data-peek='faq-returns-process']")
    assert "退货" in page.locator("#peek .answer").inner_text()
    # The new conversation is in the list, selected.
    assert page.locator("#conv-list a.conv.selected").get_attribute("data-conv") == "web-flow"
    screenshot(page, "console")

    # 1 picks the first draft, e opens it for editing; the badge follows the text as the agent types.
    page.locator("body").press("1")
    assert page.locator("#conv-view .draft.selected").get_attribute("data-index") == "1"
    page.keyboard.press("e")
    editor = page.locator("#conv-view .draft.selected .edit-form textarea")
    assert editor.evaluate("t => document.activeElement === t")
    live = page.locator("#conv-view .draft.selected .norm-live .norm-badge")
    page.keyboard.type("不知道哦")
    page.wait_for_selector("#conv-view .draft.selected .norm-live [data-norms='error']")
    rules = page.locator("#conv-view .draft.selected .norm-live .violations").inner_text()
    assert "vague" in rules and "filler" in rules
    screenshot(page, "console-edit")
    for _ in range(4):
        page.keyboard.press("Backspace")
    page.keyboard.type("祝您生活愉快！")
    page.wait_for_selector("#conv-view .draft.selected .norm-live [data-norms='ok']")
    assert live.get_attribute("data-norms") == "ok"
    edited = editor.input_value()
    assert edited.endswith("祝您生活愉快！")

    # Enter sends the edited reply: it joins the thread as the agent's message.
    page.keyboard.press("Enter")
    page.wait_for_selector("#conv-view [data-decided='edit']")
    assert page.locator("#conv-view .thread .msg.agent p").last.inner_text() == edited
    assert page.locator("#conv-view .draft").count() == 0

    # The customer writes again; 2 and Enter approve the second draft as it is.
    page.locator("#conv-view .next-msg input[name=message]").fill("运费怎么算？")
    page.locator("#conv-view .next-msg button").click()
    page.wait_for_selector("#conv-view .draft[data-index='2']")
    second = page.locator("#conv-view .draft[data-index='2'] .draft-text").inner_text()
    assert not second.startswith("您好，我是在线客服")  # the second reply does not greet again
    page.locator("body").press("2")
    page.keyboard.press("Enter")
    page.wait_for_selector("#conv-view [data-decided='approve']")
    assert page.locator("#conv-view .thread .msg.agent p").last.inner_text() == second

    # The service record has the reply that was sent, the agent and the question.
    page.goto(f"{env.base}/records")
    row = page.locator("#records-table tr[data-record='web-flow']")
    row.wait_for()
    answers = row.locator("td.turns li .a")
    assert answers.count() == 2 and answers.last.inner_text() == "→ " + second
    assert answers.first.inner_text() == "→ " + edited
    assert "agent-1" in row.inner_text() and "请问怎么申请退货" in row.inner_text()
    assert row.locator("td[data-status]").inner_text() == "已回复"  # words, not codes
    assert row.locator("td.intents .badge").first.inner_text() == "售后"
    screenshot(page, "records")
    # A correction in the page, sent with the version shown (If-Match).
    row.locator("details.correct summary").click()
    row.locator("input[name=notes]").fill("客户要求上门取件")
    version = int(row.get_attribute("data-version") or "0")
    row.locator("details.correct button[type=submit]").click()
    page.wait_for_selector(f"#records-table tr[data-record='web-flow'][data-version='{version + 1}']")
    assert "客户要求上门取件" in page.locator("#records-table tr[data-record='web-flow']").inner_text()
    # A stale version (someone corrected it meanwhile) is refused and nothing changes.
    stale = env.call(
        "POST",
        "/ui/records/web-flow",
        "agent",
        data={"notes": "旧的更正"},
        headers={"If-Match": f'"v{version}"'},
    )
    assert stale.status_code == 412
    assert env.call("GET", "/v1/records/web-flow", "agent").json()["notes"] == "客户要求上门取件"
    # Downloads carry the key too (fetched by the page, saved from a blob).
    with page.expect_download() as csv_download:
        page.locator("button.download[data-format='csv']").click()
    assert csv_download.value.suggested_filename == "kefu-records-2026-11-26-2026-11-26.csv"
    csv_text = Path(csv_download.value.path()).read_bytes().decode("utf-8-sig")
    assert "web-flow" in csv_text and second.splitlines()[0][:20] in csv_text
    with page.expect_download() as xlsx_download:
        page.locator("button.download[data-format='xlsx']").click()
    assert xlsx_download.value.suggested_filename.endswith(".xlsx")
    assert Path(xlsx_download.value.path()).read_bytes()[:2] == b"PK"
    # The same record over the API, as the marketing lead's export would have it.
    api = env.call("GET", "/v1/records/web-flow", "agent").json()
    assert api["final_reply"] == second and api["agent_id"] == "agent-1"


def test_waiting_times_are_highlighted_and_offline_messages_come_first(page: Any, env: WebEnv) -> None:
    def ask(conversation: str, message: str) -> None:
        r = env.call(
            "POST",
            "/v1/suggestions",
            "agent",
            json={"conversation_id": conversation, "customer_message": message},
        )
        assert r.status_code == 201, r.text

    # 07:00, before opening: the auto-reply answers and the message waits for the morning.
    env.clock.set(datetime(2026, 11, 26, 7, 0, tzinfo=SHANGHAI))
    ask("wait-offline", "你们几点上班？")
    env.sign_in(page, "agent")
    page.wait_for_selector("#autoreply [data-open='false']")
    assert page.locator("#autoreply [data-auto-reply]").get_attribute("data-auto-reply") == "out_of_hours"

    env.clock.set(WORKING_HOURS)
    ask("wait-long", "发票怎么开？")
    env.clock.advance(90)
    ask("wait-short", "支持哪些支付方式？")
    page.reload()
    page.wait_for_selector("#conv-list a.conv[data-conv='wait-short']")
    order = page.locator("#conv-list a.conv").evaluate_all("els => els.map(e => e.dataset.conv)")
    assert order.index("wait-offline") < order.index("wait-long") < order.index("wait-short")
    assert order[0] == "wait-offline"  # messages left while closed come first
    offline = page.locator("#conv-list a.conv[data-conv='wait-offline']")
    assert "offline" in (offline.get_attribute("class") or "")
    long_ = page.locator("#conv-list a.conv[data-conv='wait-long']")
    short = page.locator("#conv-list a.conv[data-conv='wait-short']")
    assert "over" in (long_.get_attribute("class") or "")  # 90 s > the norms' 60 s
    assert "over" not in (short.get_attribute("class") or "")
    assert long_.locator(".wait").inner_text().startswith("1m3")
    assert page.locator("#autoreply [data-open='true']").count() == 1
    screenshot(page, "console-list")


def test_reject_needs_a_reason_then_the_agent_writes_their_own_reply(page: Any, env: WebEnv) -> None:
    env.sign_in(page, "agent")
    simulate(page, "我要投诉，快递太慢了！", "web-own", "赵先生")
    assert page.locator("#conv-view .draft .kind").first.get_attribute("data-kind") == "complaint"
    page.locator("body").press("1")
    page.keyboard.press("r")
    reason = page.locator("#conv-view .draft.selected .reject-form input[name=reason]")
    assert reason.evaluate("i => document.activeElement === i")
    page.locator("#conv-view .draft.selected .reject-form button[type=submit]").click()
    assert reason.evaluate("i => !i.validity.valid")  # no reason: the form is not sent
    assert page.locator("#conv-view [data-decided]").count() == 0
    reason.fill("先查物流再回复")
    page.keyboard.press("Enter")
    page.wait_for_selector("#conv-view [data-decided='reject']")
    assert page.locator("#conv-view .thread .msg.agent").count() == 0  # nothing was sent
    assert page.locator("#conv-view .draft").count() == 0
    # Rejecting leaves the agent's own editor open, focused, with the norms badge as they type.
    own = page.locator("#conv-view .own-reply textarea")
    page.wait_for_function(
        "() => document.activeElement === document.querySelector('#conv-view .own-reply textarea')"
    )
    page.keyboard.type("不知道哦")
    page.wait_for_selector("#conv-view .own-reply .norm-live [data-norms='error']")
    own.fill("")
    page.keyboard.type("您好，非常抱歉让您久等，我马上为您催促快递，请稍等。")
    page.wait_for_selector("#conv-view .own-reply .norm-live [data-norms='ok']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#conv-view [data-decided='write']")
    assert (
        page.locator("#conv-view .thread .msg.agent p").last.inner_text().startswith("您好，非常抱歉让您久等")
    )
    # Nothing went to 售后服务部: the drafts that promised it were rejected, the own reply did not route.
    page.locator(".tabs [data-tab='tab-queues']").click()
    page.wait_for_selector("#queues [data-department='售后服务部']")
    assert page.locator("#queues li[data-queue-item]", has_text="快递太慢了").count() == 0
    # The record has the agent's own words as the answer.
    rec = env.call("GET", "/v1/records/web-own", "agent").json()
    assert rec["turns"][0]["answer"].startswith("您好，非常抱歉让您久等") and rec["agent_id"] == "agent-1"

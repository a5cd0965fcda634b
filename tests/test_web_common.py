"""Unit tier of the pages' helpers: times in the service's zone with the offset, working hours in the
page's language, one display name, the evaluation summary, and duplicates of published snippets."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from knowledge.duplicates import published_duplicates
from knowledge.model import Snippet
from prompts import default_norms
from suggest.web.common import fmt_time, hours_text, location, person, time_tag, utc_offset
from suggest.web.records import eval_summary

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_times_are_shown_in_the_service_zone_with_the_offset() -> None:
    at = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert fmt_time(at, SHANGHAI) == "11-26 10:00"
    assert fmt_time("2026-11-26T02:00:00", SHANGHAI) == "11-26 10:00"  # no zone: UTC, as the stores write
    assert fmt_time(datetime(2026, 11, 26, 2, 0), SHANGHAI) == "11-26 10:00"  # SQLite gives naive UTC back
    assert fmt_time("2026-11-26T10:00:00+08:00", SHANGHAI) == "11-26 10:00"
    assert fmt_time(None, SHANGHAI) == "" and fmt_time("", SHANGHAI) == ""
    assert utc_offset(SHANGHAI) == "UTC+08:00"
    assert utc_offset(ZoneInfo("America/St_Johns"), datetime(2026, 1, 5, tzinfo=UTC)) == "UTC-03:30"
    tag = str(time_tag(at, SHANGHAI))
    assert (
        '<time datetime="2026-11-26T10:00:00+08:00"' in tag and "UTC+08:00" in tag and ">11-26 10:00<" in tag
    )


def test_working_hours_in_the_pages_language() -> None:
    hours = default_norms("zh").hours
    assert hours_text(hours, "zh") == hours.describe() and "周一" in hours_text(hours, "zh")
    en = hours_text(hours, "en")
    assert "Monday" in en and "08:30-12:00" in en and "周" not in en


def test_one_display_name_and_locations_in_the_pages_language() -> None:
    assert person("key:demo admin") == person("demo admin") == "demo admin"
    assert person(None) == ""
    assert location("line 3", "zh") == "第 3 行" and location("line 3", "en") == "line 3"
    assert location("sheet 'faq', row 7", "zh") == "工作表“faq”第 7 行"


def test_the_eval_summary_is_the_headline_metrics_not_the_flattened_report() -> None:
    report = {
        "kind": "drafts",
        "created_at": "2026-11-26T02:00:00+00:00",
        "metrics": {
            "norms.greeting": {"value": 0.99, "reason": "100/101"},
            "custom_metric": {"value": 12.3456, "reason": "x"},
            "latency_ms": {"value": 40.0, "delta": -2.0, "higher_is_better": False},
            "hit@1": {"value": 0.9, "delta": -0.05},
            "groundedness": {"value": None, "reason": "applies to no case"},
        },
        "baseline": {"path": "old.json"},
        "cases": [{}] * 7,
    }
    s = eval_summary(report)
    assert [f.name for f in s["headline"]] == ["groundedness", "hit@1", "latency_ms", "custom_metric"]
    hit, latency = s["headline"][1], s["headline"][2]
    assert (hit.value, hit.change, hit.better) == ("0.900", "−0.050", -1)
    assert (latency.value, latency.change, latency.better) == ("40.0", "−2.0", 1)  # lower latency is better
    assert s["headline"][0].value == "n/a" and s["headline"][3].value == "12.3"
    assert [f.name for f in s["norms"]] == ["norms.greeting"] and s["cases"] == 7
    assert s["kind"] == ("草稿质量", "draft quality") and s["baseline"] == "old.json"
    assert eval_summary({"retrieval": {"recall@5": 0.9}}) == {"not_a_report": True}
    assert eval_summary([1, 2]) == {"not_a_report": True}


def snippet(
    sid: str,
    question: str,
    *,
    similar: tuple[str, ...] = (),
    answer: str = "",
    status: str = "published",
) -> Snippet:
    return Snippet(
        id=sid,
        question=question,
        answer=answer or f"{sid} 的答案。",
        similar_questions=list(similar),
        status=status,
    )


def test_duplicates_of_published_snippets() -> None:
    published = [
        snippet("faq-a", "怎么退货？", similar=("退貨流程",)),
        snippet("faq-b", "运费多少", answer="满99元包邮。"),
        snippet("faq-draft", "草稿里的问题", status="draft"),
    ]
    new = [
        snippet("new-1", "退货流程", status="draft"),  # traditional/simplified and punctuation do not matter
        snippet("new-2", "别的问题", similar=("怎么退货",)),
        snippet("new-3", "另一个问题", answer="满 99 元包邮！"),
        snippet("new-4", "草稿里的问题"),  # only published snippets count
        snippet("faq-a", "怎么退货？"),  # the same snippet is no duplicate of itself
        snippet("new-5", "？？", answer="？"),  # punctuation only: nothing to compare
    ]
    found = [
        (d.snippet_id, d.field, d.published_id, d.published_field)
        for d in published_duplicates(new, published)
    ]
    assert found == [
        ("new-1", "question", "faq-a", "similar_questions"),
        ("new-2", "similar_questions", "faq-a", "question"),
        ("new-3", "answer", "faq-b", "answer"),
    ]

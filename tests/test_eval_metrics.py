"""The metric API, text similarity, report helpers (baseline, --fail-under) and the case reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.drafts import DatasetProblems, read_dataset
from eval.metrics import FunctionMetric, Score, mean_of, na, percentile, ratio, run_metrics
from eval.report import check_bars, compare, parse_bars, render_html, render_markdown
from eval.similarity import char_f1, rouge_l
from tests.conftest import REPO


def test_not_applicable_is_nan_and_left_out_of_the_mean() -> None:
    metric = FunctionMetric(
        "m", lambda x: na("no label") if x is None else Score(float(x), f"value {x}"), description="test"
    )
    runs = run_metrics([metric], [1, 0, None, 1])
    scores, total = runs["m"].scores, runs["m"].total
    assert math.isnan(scores[2].value) and scores[2].reason == "no label"
    assert total.value == pytest.approx(2 / 3)
    assert total.reason == "2 of 3 cases (1 n/a)"
    graded = mean_of([Score(0.5, ""), Score(1.0, ""), na("")])
    assert graded.value == 0.75 and graded.reason == "mean over 2 cases (1 n/a)"
    nothing = mean_of([na("x"), na("y")])
    assert math.isnan(nothing.value) and "none" not in nothing.reason and "2" in nothing.reason
    assert nothing.to_dict()["value"] is None  # NaN is written as null, never as 0


def test_ratio_and_percentile() -> None:
    assert ratio(3, 4, "drafts").value == 0.75
    assert math.isnan(ratio(0, 0, "drafts").value)
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 95) == 5
    assert math.isnan(percentile([], 50))


def test_character_similarity_suits_chinese() -> None:
    assert char_f1("您好，退货流程如下", "您好 退货流程如下。") == 1.0
    assert rouge_l("您好，退貨流程如下", "您好，退货流程如下") == 1.0  # traditional folds to simplified
    assert char_f1("退款", "发票") == 0.0
    # ROUGE-L rewards order, character F1 does not
    assert char_f1("货退", "退货") == 1.0
    assert rouge_l("货退", "退货") == pytest.approx(0.5)
    assert 0 < rouge_l("订单实付满69元包邮", "满69元包邮") < 1
    assert char_f1("", "退货") == 0.0


def _report(**metrics: float | None) -> dict[str, object]:
    return {
        "kind": "drafts",
        "title": "t",
        "created_at": "2026-11-26T00:00:00+00:00",
        "machine": "test",
        "setup": {},
        "metrics": {
            k: {"value": v, "reason": "r", "higher_is_better": k != "latency_ms"} for k, v in metrics.items()
        },
        "figures": {},
        "failing": [],
        "cases": [],
    }


def test_fail_under_names_the_metric_and_its_bar() -> None:
    report = _report(groundedness=0.97, intent_accuracy=0.95, hit_at_1=None)
    bars = parse_bars(["groundedness=1.0", "intent_accuracy=0.9"])
    failures = check_bars(report, bars)
    assert (
        len(failures) == 1
        and "groundedness" in failures[0]
        and "0.9700" in failures[0]
        and "1" in failures[0]
    )
    assert "not measured" in check_bars(report, parse_bars(["hit_at_1=0.5"]))[0]
    with pytest.raises(ValueError, match="unknown metric"):
        check_bars(report, parse_bars(["nonsense=1"]))
    for bad in ("groundedness", "groundedness=", "=1", "groundedness=high"):
        with pytest.raises(ValueError, match="METRIC=VALUE"):
            parse_bars([bad])


def test_baseline_shows_every_change() -> None:
    new = _report(groundedness=1.0, intent_accuracy=0.9, latency_ms=20.0, judge=None)
    old = _report(groundedness=0.8, intent_accuracy=0.95, latency_ms=25.0, judge=3.0)
    compare(new, old, "old.json")
    m = new["metrics"]
    assert isinstance(m, dict)
    assert m["groundedness"]["delta"] == pytest.approx(0.2)
    assert m["intent_accuracy"]["delta"] == pytest.approx(-0.05)
    assert m["judge"]["delta"] is None and m["judge"]["baseline"] == 3.0
    md = render_markdown(new)
    assert "| groundedness | 1.000 | 0.800 | +0.200 |" in md
    html = render_html(new)
    # lower latency is better: shown as an improvement
    assert 'class="num better">−5.0' in html
    assert 'class="num worse">−0.050' in html


def test_a_baseline_of_another_kind_is_refused() -> None:
    old = _report(groundedness=1.0)
    old["kind"] = "transcripts"
    with pytest.raises(ValueError, match="transcripts"):
        compare(_report(groundedness=1.0), old, "old.json")


def test_bad_dataset_lines_are_all_reported(tmp_path: Path) -> None:
    f = tmp_path / "cases.jsonl"
    lines = [
        {"id": "ok", "customer_message": "退货怎么退"},
        {"id": "a", "customer_message": ""},
        {"id": "b", "customer_message": "x", "expected_intent": "shopping"},
        {"id": "c", "customer_message": "x", "customer_waited_s": -3, "must_escalate": "yes"},
        {"id": "ok", "customer_message": "again"},
        {"id": "d", "customer_message": "x", "history": [{"role": "bot", "text": "hi"}], "colour": 1},
    ]
    f.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{oops\n", "utf-8")
    with pytest.raises(DatasetProblems) as info:
        read_dataset(f)
    text = "\n".join(str(p) for p in info.value.problems)
    for expected in (
        "line 2, field 'customer_message'",
        "unknown intent 'shopping'",
        "customer_waited_s",
        "must_escalate",
        "duplicate id: ok",
        "history[0]",
        "unknown field(s): colour",
        "line 7",
    ):
        assert expected in text, expected
    assert all(p.message_zh and p.message_en for p in info.value.problems)


def test_conversations_become_one_case_per_customer_turn(tmp_path: Path) -> None:
    f = tmp_path / "dialogues.jsonl"
    conv = {
        "session_id": "s1",
        "turns": [
            {"role": "user", "text": "你好"},
            {"role": "agent", "text": "您好，请问有什么可以帮您？"},
            {"role": "user", "text": "退货怎么退"},
            {"role": "user", "text": "在吗"},
        ],
    }
    f.write_text(json.dumps(conv, ensure_ascii=False) + "\n", "utf-8")
    cases, fmt = read_dataset(f)
    assert fmt == "transcripts"
    assert [c.customer_message for c in cases] == ["你好", "退货怎么退", "在吗"]
    assert cases[0].reference_reply == "您好，请问有什么可以帮您？" and not cases[0].history
    assert [t.role for t in cases[1].history] == ["customer", "agent"]
    assert cases[1].reference_reply is None  # the next turn is the customer's again
    assert cases[2].id == "s1#3"


def test_bundled_dataset_covers_what_the_issue_asks() -> None:
    from eval.drafts import BUNDLED_CASES
    from prompts.intents import INTENTS
    from prompts.textnorm import is_traditional

    cases, _ = read_dataset(BUNDLED_CASES)
    assert len(cases) >= 80
    assert {c.expected_intent for c in cases} == set(INTENTS)
    assert sum(1 for c in cases if c.must_escalate) >= 5
    assert sum(1 for c in cases if c.expected_intent == "restricted") >= 5
    assert sum(1 for c in cases if is_traditional(c.customer_message)) >= 5
    assert sum(1 for c in cases if (c.customer_waited_s or 0) > 60) >= 5
    assert sum(1 for c in cases if any(t.role == "agent" for t in c.history)) >= 5
    assert sum(1 for c in cases if not c.history) >= 50
    assert sum(1 for c in cases if c.reference_reply) >= 10
    kb = REPO / "knowledge" / "data" / "demo_kb.jsonl"
    demo = {json.loads(line)["id"] for line in kb.read_text("utf-8").splitlines() if line.strip()}
    assert all(set(c.expected_ids or ()) <= demo for c in cases)

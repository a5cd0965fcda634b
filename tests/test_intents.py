"""Intent classification: the strict loader, folding, the examples, and the labelled-set accuracy bar."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from eval.intents import DEFAULT_SET, cli_main, evaluate_intents, read_cases, routing_table
from prompts import NormsFileError, default_norms
from prompts.intents import (
    INTENTS,
    default_intents,
    fold,
    load_intents,
    loads_intents,
    packaged_intents_path,
)
from prompts.textnorm import to_script
from suggest.cli import main as kefu_main

ZH = packaged_intents_path("zh").read_text(encoding="utf-8")
SET = [json.loads(line) for line in DEFAULT_SET.read_text(encoding="utf-8").splitlines() if line.strip()]


def _keys(text: str) -> list[str]:
    with pytest.raises(NormsFileError) as info:
        loads_intents(text, source="test.toml")
    err = info.value
    for p in err.problems:
        assert p.message_zh and p.message_en
    assert err.problems[0].key in err.message_zh and err.problems[0].key in err.message_en
    return err.keys


# -- the loader -------------------------------------------------------------------------------------


def test_packaged_intents_load_once_with_every_intent() -> None:
    rules = default_intents("zh")
    assert rules is default_intents("zh")
    assert set(rules.rules) == set(INTENTS) and set(rules.order) == set(INTENTS)
    assert rules.default == "inquiry"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            "[intents.complaint]\nweight = 0.9",
            "[intents.complaint]\nweight = 1.5",
            "intents.complaint.weight",
        ),
        (
            "[intents.complaint]\nweight = 0.9",
            "[intents.complaint]\nweight = 0.9\nwieght = 1",
            "intents.complaint.wieght",
        ),
        ('patterns = [\n    "(服务|', 'patterns = [\n    "(服务|(', "intents.complaint.patterns[0]"),
        ('terms = [\n    "投诉",', 'terms = [\n    "",', "intents.complaint.terms"),
        ("[intents.inquiry]", "[intents.question]\nweight = 0.5\n\n[intents.inquiry]", "intents.question"),
        ('    "我要投诉你们的客服",', '    "",', "intents.complaint.examples[0]"),
        ('    "我要投诉你们的客服",', '    "我要退货",', "intents.after_sales.examples["),
        ('default = "inquiry"', 'default = "unknown"', "default"),
        ('default = "inquiry"', 'default = "inquiry"\nlangauge = "zh"', "langauge"),
        ("k = 7", "k = 0", "classifier.k"),
        ("k = 7", "k = 7\nkk = 1", "classifier.kk"),
        ("sharpness = 4.0", 'sharpness = "high"', "classifier.sharpness"),
        ('ask = ["多少钱",', 'ask = []\nx = ["多少钱",', "focus[0]"),
    ],
)
def test_loader_errors_name_the_key(old: str, new: str, key: str) -> None:
    assert ZH.count(old) == 1, old
    keys = _keys(ZH.replace(old, new))
    assert any(k == key or (key.endswith("[") and k.startswith(key)) for k in keys), keys


def test_order_must_list_every_intent() -> None:
    text = re.sub(r"order = \[.*\]", 'order = ["complaint"]', ZH, count=1)
    assert _keys(text) == ["order"]


def test_unreadable_file_and_unknown_language(tmp_path: Path) -> None:
    with pytest.raises(NormsFileError) as info:
        load_intents(tmp_path / "missing.toml")
    assert info.value.keys == [""]
    with pytest.raises(NormsFileError) as info:
        default_intents("fr")
    assert info.value.keys == ["language"]
    bad = tmp_path / "bad.toml"
    bad.write_text("intents = [", encoding="utf-8")
    with pytest.raises(NormsFileError):
        load_intents(bad)


def test_nothing_is_half_loaded() -> None:
    # two problems in two places: both are reported, nothing is returned
    text = ZH.replace("k = 7", "k = -1").replace(
        "[intents.complaint]\nweight = 0.9", "[intents.complaint]\nweight = 0"
    )
    keys = _keys(text)
    assert "classifier.k" in keys and "intents.complaint.weight" in keys


# -- folding: traditional, full-width, Taiwan vocabulary ----------------------------------------------


def _full_width(text: str) -> str:
    return "".join(
        chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else ("\u3000" if c == " " else c) for c in text
    )


@pytest.mark.parametrize("config", ["s2t", "s2tw", "s2hk", "s2twp"])
def test_traditional_classifies_like_simplified(config: str) -> None:
    rules = default_intents("zh")
    texts = [row["text"] for row in SET] + [e.text for e in rules.examples]
    differ = [t for t in texts if rules.classify(to_script(t, config)) != rules.classify(t)]
    assert differ == []


def test_full_width_classifies_like_half_width() -> None:
    rules = default_intents("zh")
    texts = [row["text"] for row in SET] + [e.text for e in rules.examples]
    assert [t for t in texts if rules.classify(_full_width(t)) != rules.classify(t)] == []


def test_fold_keeps_taiwan_phrases_and_variants_apart_from_case_and_width() -> None:
    assert fold("客服線上不？") == fold("客服在线不?")
    assert fold("瞭解了，辛苦") == fold("了解了,辛苦")
    assert fold("ＯＫ，謝謝") == "ok,谢谢"


# -- the examples -------------------------------------------------------------------------------------


def test_each_intent_has_clean_examples() -> None:
    rules = default_intents("zh")
    per_intent = Counter(e.label for e in rules.examples)
    assert set(per_intent) == set(INTENTS)
    assert min(per_intent.values()) >= 25, per_intent
    folded = [fold(e.text) for e in rules.examples]
    assert len(set(folded)) == len(folded)  # no duplicates, within or across intents
    assert all(e.text == e.text.strip() and e.text for e in rules.examples)
    # each example, left out of the index, is still classified as labelled: no contradicting or
    # mislabelled examples (a per-intent floor, so that one intent cannot hide behind the others)
    recall: dict[str, list[bool]] = {label: [] for label in INTENTS}
    for e in rules.examples:
        recall[e.label].append(rules.explain(e.text, leave_out=True).label == e.label)
    overall = sum(sum(v) for v in recall.values()) / len(rules.examples)
    assert overall >= 0.9, overall
    for label, hits in recall.items():
        assert sum(hits) / len(hits) >= 0.75, (label, sum(hits) / len(hits))


def test_no_set_message_is_an_example() -> None:
    """The labelled set measures generalisation: no exact (folded) copies, and no near-copies."""
    rules = default_intents("zh")
    examples = {fold(e.text) for e in rules.examples}
    copies = [row["text"] for row in SET if fold(row["text"]) in examples]
    assert copies == []
    near = [
        (row["text"], n[0].example.text, n[0].similarity)
        for row in SET
        if (n := rules.index.neighbours(fold(row["text"]), 1)) and n[0].similarity >= 0.75
    ]
    assert near == []


# -- classification -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("请问怎么申请退货", "after_sales"),
        ("請問怎麼申請退貨？", "after_sales"),
        ("我要投诉", "complaint"),
        ("我要投诉，你们的快递太慢了！", "complaint"),
        ("这个吹风机进货价是多少", "restricted"),
        ("你们的代工厂是哪家", "restricted"),
        ("好的，谢谢你", "closing"),
        ("谢谢，还有个问题", "inquiry"),
        ("你好", "chit_chat"),
        ("我的手机号是13912345678", "customer_info"),
        ("建议你们出个蓝色的", "suggestion"),
        ("订单怎么还没发货", "order"),
    ],
)
def test_classify(text: str, label: str) -> None:
    got, confidence = default_intents("zh").classify(text)
    assert got == label and 0 < confidence <= 1


def test_off_topic_stays_at_the_default_with_low_confidence() -> None:
    # the pipeline escalates an unanswerable inquiry; a greeting or goodbye plan would hide it
    for text in ("我家的猫最近不爱吃猫粮怎么办", "今天股市大跌了"):
        label, confidence = default_intents("zh").classify(text)
        assert label == "inquiry" and confidence < 0.5, (text, label, confidence)


def test_confidence_is_higher_when_rules_and_examples_agree() -> None:
    rules = default_intents("zh")
    agreed = rules.explain("客服态度太差了，我要投诉")
    assert agreed.source == "rules+examples" and agreed.confidence >= 0.9
    nothing = rules.explain("量子力学是什么")
    assert nothing.source == "default" and nothing.confidence < 0.4


def test_focus_terms_still_work() -> None:
    rules = default_intents("zh")
    assert rules.focus_terms("吹风机多少钱") == ("元", "售价", "价格")
    assert "保修" in rules.focus_terms("保修多久")
    assert rules.focus_terms("你好") == ()


# -- the labelled set and its measurement -------------------------------------------------------------


def test_labelled_set_shape_and_routes() -> None:
    assert len(SET) >= 150
    per_intent = Counter(row["intent"] for row in SET)
    assert set(per_intent) == set(INTENTS) and min(per_intent.values()) >= 15, per_intent
    routes = routing_table(default_norms("zh"))
    assert routes == {"complaint": "售后服务部", "suggestion": "销售部", "customer_info": "销售部"}
    for row in SET:
        assert row["route"] == routes.get(row["intent"]), row
    assert len({row["text"] for row in SET}) == len(SET)
    read_cases(DEFAULT_SET)  # the strict reader accepts it


def test_labelled_set_accuracy_bar() -> None:
    """Acceptance: intent accuracy >= 0.9 and routing accuracy >= 0.95 (deterministic, not timing)."""
    report = evaluate_intents(DEFAULT_SET, default_intents("zh"))
    assert report.n == len(SET)
    assert report.accuracy >= 0.9, report.errors
    assert report.routing_accuracy >= 0.95, report.errors
    assert sum(sum(row.values()) for row in report.confusion.values()) == report.n
    # the confidence means something: right answers are more confident than wrong ones
    assert report.mean_confidence_correct > report.mean_confidence_wrong + 0.15


def test_kefu_eval_intents_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu_main(["eval", "intents"]) == 0
    out = capsys.readouterr().out
    assert "intent accuracy" in out and "routing accuracy" in out and "confusion" in out
    assert kefu_main(["eval", "intents", str(DEFAULT_SET), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(SET) and report["accuracy"] >= 0.9
    assert set(report["per_intent"]) == set(INTENTS)
    assert report["setup"]["routing"]["complaint"] == "售后服务部"


def test_eval_intents_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"text": "你好", "intent": "chit_chat", "route": null}\n'
        '{"text": "我要投诉", "intent": "anger", "route": "售后服务部"}\n'
        '{"text": "建议", "intent": "suggestion", "route": "财务部"}\n'
        '{"text": "在吗", "intent": "chit_chat"}\n',
        encoding="utf-8",
    )
    assert cli_main(str(path), as_json=True) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "line 2:" in err and "line 3:" in err and "line 4:" in err and "line 1:" not in err

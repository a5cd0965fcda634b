"""The semantic intent classifier: a fake encoder for the logic, real e5 for meaning, the real JD.com labels."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eval.intents import cli_main, read_jddc_cases
from knowledge.e5 import shared_e5
from prompts import intent_model
from prompts.intent_model import (
    JDDC_LABELS,
    LabelledText,
    SemanticModel,
    cached_vectors,
    fit_logistic,
    read_labelled_turns,
)
from prompts.intents import (
    COMPLAINT_OVERRIDES,
    INTENTS,
    default_intents,
    loads_intents,
    packaged_intents_path,
)
from tests.conftest import SHARED_DATA

JDDC = SHARED_DATA / "jddc-sample" / "dialogues.jsonl"


class CharEncoder:
    """A deterministic fake encoder: hashed characters and character pairs, L2-normalised; counts calls."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.calls = 0
        self.texts = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            grams = list(t) + [t[j : j + 2] for j in range(len(t) - 1)]
            for g in grams:
                out[i, int(hashlib.md5(g.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            out[i] /= n if n else 1.0
        return out


# complaints without any word of the rules, and what they must not be confused with
SLOW = [
    LabelledText(t, "complaint", "test")
    for t in ("东西怎么这样慢吞吞", "慢吞吞的，等到花儿都谢了", "这样慢吞吞谁受得了", "慢吞吞慢吞吞")
]


def test_without_an_encoder_the_rules_decide_alone() -> None:
    rules = default_intents("zh")
    assert rules.semantic is None and rules.explain("我要退货").semantic_scores == {}
    assert rules.with_encoder(CharEncoder()).without_encoder().classify("我要退货") == rules.classify(
        "我要退货"
    )


def test_the_semantic_classifier_finds_a_complaint_without_a_rule_word() -> None:
    rules = default_intents("zh")
    text = "你们这样慢吞吞的呀"
    assert rules.classify(text)[0] != "complaint"  # no rule word: the rules cannot see it
    enc = CharEncoder()
    learnt = rules.with_encoder(enc, SLOW)
    r = learnt.explain(text)
    assert r.label == "complaint", r.scores
    assert r.semantic_scores["complaint"] == max(r.semantic_scores.values())
    assert learnt.semantic is not None and learnt.semantic.sources == {"toml": len(rules.examples), "test": 4}
    # the rules still win where they are sure
    assert learnt.classify("我要退货")[0] == "after_sales"
    # one encoder call for all examples at start, then one per message
    assert enc.calls == 3 and enc.texts == len(rules.examples) + 4 + 2


# order messages, and complaints about the same parcels in a tone no rule knows
PARCELS = [
    LabelledText(t, "order", "test")
    for t in ("快递到哪了", "快递什么时候到", "帮我查下快递", "快递今天能到吗")
]
GRUMBLES = [
    LabelledText(t, "complaint", "test")
    for t in (
        "快递磨磨蹭蹭的",
        "磨磨蹭蹭磨磨蹭蹭",
        "你们磨磨蹭蹭的快递",
        "磨磨蹭蹭谁受得了",
        "快递磨磨蹭蹭几天了",
    )
]


def _sure_detector(p: float, dim: int) -> SemanticModel:
    """A tone detector that says ``p`` for every message (zero weights, a bias of logit(p))."""
    return SemanticModel(
        ("other", "complaint"), np.zeros((dim + 2, 2)), np.array([0.0, float(np.log(p / (1 - p)))])
    )


def test_a_confident_tone_detector_turns_an_order_message_into_a_complaint() -> None:
    rules = default_intents("zh")
    assert rules.settings.complaint_threshold > 0
    learnt = rules.with_encoder(CharEncoder(), PARCELS + GRUMBLES)
    assert learnt.semantic is not None and learnt.semantic.complaint is not None
    # the detector learnt the tone: a grumble is more of a complaint than a parcel question
    grumble, question = learnt.explain("磨磨蹭蹭的"), learnt.explain("快递到哪了")
    assert grumble.complaint_probability is not None and question.complaint_probability is not None
    assert grumble.complaint_probability > question.complaint_probability
    # the override, with a detector that is sure (0.9) or not sure enough (0.3)
    text = "我的快递到哪了，物流怎么还没更新"
    assert learnt.classify(text)[0] == "order"
    for p, expected in ((0.9, "complaint"), (0.3, "order")):
        sure = replace(learnt, semantic=replace(learnt.semantic, complaint=_sure_detector(p, 256)))
        r = sure.explain(text)
        assert r.label == expected and r.complaint_probability == pytest.approx(p), r
        if expected == "complaint":
            assert r.scores["complaint"] == max(r.scores.values())
        # only order and after-sales messages: never off the default intent (an off-topic question
        # stays there and is escalated) nor off any other topic
        for other in ("我家的猫最近不爱吃猫粮怎么办", "你好", "谢谢，再见"):
            label = learnt.classify(other)[0]
            assert label not in COMPLAINT_OVERRIDES and sure.classify(other)[0] == label
    # switched off in the file: no detector is fitted and the topic wins
    off = replace(rules, settings=replace(rules.settings, complaint_threshold=0.0))
    plain = off.with_encoder(CharEncoder(), PARCELS + GRUMBLES)
    assert plain.semantic is not None and plain.semantic.complaint is None
    assert plain.explain(text).complaint_probability is None
    assert "inquiry" not in COMPLAINT_OVERRIDES and rules.default == "inquiry"


def test_the_tone_detector_settings_are_checked() -> None:
    zh = packaged_intents_path("zh").read_text("utf-8")
    with pytest.raises(Exception) as info:
        loads_intents(zh.replace("complaint_threshold = 0.4", "complaint_threshold = 1.5", 1))
    assert "classifier.complaint_threshold" in getattr(info.value, "keys", [])


def test_examples_of_unknown_intents_are_not_learnt() -> None:
    rules = default_intents("zh")
    learnt = rules.with_encoder(CharEncoder(), [LabelledText("随便说点什么", "gossip", "test")])
    assert learnt.semantic is not None and "test" not in learnt.semantic.sources


def test_logistic_regression_learns_and_gives_absent_intents_no_chance() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3]
    x = np.vstack([c + 0.1 * rng.standard_normal((20, 8)) for c in centres])
    y = [lab for lab in ("order", "complaint", "closing") for _ in range(20)]
    model = fit_logistic(x, y, INTENTS, c=16.0)
    p = model.probabilities(centres)
    assert [INTENTS[i] for i in p.argmax(axis=1)] == ["order", "complaint", "closing"]
    assert np.allclose(p.sum(axis=1), 1.0)
    assert p[:, INTENTS.index("restricted")].max() < 1e-3
    assert np.array_equal(fit_logistic(x, y, INTENTS, c=16.0).weights, model.weights)  # deterministic


def test_example_vectors_are_cached_on_disk_and_a_damaged_cache_is_recomputed(tmp_path: Path) -> None:
    enc = CharEncoder()
    texts = ["怎么退货", "快递太慢了"]
    first = cached_vectors(texts, enc, "fake-1", tmp_path)
    again = cached_vectors(texts, enc, "fake-1", tmp_path)
    assert enc.calls == 1 and np.array_equal(first, again)
    cached_vectors(texts, enc, "fake-2", tmp_path)  # another encoder: another key
    cached_vectors([*texts, "谢谢"], enc, "fake-1", tmp_path)  # other texts: another key
    assert enc.calls == 3
    files = sorted(tmp_path.glob("intent-examples-*.npy"))
    assert len(files) == 3
    intent_model._MEMO.clear()  # a new process: only the files are left
    assert np.array_equal(cached_vectors(texts, enc, "fake-1", tmp_path), first)
    assert enc.calls == 3
    intent_model._MEMO.clear()
    for f in files:
        f.write_bytes(b"not a numpy file")
    assert np.array_equal(cached_vectors(texts, enc, "fake-1", tmp_path), first)
    assert enc.calls == 4
    intent_model._MEMO.clear()
    assert np.array_equal(cached_vectors(texts, enc, "fake-1", tmp_path), first)  # stored again
    assert enc.calls == 4
    cached_vectors(texts, enc, "", tmp_path)  # no encoder id: nothing is stored under a wrong key
    cached_vectors(texts, enc, "", tmp_path)
    assert enc.calls == 6 and len(list(tmp_path.glob("intent-examples-*.npy"))) == 3


def test_ignore_strips_pasted_order_cards_before_matching() -> None:
    rules = default_intents("zh")
    card = "咨询订单号:[订单x] 订单金额:[金额x] 下单时间:[日期x] "
    assert rules.matching_form(card + "东西坏了") == "东西坏了"
    assert rules.classify(card + "你好")[0] == "chit_chat"
    assert rules.matching_form("[订单x]") == "[订单x]"  # nothing left: the message is kept
    assert rules.semantic_form("我要退货") == "我要退货"  # as written: retrieval's vector is reused


def test_ignore_must_be_valid_regexes() -> None:
    zh = packaged_intents_path("zh").read_text("utf-8")
    with pytest.raises(Exception) as info:
        loads_intents(zh.replace("ignore = [\n", 'ignore = [\n    "(",\n', 1))
    assert "ignore[0]" in getattr(info.value, "keys", [])


def _dialogues(tmp_path: Path) -> Path:
    path = tmp_path / "dialogues.jsonl"
    sessions = [
        {"session_id": "s1", "turns": [{"role": "user", "text": "你好"}, {"role": "agent", "text": "在的"}]},
        {"session_id": "s2", "turns": [{"role": "user", "text": "东西怎么这么慢"}]},
    ]
    path.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in sessions), "utf-8")
    return path


def test_labelled_turns_are_read_from_the_dialogues(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"session_id": "s1", "turn": 0, "intent": "chit_chat", "split": "tune"},
        {"session_id": "s2", "turn": 0, "intent": "complaint", "split": "test"},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows), "utf-8")
    got = read_labelled_turns(labels, _dialogues(tmp_path), ("tune",))
    assert [(s, t, m.text, m.label) for s, t, m in got] == [("s1", 0, "你好", "chit_chat")]
    cases = read_jddc_cases(labels, _dialogues(tmp_path), "test")
    assert [(c.line, c.text, c.intent, c.route) for c in cases] == [
        (2, "东西怎么这么慢", "complaint", "售后服务部")
    ]
    labels.write_text(
        json.dumps({"session_id": "s1", "turn": 1, "intent": "closing", "split": "tune"}), "utf-8"
    )
    with pytest.raises(ValueError, match="no customer turn 1"):
        read_labelled_turns(labels, _dialogues(tmp_path))


def test_eval_jddc_skips_with_a_message_without_the_dialogues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(None, False, jddc="test", dialogues=str(tmp_path / "absent.jsonl")) == 0
    err = capsys.readouterr().err
    assert "跳过" in err and "skipped" in err


def test_the_labelled_jddc_set_holds_ids_and_labels_only_split_by_session() -> None:
    rows = [json.loads(line) for line in JDDC_LABELS.read_text("utf-8").splitlines() if line.strip()]
    assert len(rows) >= 300
    first = [r for r in rows if "added" not in r]
    later = [r for r in rows if "added" in r]
    assert all(set(r) == {"session_id", "turn", "intent", "split"} for r in first)  # never the text
    assert all(set(r) == {"session_id", "turn", "intent", "split", "added"} for r in later)
    assert all(r["intent"] in INTENTS for r in rows)
    assert len({(r["session_id"], r["turn"]) for r in rows}) == len(rows)
    for r in first:  # the split is a function of the session: one session's turns stay on one side
        odd = int(hashlib.sha256(r["session_id"].encode()).hexdigest()[:8], 16) % 2
        assert r["split"] == ("test" if odd else "tune")
    # turns labelled after the split come from sessions not labelled before, and only teach
    assert all(r["split"] == "tune" and r["added"] == "later" for r in later)
    assert not {r["session_id"] for r in first} & {r["session_id"] for r in later}
    per_split = Counter((r["split"], r["intent"]) for r in rows)
    assert per_split["test", "complaint"] >= 30 and per_split["tune", "complaint"] >= 30


def test_the_jddc_test_half_is_the_one_split_before_tuning() -> None:
    """The 268 test turns, as committed in 2f7661f: adding tuning data never changes them."""
    rows = [json.loads(line) for line in JDDC_LABELS.read_text("utf-8").splitlines() if line.strip()]
    test = sorted(json.dumps(r, sort_keys=True) for r in rows if r["split"] == "test")
    assert len(test) == 268
    digest = hashlib.sha256("\n".join(test).encode()).hexdigest()
    assert digest == "647144a0a6f65e174eee1703f810746d7ca5cd9b1c75197c699e4daa79df3aeb"


# -- real data and the real encoder ------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not JDDC.is_file(), reason="JDDC sample not found in ../shared/data")
def test_every_label_points_at_a_customer_turn() -> None:
    both = read_labelled_turns(JDDC_LABELS, JDDC, ("tune", "test"))
    assert len(both) >= 300 and all(m.text.strip() for _, _, m in both)


def test_real_e5_reads_complaints_the_rules_miss() -> None:
    """With multilingual-e5-small and only the intents file's own examples (no labelled real
    messages), sarcastic and blaming messages without a rule word are read as complaints."""
    e5 = shared_e5()
    rules = default_intents("zh")
    learnt = rules.with_encoder(e5.encode_documents, encode_one=e5.encode_query)
    for text in ("你们这速度等东西到了黄花菜都凉了", "等了半个月东西还没影，你们还想不想做生意"):
        r = learnt.explain(text)
        assert max(r.semantic_scores, key=lambda k: r.semantic_scores[k]) == "complaint", (text, r)

"""Templates are data, render strictly, and the replies they produce follow the norms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prompts import CheckContext, Template, TemplateError, default_norms, load_norms, packaged_norms_path
from prompts.templates import LLM_TEMPLATES, REQUIRED_TEMPLATES

SAMPLES: dict[str, dict[str, object]] = {
    "zh": {
        "answer": "七天内未拆封的商品可以无理由退货。",
        "question": "您指的是哪一个订单",
        "action": "查询一下物流信息",
        "responsible": "售后专员",
        "follow_up": "24小时",
        "topic": "商品的进货价",
        "cause": "系统故障",
        "customer_message": "我的快递到哪里了？",
        "snippets": "[faq-1] 快递多久到：一般两到三天送达。",
        "related": "退款多久能到账",
        "a": "退货流程是怎样的",
        "title": "2026 双12年终好价",
        "detail": "全场满300减40。",
        "b": "退款多久能到账",
        "n": 3,
        "seconds": 90,
        "text": "您好，我的快递到哪里了？",
        "id": "faq-1",
    },
    "en": {
        "answer": "Unopened items can be returned within seven days.",
        "question": "which order do you mean",
        "action": "check the delivery status",
        "responsible": "our after-sales specialist",
        "follow_up": "24 hours",
        "topic": "the purchase price",
        "cause": "a system failure",
        "customer_message": "Where is my parcel?",
        "snippets": "[faq-1] Delivery time: two to three days.",
        "related": "When will my refund arrive",
        "a": "How do I return an item",
        "title": "Winter sale",
        "detail": "Everything is 10% off.",
        "b": "When will my refund arrive",
        "n": 3,
        "seconds": 90,
        "text": "Hello, where is my parcel?",
        "id": "faq-1",
    },
}


def _render(language: str, name: str) -> str:
    norms = default_norms(language)
    t = norms.templates[name]
    return norms.render(name, **{p: SAMPLES[language][p] for p in t.placeholders})


@pytest.mark.parametrize("language", ["zh", "en"])
def test_every_template_documents_its_use_and_renders(language: str) -> None:
    norms = default_norms(language)
    for name, t in norms.templates.items():
        assert t.used_by, name
        text = _render(language, name)
        assert not re.search(r"\{\w*\}", text), name  # no field left (JSON braces may stay)
        if name not in LLM_TEMPLATES:
            assert "{" not in text and "}" not in text, name


@pytest.mark.parametrize("language", ["zh", "en"])
def test_reply_templates_follow_the_norms(language: str) -> None:
    # The LLM templates are instructions to the model, not replies; every other template is a reply.
    norms = default_norms(language)
    replies = [name for name in norms.templates if name not in LLM_TEMPLATES]
    assert {"greeting", "answer", "escalation", "closing"} <= set(replies)
    for name in replies:
        text = _render(language, name)
        assert norms.check(text) == [], (name, text)


def test_llm_templates_are_required_and_documented() -> None:
    assert set(LLM_TEMPLATES) <= set(REQUIRED_TEMPLATES)
    for language in ("zh", "en"):
        templates = default_norms(language).templates
        for name in LLM_TEMPLATES:
            assert name.startswith("llm_") or name == "system_prompt", name
            assert templates[name].output, (language, name)


@pytest.mark.parametrize("name", ["greeting", "auto_out_of_hours", "auto_busy", "outage_apology"])
def test_opening_templates_greet_and_apologise_when_late(name: str) -> None:
    norms = default_norms("zh")
    text = _render("zh", name)
    if name == "outage_apology":
        # an opening put before a reply (after its greeting, which the guard adds on a first reply)
        assert norms.check(text, CheckContext(customer_waited_s=300)) == []
        return
    assert norms.check(text, CheckContext(first_reply=True)) == []
    if name in ("auto_busy", "outage_apology"):
        assert norms.check(text, CheckContext(first_reply=True, customer_waited_s=300)) == []


def test_missing_variable_names_template_and_variable() -> None:
    norms = default_norms("zh")
    with pytest.raises(TemplateError) as info:
        norms.render("escalation", responsible="售后专员")
    err = info.value
    assert err.template == "escalation" and err.variable == "follow_up"
    assert "escalation" in err.message_zh and "follow_up" in err.message_zh
    assert "escalation" in err.message_en and "follow_up" in err.message_en


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_variable_is_missing(value: object) -> None:
    with pytest.raises(TemplateError) as info:
        default_norms("zh").render("tactful_refusal", topic=value)
    assert info.value.variable == "topic"


def test_unexpected_variable_and_unknown_template() -> None:
    norms = default_norms("zh")
    with pytest.raises(TemplateError) as info:
        norms.render("closing", name="张三")
    assert info.value.template == "closing" and info.value.variable == "name"
    with pytest.raises(TemplateError) as info:
        norms.render("farewell")
    assert info.value.template == "farewell" and "closing" in info.value.message_en


def test_template_render_without_norm_values_raises() -> None:
    t = Template(name="t", text="{greeting}，{answer}", used_by="test", placeholders=("answer",))
    assert t.render({"answer": "好的"}, {"greeting": "您好"}) == "您好，好的"
    with pytest.raises(TemplateError) as info:
        t.render({"answer": "好的"})
    assert info.value.variable == "greeting"


def test_system_prompt_is_written_from_the_rules() -> None:
    norms = default_norms("zh")
    prompt = norms.system_prompt()
    for rule in norms.rules.values():
        first_words = rule.instruction.split("{", 1)[0][:10]
        assert first_words in prompt, rule.id
    assert "您好，我是在线客服，很高兴为您服务" in prompt
    assert "售后服务部" in prompt and "24小时" in prompt
    assert "周一至周六 08:30-12:00、13:00-17:30" in prompt
    assert norms.templates["system_prompt"].output


def test_disabled_rule_leaves_the_prompt(tmp_path: Path) -> None:
    text = packaged_norms_path("zh").read_text(encoding="utf-8")
    text = text.replace(
        '[rules.filler]\nseverity = "warning"', '[rules.filler]\nenabled = false\nseverity = "warning"'
    )
    path = tmp_path / "norms.toml"
    path.write_text(text, encoding="utf-8")
    norms = load_norms(path)
    assert "语气词" not in norms.system_prompt()
    assert [v.rule_id for v in norms.check("好的哦，已经为您登记了，请您放心。")] == []


def test_llm_user_message() -> None:
    text = _render("zh", "llm_user")
    assert "我的快递到哪里了？" in text and "[faq-1]" in text


@pytest.mark.parametrize("language", ["zh", "en"])
def test_llm_output_format_and_snippet_lines(language: str) -> None:
    norms = default_norms(language)
    fmt = norms.render("llm_output_format", n=2)
    assert '{"drafts": [{"text": ' in fmt and "2" in fmt  # literal braces survive the formatter
    line = norms.render("llm_snippet", id="faq-1", question="Q", answer="A.")
    assert line == "[faq-1] Q: A."  # tests/fake_openai.py parses this shape
    guideline = norms.render("llm_guideline_snippet", id="policy-1", question="Q", answer="A.")
    assert guideline.startswith("[policy-1] Q: ") and guideline.endswith(" A.")

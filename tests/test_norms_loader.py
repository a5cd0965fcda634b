"""The strict norms loader: every problem is reported with its key, in Chinese and English."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prompts import (
    BUILTIN_RULES,
    REQUIRED_TEMPLATES,
    NormsFileError,
    default_norms,
    load_norms,
    loads_norms,
    packaged_norms_path,
)

ZH = packaged_norms_path("zh").read_text(encoding="utf-8")


def _problem_keys(text: str) -> list[str]:
    with pytest.raises(NormsFileError) as info:
        loads_norms(text, source="test.toml")
    err = info.value
    # every problem has both languages, and the summary names the first key
    for p in err.problems:
        assert p.message_zh and p.message_en
    assert err.problems[0].key in err.message_zh and err.problems[0].key in err.message_en
    return err.keys


@pytest.mark.parametrize("language", ["zh", "en"])
def test_packaged_norms_load(language: str) -> None:
    norms = load_norms(language)
    assert norms.language == language
    assert tuple(r for r in norms.rules if r in BUILTIN_RULES) == BUILTIN_RULES
    assert set(REQUIRED_TEMPLATES) <= set(norms.templates)


def test_default_norms_are_loaded_once() -> None:
    assert default_norms("zh") is default_norms("zh")
    with pytest.raises(NormsFileError) as info:
        default_norms("fr")
    assert info.value.keys == ["language"]


def test_unknown_key_is_named() -> None:
    text = ZH.replace(
        'severity = "error"\nmessage = "回复含糊', 'severity = "error"\nseverty = "x"\nmessage = "回复含糊', 1
    )
    keys = _problem_keys(text)
    assert keys == ["rules.vague.severty"]


def test_unknown_key_message_lists_the_allowed_keys() -> None:
    with pytest.raises(NormsFileError) as info:
        loads_norms(ZH.replace("wait_limit_s = 60", "wait_limit_s = 60\nwait_limt = 5"))
    (p,) = info.value.problems
    assert p.key == "wait_limt" and "wait_limit_s" in p.message_en and "未知的键" in p.message_zh


def test_missing_key_is_named() -> None:
    keys = _problem_keys(ZH.replace('greeting = "您好，我是在线客服，很高兴为您服务"\n', ""))
    assert keys == ["greeting"]


def test_wrong_type_is_named() -> None:
    keys = _problem_keys(ZH.replace("wait_limit_s = 60", 'wait_limit_s = "60"'))
    assert keys == ["wait_limit_s"]


def test_invalid_regex_names_the_pattern_index() -> None:
    text = ZH.replace("patterns = ['(?:应该|可能", "patterns = ['(', '(?:应该|可能", 1)
    assert _problem_keys(text) == ["rules.vague.patterns[0]"]


def test_bad_severity_and_time_and_zone() -> None:
    text = (
        ZH.replace(
            'severity = "warning"\nmessage = "回复中没有任何礼貌用语"', 'severity = "fatal"\nmessage = "x"'
        )
        .replace('["13:00", "17:30"]', '["13:00", "25:30"]')
        .replace('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"')
    )
    keys = _problem_keys(text)
    assert set(keys) == {"rules.impolite.severity", "hours.periods[1]", "hours.timezone"}


def test_missing_builtin_rule_is_named() -> None:
    start = ZH.index("[rules.blunt_refusal]")
    end = ZH.index("# ----", start)
    assert _problem_keys(ZH[:start] + ZH[end:]) == ["rules.blunt_refusal"]


def test_unknown_placeholder_in_a_message_is_named() -> None:
    text = ZH.replace('message = "回复含糊：“{matched}”"', 'message = "回复含糊：“{matchd}”"')
    assert _problem_keys(text) == ["rules.vague.message"]


def test_template_problems_are_named() -> None:
    undeclared = ZH.replace(
        'text = "不好意思，为了更准确地为您解答，请问{question}？"', 'text = "请问{question}{order_id}？"'
    )
    assert _problem_keys(undeclared) == ["templates.clarify.text"]
    unused = ZH.replace('placeholders = ["question"]', 'placeholders = ["question", "order_id"]')
    assert _problem_keys(unused) == ["templates.clarify.placeholders[1]"]
    start = ZH.index("[templates.auto_busy]")
    end = ZH.index("[templates.outage_apology]")
    assert _problem_keys(ZH[:start] + ZH[end:]) == ["templates.auto_busy"]


def test_expansion_must_be_a_listed_acknowledgement() -> None:
    text = ZH.replace('"在的" = "您好，我在的', '"在吗" = "您好，我在的')
    assert _problem_keys(text) == ["rules.too_short.expansions.在吗"]


def test_several_problems_are_reported_together() -> None:
    text = ZH.replace("wait_limit_s = 60", "wait_limit_s = -1").replace('"sat"]', '"sat", "caturday"]')
    keys = _problem_keys(text)
    assert keys == ["wait_limit_s", "hours.days[6]"]


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NormsFileError) as info:
        loads_norms("language = ", source="broken.toml")
    assert info.value.keys == ["(toml)"]
    with pytest.raises(NormsFileError) as info:
        load_norms(tmp_path / "nope.toml")
    assert info.value.keys == ["(file)"]
    assert info.value.to_dict()["code"] == "invalid_norms"


def test_an_operator_copy_with_an_extra_lexicon_rule(tmp_path: Path) -> None:
    extra = """
[rules.competitor]
severity = "warning"
message = "提到了竞争对手：“{matched}”"
suggestion = "不要评价其他平台。"
instruction = "不要提及或评价其他平台。"
terms = ["某宝"]
"""
    path = tmp_path / "norms.toml"
    text = ZH.replace("[rules.wait_without_apology]", extra + "\n[rules.wait_without_apology]")
    text = text.replace("wait_limit_s = 60", "wait_limit_s = 30")
    path.write_text(text, encoding="utf-8")
    norms = load_norms(path)
    assert norms.wait_limit_s == 30
    (v,) = norms.check("您好，某宝上的价格我们不清楚怎么定的。".replace("不清楚怎么定的", "无法比较"))
    assert v.rule_id == "competitor" and v.matched == "某宝" and not v.fixable
    assert "不要提及或评价其他平台" in norms.system_prompt()


def test_prompts_imports_none_of_the_other_packages() -> None:
    code = (
        "import sys, prompts; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'knowledge', 'suggest', 'eval'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "norms_gbk.toml"
    path.write_bytes(ZH.encode("gbk"))
    with pytest.raises(NormsFileError) as info:
        load_norms(path)
    assert info.value.keys == ["(file)"]
    assert "norms_gbk.toml" in str(info.value) and "UTF-8" in info.value.message_en


def test_the_same_group_name_in_two_patterns_names_the_key() -> None:
    # each pattern compiles alone, but the checker joins a rule's patterns into one regex
    line = "patterns = ['(?:应该|可能|大概|估计|也许|或许)[^,.!?;~。\\s]{0,15}吧']"
    assert line in ZH
    text = ZH.replace(
        line, "patterns = ['(?P<hedge>应该)[^,.!?;~。]{0,15}吧', '(?P<hedge>可能)[^,.!?;~。]{0,15}吧']"
    )
    with pytest.raises(NormsFileError) as info:
        loads_norms(text, source="test.toml")
    assert info.value.keys == ["rules.vague.patterns"]
    assert "hedge" in info.value.problems[0].message_en


def test_optional_punctuation_keys_and_insert_at() -> None:
    norms = default_norms("zh")
    assert norms.insert_separator == "，" and "。" in norms.sentence_end
    assert norms.rules["wait_without_apology"].insert_at == "clause"
    assert default_norms("en").rules["wait_without_apology"].insert_at == "sentence"
    bad = ZH.replace('insert_at = "clause"', 'insert_at = "word"', 1)
    assert _problem_keys(bad) == ["rules.wait_without_apology.insert_at"]
    bad = ZH.replace("explanations = [\n", "explanations = [\n    '(',\n", 1)
    assert _problem_keys(bad) == ["rules.wait_without_apology.explanations[0]"]

"""`kefu eval norms FILE [--json]` (eval.norms.cli_main) and the JDDC quality inspection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.norms import DEFAULT_JDDC, cli_main, main, read_cases, run_jddc

DATA = Path(__file__).parent / "data" / "norms_replies.jsonl"


def _write(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "replies.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_json_mode_prints_one_object_per_line_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(str(DATA), True) == 0
    out, err = capsys.readouterr()
    expected = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(expected)
    for row, case in zip(rows, expected, strict=True):
        assert set(row) == {"violations", "fixed"}
        assert sorted(row["violations"]) == sorted(case["expect"]), case["text"]
        if not case["expect"]:
            assert row["fixed"] == case["text"]
    assert err == ""


def test_json_mode_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path,
        [
            '{"text": "好的"}',
            "",
            '{"text": "订单已经发出，请您耐心等待。", "first_reply": true, "customer_waited_s": 90}',
            '{"text": "您好，这个无可奉告。", "id": "extra keys are ignored"}',
        ],
    )
    assert cli_main(path, True) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"violations": ["impolite", "too_short"], "fixed": "好的，我明白了。请问还有其他可以帮到您的吗？"},
        {
            "violations": ["greeting", "late_without_apology"],
            "fixed": "您好，我是在线客服，很高兴为您服务。抱歉让您久等了。订单已经发出，请您耐心等待。",
        },
        {"violations": ["blunt_refusal"], "fixed": "您好，这个无可奉告。"},
    ]


def test_table_mode_shows_rows_and_a_per_rule_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(str(DATA), False) == 0
    out = capsys.readouterr().out
    assert "商品已经发货了，请您注意查收。" in out
    assert "-> fixed" in out
    summary = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha()}
    assert summary["greeting"][1] == "error"
    lines = DATA.read_text(encoding="utf-8").splitlines()
    n_vague = sum(1 for line in lines if "vague" in json.loads(line)["expect"])
    assert int(summary["vague"][2]) == n_vague
    assert f"replies: {len(lines)}," in out


@pytest.mark.parametrize("as_json", [True, False])
def test_bad_lines_exit_2_and_name_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    path = _write(
        tmp_path,
        [
            '{"text": "您好，请问有什么可以帮您？"}',
            "{not json",
            '{"txt": "typo"}',
            '{"text": "您好", "first_reply": "yes"}',
            '{"text": "您好", "customer_waited_s": -3}',
            '["a list"]',
        ],
    )
    assert cli_main(path, as_json) == 2
    out, err = capsys.readouterr()
    assert out == ""
    for n in (2, 3, 4, 5, 6):
        assert f"line {n}:" in err
    assert "line 1:" not in err
    assert '"text"' in err and "first_reply" in err and "customer_waited_s" in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(str(tmp_path / "absent.jsonl"), True) == 2
    out, err = capsys.readouterr()
    assert out == "" and "absent.jsonl" in err


def test_english_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, ['{"text": "OK", "lang": "en"}', '{"text": "x", "lang": "fr"}'])
    assert cli_main(path, True) == 2
    assert "line 2:" in capsys.readouterr().err
    path = _write(tmp_path, ['{"text": "OK", "lang": "en"}'])
    assert cli_main(path, True) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["violations"] == ["impolite", "too_short"]
    assert row["fixed"].startswith("All right")


def test_module_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DATA), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(DATA.read_text(encoding="utf-8").splitlines())


@pytest.mark.shared_data
@pytest.mark.skipif(not DEFAULT_JDDC.is_file(), reason=f"JDDC sample not found at {DEFAULT_JDDC}")
def test_jddc_agent_turns_are_checked_fast() -> None:
    report = run_jddc(DEFAULT_JDDC, examples=2)
    assert report.turns == 6029
    assert 0 < report.flagged < report.turns
    assert report.check_us_mean < 1000
    # every flagged reply whose violations are all fixable is clean after fix; the others are the
    # replies that need rewording (a few of them become fixable once another fix has run: a filler
    # removed makes "抱歉呢，" a bare second apology)
    assert 0 < report.needs_rewording < report.flagged
    assert report.flagged - report.needs_rewording <= report.fixed_clean <= report.flagged
    assert report.per_rule["repeated_greeting"] > 0 and report.per_rule["stacked_apology"] > 0
    assert report.per_rule["greeting"] <= 994  # the first replies of the 994 sessions
    assert set(report.per_rule) >= {"greeting", "vague", "filler", "rude"}


DIALOGUES = Path(__file__).parent / "data" / "norms_dialogues.jsonl"


def test_dialogues_report_on_a_small_file() -> None:
    report = run_jddc(DIALOGUES, examples=1)
    assert report.turns == 6
    # s1: wait without apology, bare acknowledgement (嗯嗯: too_short, filler, impolite);
    # s2: first reply without greeting, filler 哦, impolite; vague; s3: clean
    assert report.per_rule["wait_without_apology"] == 1
    assert report.per_rule["greeting"] == 1
    assert report.per_rule["vague"] == 1
    assert report.per_rule["too_short"] == 1
    assert report.flagged == 4
    assert report.needs_rewording == 1  # the vague reply
    assert report.fixed_clean == 3
    assert report.examples["vague"] == ["这个我也不清楚，您问问别人吧。  ['不清楚'@4]"]


def test_line_separators_inside_json_strings_do_not_split_lines(tmp_path: Path) -> None:
    # U+2028, U+0085 and form feed are line breaks for str.splitlines but legal inside JSON strings
    path = tmp_path / "replies.jsonl"
    texts = ["您好，第一行\u2028第二行。", "您好，\u0085谢谢。", "您好，\x0c请您查收。"]
    path.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n", encoding="utf-8"
    )
    cases = read_cases(path)
    assert [c.text for c in cases] == texts
    assert [c.line for c in cases] == [1, 2, 3]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_wait_is_rejected_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = _write(tmp_path, ['{"text": "您好"}', '{"text": "您好", "customer_waited_s": ' + value + "}"])
    assert cli_main(path, True) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "line 2:" in err and "customer_waited_s" in err and "line 1:" not in err


def test_table_summary_shows_whole_messages(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(str(DATA), False) == 0
    out = capsys.readouterr().out
    late = next(line for line in out.splitlines() if line.startswith("late_without_apology"))
    assert late.endswith("客户已等待超过 60 秒，回复开头没有为久等致歉")
    vague = next(line for line in out.splitlines() if line.startswith("vague "))
    assert vague.endswith("回复含糊")

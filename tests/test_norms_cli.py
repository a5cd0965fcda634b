"""The `kefu eval norms` wiring: the real command-line entry point, not only eval.norms.cli_main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suggest.cli import main

DATA = Path(__file__).parent / "data"
REPLIES = DATA / "norms_replies.jsonl"
DIALOGUES = DATA / "norms_dialogues.jsonl"


def test_kefu_eval_norms_file_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "norms", str(REPLIES), "--json"]) == 0
    out, err = capsys.readouterr()
    cases = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = [json.loads(line) for line in out.split("\n") if line]
    assert len(rows) == len(cases)
    for row, case in zip(rows, cases, strict=True):
        assert set(row) == {"violations", "fixed"}
        assert sorted(row["violations"]) == sorted(case["expect"]), case["text"]
    assert err == ""


def test_kefu_eval_norms_file_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "norms", str(REPLIES)]) == 0
    out = capsys.readouterr().out
    assert "-> fixed" in out and "replies: " in out


def test_kefu_eval_norms_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": 1}\n', encoding="utf-8")
    assert main(["eval", "norms", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "line 1:" in err


def test_kefu_eval_norms_dialogues(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "norms", "--dialogues", str(DIALOGUES)]) == 0
    out = capsys.readouterr().out
    assert "agent turns: 6" in out
    per_rule = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.endswith("%")}
    assert per_rule["vague"] == 1 and per_rule["wait_without_apology"] == 1 and per_rule["rude"] == 0


def test_kefu_eval_norms_dialogues_json_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "norms", "--dialogues", str(DIALOGUES), "--json", "--examples", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["turns"] == 6 and report["flagged"] == 4
    assert report["fixed_clean"] == report["flagged"] - report["needs_rewording"]
    assert list(report["examples"]) and all(len(v) == 1 for v in report["examples"].values())


def test_kefu_eval_norms_dialogues_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "norms", "--dialogues", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err

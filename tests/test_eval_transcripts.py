"""`kefu eval transcripts`: quality inspection of real conversations (质检)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.transcripts import read_conversations, run_inspection
from prompts import default_norms
from suggest.cli import main
from tests.conftest import SHARED_DATA

JDDC = SHARED_DATA / "jddc-sample" / "dialogues.jsonl"

CONVERSATIONS = [
    {
        "session_id": "s-good",
        "agent_id": "a1",
        "turns": [
            {"role": "user", "text": "退货怎么申请", "at": "2026-11-26T10:00:00+08:00"},
            {
                "role": "agent",
                "text": "您好，我是在线客服，很高兴为您服务。请在“我的订单”中点击申请售后。",
                "at": "2026-11-26T10:00:20+08:00",
            },
            {"role": "user", "text": "好的谢谢", "at": "2026-11-26T10:01:00+08:00"},
            {"role": "agent", "text": "不客气，祝您生活愉快！", "at": "2026-11-26T10:01:30+08:00"},
        ],
    },
    {
        "session_id": "s-bad",
        "turns": [
            {"role": "user", "text": "我的快递到哪了", "at": 1795000000, "agent_id": None},
            {"role": "agent", "text": "不知道哦", "at": 1795000300, "agent_id": "a2"},
            {"role": "user", "text": "？？"},
            {"role": "agent", "text": "嗯", "agent_id": "a2"},
        ],
    },
]


@pytest.fixture
def dialogues(tmp_path: Path) -> Path:
    f = tmp_path / "dialogues.jsonl"
    f.write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in CONVERSATIONS) + "\n", "utf-8")
    return f


def test_inspection_rates_times_agents_and_worst(dialogues: Path) -> None:
    norms = default_norms("zh")
    ins = run_inspection(read_conversations(dialogues), norms, worst=5)
    runs = ins.runs
    assert runs["norms.vague"].total.value == pytest.approx(3 / 4)  # 不知道哦
    assert runs["norms.greeting"].total.value == pytest.approx(3 / 4)  # s-bad never greets
    # 300 s without an apology at the start: late_without_apology, from the timestamps
    late = runs["norms.late_without_apology"]
    assert late.total.value == pytest.approx(3 / 4)
    assert runs["replies_within_60s"].total.value == pytest.approx(2 / 3)  # 20 s, 30 s, 300 s
    assert runs["response_s"].total.details["n"] == 3
    assert math.isnan(runs["response_s"].scores[3].value)  # the untimed reply
    assert runs["first_response_s"].total.details["p50"] == pytest.approx(160)  # 20 s and 300 s
    assert set(ins.per_agent) == {"a1", "a2"}
    assert ins.per_agent["a1"]["violation_rate"]["vague"] == 0
    assert ins.per_agent["a2"]["violation_rate"]["vague"] == 0.5
    assert ins.per_agent["a2"]["within_limit"] == 0.0
    worst = ins.worst[0]
    assert worst["session_id"] == "s-bad" and worst["errors"] >= 3
    flagged = worst["turns"][1]["violations"]
    assert any(v["rule_id"] == "vague" and v["matched"] == "不知道" for v in flagged)


def test_cli_writes_the_three_reports(
    dialogues: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main(["eval", "transcripts", str(dialogues), "--report", str(out)]) == 0
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["kind"] == "transcripts"
    assert report["setup"]["agent_replies"] == 4 and report["setup"]["timed_replies"] == 3
    assert len(report["cases"]) == 4 and report["failing"][0]["id"] == "s-bad"
    html = (out / "report.html").read_text("utf-8")
    assert 'id="rules-chart"' in html and 'id="latency-chart"' in html and "<mark" in html
    md = (out / "report.md").read_text("utf-8")
    assert "| norms.vague | 0.750 |" in md and "Per agent" in md
    # against itself as the baseline, every change is zero; a bar above a value fails with exit 1
    code = main(
        [
            "eval",
            "transcripts",
            str(dialogues),
            "--report",
            str(tmp_path / "again"),
            "--baseline",
            str(out / "report.json"),
            "--fail-under",
            "norms.vague=0.9",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "norms.vague = 0.7500" in err and "0.9" in err
    again = json.loads((tmp_path / "again" / "report.json").read_text("utf-8"))
    assert again["metrics"]["norms.vague"]["delta"] == 0


def test_bad_input_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"session_id": "x", "turns": [{"role": "bot", "text": "hi"}]}\n{"turns": 3}\n', "utf-8")
    out = tmp_path / "report"
    assert main(["eval", "transcripts", str(f), "--report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "turns[0]" in err and "line 2" in err and "nothing was evaluated" in err
    assert not out.exists()
    assert main(["eval", "transcripts", str(tmp_path / "absent.jsonl"), "--report", str(out)]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.shared_data
@pytest.mark.skipif(not JDDC.is_file(), reason=f"JDDC sample not found at {JDDC}")
def test_jddc_sample(tmp_path: Path) -> None:
    assert main(["eval", "transcripts", str(JDDC), "--report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text("utf-8"))
    assert report["setup"]["conversations"] == 994 and report["setup"]["agent_replies"] == 6029
    # no timestamps in JDDC: response times are not measured (NaN -> null), not 0
    assert report["metrics"]["response_s"]["value"] is None
    assert 0.3 < report["metrics"]["replies_clean"]["value"] < 0.6
    # the same counts as `kefu eval norms --dialogues` (one reader, one checker)
    from eval.norms import run_jddc

    old = run_jddc(JDDC)
    assert report["metrics"]["norms.filler"]["details"]["hits"] == old.turns - old.per_rule["filler"]

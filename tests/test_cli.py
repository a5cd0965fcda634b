"""The content-staff CLI, run as staff run it (``kefu kb ...``) against a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.store import Store
from suggest.cli import main
from tests.conftest import REPO

DEMO = REPO / "knowledge" / "data" / "demo_kb.jsonl"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("KEFU_DATABASE_URL", f"sqlite:///{tmp_path / 'kb.db'}")
    monkeypatch.setenv("KEFU_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("KEFU_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("KEFU_ACTOR", "tester")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def kefu(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _count(env: Path) -> int:
    s = Store(f"sqlite:///{env / 'kb.db'}")
    try:
        return s.count()
    finally:
        s.close()


def test_import_list_show_stats_and_idempotent_reimport(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = kefu(capsys, "kb", "import", str(DEMO))
    assert code == 0 and "95 created" in out
    assert (env / "index" / "current" / "manifest.json").exists()  # import also indexed
    code, out, _ = kefu(capsys, "kb", "import", str(DEMO))
    assert code == 0 and "0 created, 0 updated, 95 unchanged" in out
    code, out, _ = kefu(capsys, "kb", "list", "--kind", "restricted")
    assert code == 0 and "restricted-cost-price" in out and "(7)" in out
    code, out, _ = kefu(capsys, "kb", "show", "faq-returns-7d", "--json")
    assert json.loads(out)["version"] == 1
    code, out, _ = kefu(capsys, "kb", "stats")
    stats = json.loads(out)
    assert stats["snippets"] == 95 and stats["by_kind_and_status"]["faq"]["draft"] == 1


BAD_FILES = {
    "broken_json.jsonl": (
        '{"id": "faq-ok", "question": "好问题", "answer": "好答案"}\n{"id": "faq-bad", "question": \n',
        "line 2",
    ),
    "missing_field.jsonl": (
        '{"id": "faq-ok", "question": "问题", "answer": "答案"}\n{"id": "faq-x", "answer": "a"}\n',
        "question",
    ),
    "duplicate.jsonl": (
        '{"id": "faq-a", "question": "问一", "answer": "答"}\n{"id": "faq-a", "question": "问二", "answer": "答"}\n',
        "faq-a",
    ),
    "huge.jsonl": (
        json.dumps({"id": "faq-big", "question": "大", "answer": "字" * 1_000_000}) + "\n",
        "answer",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_import_file_imports_nothing(env: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    content, expected = BAD_FILES[name]
    path = env / name
    path.write_text(content, "utf-8")
    code, _out, err = kefu(capsys, "kb", "import", str(path))
    assert code == 2
    assert name in err and expected in err
    assert "nothing was imported" in err and "未导入任何内容" in err
    assert _count(env) == 0


def test_wrong_encoding_imports_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = env / "gbk.csv"
    path.write_bytes("id,question,answer\nfaq-1,怎么退货,七天无理由\n".encode("gbk"))
    code, _, err = kefu(capsys, "kb", "import", str(path))
    assert code == 2 and "UTF-8" in err
    assert _count(env) == 0


def test_bad_file_after_good_import_changes_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu(capsys, "kb", "import", str(DEMO), "--no-index")[0] == 0
    bad = env / "bad.jsonl"
    bad.write_text(
        '{"id": "faq-returns-7d", "question": "改了", "answer": "改了"}\n{"id": "faq-new", "question": ""}\n',
        "utf-8",
    )
    assert kefu(capsys, "kb", "import", str(bad))[0] == 2
    _code, out, _ = kefu(capsys, "kb", "show", "faq-returns-7d", "--json")
    assert json.loads(out)["version"] == 1 and json.loads(out)["question"] != "改了"


def test_edit_with_stale_version_is_refused_and_kept(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu(capsys, "kb", "import", str(DEMO), "--no-index")[0] == 0
    code, out, _ = kefu(capsys, "kb", "edit", "faq-returns-7d", "--set", "answer=新答案", "--version", "1")
    assert code == 0 and "v2" in out
    code, _, err = kefu(capsys, "kb", "edit", "faq-returns-7d", "--set", "answer=我的答案", "--version", "1")
    assert code == 1 and "version_conflict" in err
    saved = list((env / "var" / "rejected-edits").glob("faq-returns-7d-*.json"))
    assert saved and json.loads(saved[0].read_text())["answer"] == "我的答案"  # nothing lost
    code, out, _ = kefu(capsys, "kb", "show", "faq-returns-7d", "--json")
    assert json.loads(out)["answer"] == "新答案"
    code, out, _ = kefu(capsys, "kb", "history", "faq-returns-7d")
    assert "update  by tester" in out and "新答案" in out


def test_add_publish_search_rm(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu(capsys, "kb", "import", str(DEMO))[0] == 0
    code, out, _ = kefu(
        capsys,
        "kb",
        "add",
        "--id",
        "faq-c6-oven",
        "--question",
        "炒锅能放进烤箱吗",
        "--answer",
        "不能，手柄不耐高温。",
        "--similar",
        "炒锅可以进烤箱吗",
    )
    assert code == 0 and "draft" in out
    code, out, _ = kefu(capsys, "kb", "search", "炒鍋可以進烤箱嗎", "--json")
    assert "faq-c6-oven" not in [h["snippet_id"] for h in json.loads(out)["hits"]]  # drafts are not served
    assert kefu(capsys, "kb", "publish", "faq-c6-oven")[0] == 0
    code, out, _ = kefu(capsys, "kb", "search", "炒鍋可以進烤箱嗎", "--json")
    res = json.loads(out)
    assert res["hits"][0]["snippet_id"] == "faq-c6-oven"
    assert res["hits"][0]["matched_text"] == "炒锅可以进烤箱吗" and res["hits"][0]["confidence"] == "high"
    code, out, _ = kefu(capsys, "kb", "search", "炒鍋可以進烤箱嗎")
    assert "命中 matched (similar): 炒锅可以进烤箱吗" in out
    assert kefu(capsys, "kb", "rm", "faq-c6-oven")[0] == 0
    code, out, _ = kefu(capsys, "kb", "history", "faq-c6-oven")
    assert "delete" in out


def test_export_round_trip(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu(capsys, "kb", "import", str(DEMO), "--no-index")[0] == 0
    for ext in ("jsonl", "csv", "xlsx", "md"):
        path = env / f"out.{ext}"
        assert kefu(capsys, "kb", "export", str(path))[0] == 0
        code, out, _ = kefu(capsys, "kb", "import", str(path), "--no-index")
        assert code == 0 and "95 unchanged" in out, (ext, out)


def test_tune_switches_model_and_index_follows(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kefu(capsys, "kb", "import", str(DEMO))[0] == 0
    before = json.loads((env / "index" / "current" / "manifest.json").read_text())["model_id"]
    code, out, _ = kefu(capsys, "kb", "tune", "--force")
    assert code == 0
    report = json.loads(out)
    assert report["switched"] is True and report["switched_to"].startswith("db:kb-static-")
    assert report["held_out"] > 0 and "mrr@10" in report["new"]
    code, out, _ = kefu(capsys, "kb", "reindex")
    assert code == 0 and "rebuilt index (built with model" in out
    after = json.loads((env / "index" / "current" / "manifest.json").read_text())["model_id"]
    assert after != before and "kb-static-" in after  # with e5 in front of it (knowledge/encoders.py)


def test_eval_retrieval_json_last_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = kefu(
        capsys,
        "eval",
        "retrieval",
        "--kb",
        str(DEMO),
        "--queries",
        str(REPO / "knowledge/data/demo_queries.jsonl"),
        "--json",
    )
    assert code == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    assert set(metrics) == {
        "recall@1",
        "recall@5",
        "recall@10",
        "mrr@10",
        "latency_ms_p50",
        "latency_ms_p95",
        "n_queries",
    }
    assert metrics["n_queries"] == 60
    assert metrics["recall@5"] >= 0.8  # a regression guard for the demo KB (measured 0.9+)


def test_unknown_snippet_and_bad_set(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = kefu(capsys, "kb", "show", "nope")
    assert code == 1 and "不存在" in err and "does not exist" in err
    assert kefu(capsys, "kb", "import", str(DEMO), "--no-index")[0] == 0
    code, _, err = kefu(capsys, "kb", "edit", "faq-returns-7d", "--set", "colour=red")
    assert code == 2 and "FIELD=VALUE" in err

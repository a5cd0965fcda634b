"""``kefu bench``: the generated KB recipe, and the whole machinery end to end on the demo KB.

No timing assertions: speed is what the benchmark measures (docs/benchmarks.md), never what a test checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.bench import base_entries, format_report, generate_kb, write_jsonl
from knowledge.io import read_snippets
from suggest.cli import main
from tests.conftest import SHARED_DATA


def test_generator_is_deterministic_and_valid(tmp_path: Path) -> None:
    base, name = base_entries(None)  # no bq-dev folder given: the bundled demo KB is the base
    assert name == "demo" and len(base) == 95
    a = generate_kb(500, seed=3, base=base)
    assert a == generate_kb(500, seed=3, base=base)
    assert a != generate_kb(500, seed=4, base=base)
    assert len(a) == 500 and len({r["id"] for r in a}) == 500
    assert [r["id"] for r in a[:95]] == [r["id"] for r in base]
    variants = a[95:]
    assert all(r["id"].startswith("bench-") and r["product"] for r in variants)
    assert all(2 <= len(r["similar_questions"]) <= 4 for r in variants)
    assert all(r["question"] not in r["similar_questions"] for r in variants)
    assert all(len(set(r["similar_questions"])) == len(r["similar_questions"]) for r in variants)
    assert all(r["product"] in r["question"] and r["product"] in r["answer"] for r in variants)
    # Every entry is a valid snippet with an answer (else every suggestion would escalate).
    path = tmp_path / "kb.jsonl"
    write_jsonl(a, path)
    snippets = read_snippets(path)
    assert len(snippets) == 500 and all(s.answer.strip() for s in snippets)
    assert all(s.status == "published" for s in snippets[95:])
    # A smaller size is a prefix of the base.
    assert [r["id"] for r in generate_kb(10, seed=3, base=base)] == [r["id"] for r in base[:10]]


def test_generator_fills_missing_answers() -> None:
    base = [{"id": f"q{i}", "question": f"问题{i}怎么办", "similar_questions": []} for i in range(3)]
    out = generate_kb(20, seed=0, base=base)
    assert len(out) == 20 and all(r["answer"].strip() for r in out)
    assert all(2 <= len(r["similar_questions"]) <= 4 for r in out[3:])
    assert base[0].get("answer") is None  # the input is not changed


@pytest.mark.shared_data
def test_generator_on_bq_dev() -> None:
    bq = SHARED_DATA / "bq-dev"
    if not (bq / "kb.jsonl").is_file():
        pytest.skip(f"{bq} is absent")
    base, name = base_entries(bq)
    assert name == "bq-dev"
    out = generate_kb(len(base) + 200, seed=0, base=base)
    assert len(out) == len(base) + 200 and all(r["answer"].strip() for r in out)


def test_bench_end_to_end_on_demo_kb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "bench"
    code = main(
        [
            "bench",
            "--kb",
            "demo",
            "--clients",
            "2",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--workers",
            "1",
            "--keep",
            str(keep),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report) >= {
        "machine",
        "kb",
        "settings",
        "results",
        "server_memory",
        "client_cpu",
        "server_cpu",
    }
    res = report["results"]
    assert res["ok"] > 0 and res["errors"] == 0 and res["throughput_rps"] > 0
    assert set(res["latency_ms"]) == {"p50", "p95", "p99", "mean", "max"}
    assert res["latency_ms"]["p50"] <= res["latency_ms"]["p95"] <= res["latency_ms"]["p99"]
    assert sum(res["plans"].values()) == res["ok"] and "answer" in res["plans"]
    assert report["kb"]["snippets"] == 95 and report["settings"]["clients"] == 2
    mem = report["server_memory"]
    assert mem["peak_sum_mib"] >= mem["peak_max_mib"] > 0
    assert {p["role"] for p in mem["processes"]} >= {"main"}
    assert report["client_cpu"]["seconds"] >= 0 and report["machine"]["cores"] >= 1
    assert report["machine"]["python_loop_ms"] > 0  # the yardstick that compares machines
    assert "Python loop" in out
    assert "latency   p50" in out and "[bench]" in err  # human report on stdout, progress on stderr
    # The kept directory has the deployment and a server log; the server is gone.
    assert (keep / "kefu.db").exists() and (keep / "server.log").exists()
    # Conversations were new for every request: the first-reply path and the writes ran each time.
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{keep / 'kefu.db'}")
    with engine.connect() as conn:
        n_conv = conn.execute(text("select count(*) from conversations")).scalar_one()
        n_sugg = conn.execute(text("select count(*) from suggestions")).scalar_one()
    engine.dispose()
    assert n_sugg == n_conv >= res["ok"]
    assert format_report(report).startswith("kefu bench")

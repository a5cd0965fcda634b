"""``kefu kb tune``: models stored in the shared database, switch only if better, rollback, fitted
fusion and thresholds, and replicas (other stores, other model caches) following the active model."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from knowledge.errors import ImportFailed
from knowledge.model import Snippet
from knowledge.model_store import ACTIVE_MODEL_KEY, PREVIOUS_MODEL_KEY, ModelStore, ModelStoreError
from knowledge.retriever import RetrievalConfig
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.tune_cmd import Probe, TuneOptions, fit_thresholds, read_pairs_file, run_tune, seen_pairs
from knowledge.tuning import Pair, pair_key, split_pairs

QUIET = TuneOptions(epochs=2, show_progress=False)


def _settings(url: str, root: Path, name: str = "a") -> KnowledgeSettings:
    return KnowledgeSettings(
        database_url=url,
        index_dir=root / f"index-{name}",
        models_dir=root / f"models-{name}",
        embedding_model="",
        # the static model's storage and switching, alone (e5 with it: tests/test_e5.py)
        encoder="none",
        auto_tune_after=0,
        retrieval_explicit=frozenset(),
    )


def _quiet(_msg: str) -> None:
    pass


def test_tuned_model_lives_in_the_database_and_a_replica_loads_it(
    db_url: str, tmp_path: Path, demo_snippets: list[Snippet]
) -> None:
    """Machine A tunes; machine B (its own store, an empty model cache) loads the same model."""
    sa = _settings(db_url, tmp_path, "a")
    store_a = Store(db_url)
    store_a.import_snippets(demo_snippets, actor="t")
    report = run_tune(sa, TuneOptions(epochs=2, show_progress=False, force=True), store=store_a, say=_quiet)
    assert report["switched"] is True and report["switched_to"].startswith("db:kb-static-")
    assert report["held_out"] > 0 and {"recall@5", "mrr@10", "retrieval", "labels"} <= set(report["new"])
    assert store_a.get_meta(ACTIVE_MODEL_KEY) == report["switched_to"]
    stored = ModelStore(store_a, sa.models_dir).list()
    assert [m.ref for m in stored] == [report["switched_to"]] and stored[0].size > 1000

    sb = _settings(db_url, tmp_path, "b")
    store_b = Store(db_url)
    kb_a = KnowledgeBase(sa, store=store_a)
    kb_b = KnowledgeBase(sb, store=store_b)
    try:
        assert kb_b.embedder.model_id == kb_a.embedder.model_id
        assert kb_b.embedder.model_id.startswith("kb-static-")
        assert (sb.models_dir / report["switched_to"][3:] / "kefu_model.json").exists()
        # The fusion and thresholds fitted on held-out pairs travel with the model.
        fitted = report["new"]["retrieval"]
        cfg = kb_b.retriever.config
        assert (cfg.fusion, cfg.dense_weight, cfg.high, cfg.medium) == (
            fitted["fusion"],
            fitted["dense_weight"],
            fitted["high"],
            fitted["medium"],
        )
        kb_b.open_index()
        hits = kb_b.retriever.search("怎么申请退货", k=3).hits
        assert hits and hits[0].snippet_id.startswith("faq-returns")
    finally:
        kb_a.close()
        kb_b.close()


def test_replica_switches_when_another_one_tunes(
    db_url: str, tmp_path: Path, demo_snippets: list[Snippet]
) -> None:
    """A running replica swaps in the model another replica activated, at its next search."""
    store = Store(db_url)
    store.import_snippets(demo_snippets, actor="t")
    replica = KnowledgeBase(_settings(db_url, tmp_path, "b"))
    try:
        replica.open_index()
        before = replica.embedder.model_id
        assert before.startswith("all-MiniLM-L6-v2@")
        report = run_tune(
            _settings(db_url, tmp_path, "a"),
            TuneOptions(epochs=2, show_progress=False, force=True),
            store=store,
            say=_quiet,
        )
        replica.retriever.search("怎么申请退货")  # notices the new KB revision
        deadline = time.monotonic() + 120
        while replica.model_ref != report["switched_to"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert replica.model_ref == report["switched_to"]
        assert replica.embedder.model_id.startswith("kb-static-") and replica.embedder.model_id != before
        res = replica.retriever.search("怎么申请退货", k=3)
        assert res.hits[0].dense is not None  # the dense side counts now (the KB model knows Chinese)
    finally:
        replica.close()
        store.close()


def test_not_better_keeps_the_model_and_rollback_returns_to_the_previous(
    tmp_path: Path, demo_snippets: list[Snippet]
) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    s = _settings(url, tmp_path)
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    try:
        with pytest.raises(ModelStoreError):
            ModelStore(store, s.models_dir).rollback()
        first = run_tune(s, TuneOptions(epochs=2, show_progress=False, force=True), store=store, say=_quiet)
        # Nothing new since: every pair was seen by the current model, so none can be held out to
        # compare fairly, and a tune that cannot show it is better does not switch.
        again = run_tune(s, QUIET, store=store, say=_quiet)
        assert again["held_out"] == 0 and "new" not in again
        assert again["switched"] is False and store.get_meta(ACTIVE_MODEL_KEY) == first["switched_to"]
        forced = run_tune(
            s, TuneOptions(epochs=2, show_progress=False, force=True, seed=1), store=store, say=_quiet
        )
        assert store.get_meta(ACTIVE_MODEL_KEY) == forced["switched_to"]
        assert store.get_meta(PREVIOUS_MODEL_KEY) == first["switched_to"]
        rev = store.revision()
        assert ModelStore(store, s.models_dir).rollback() == first["switched_to"]
        assert store.get_meta(ACTIVE_MODEL_KEY) == first["switched_to"]
        assert store.revision() == rev + 1  # replicas notice the switch through the KB revision
    finally:
        store.close()


def test_pairs_file_is_validated_and_used(tmp_path: Path, demo_snippets: list[Snippet]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "怎么退", "positive": "退货流程是怎样的？"}\n{"anchor": ""}\nnope\n', "utf-8")
    with pytest.raises(ImportFailed) as err:
        read_pairs_file(bad)
    assert [(p.location, p.field) for p in err.value.problems] == [
        ("line 2", "anchor"),
        ("line 2", "positive"),
        ("line 3", None),
    ]
    good = tmp_path / "pairs.jsonl"
    good.write_text(
        "\n".join(
            json.dumps({"anchor": a, "positive": "退货流程是怎样的？"}, ensure_ascii=False)
            for a in ("东西不想要了咋整", "退掉要怎么操作")
        ),
        "utf-8",
    )
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    try:
        report = run_tune(
            _settings(url, tmp_path),
            TuneOptions(epochs=1, show_progress=False, pairs_file=good),
            store=store,
            say=_quiet,
        )
        assert report["pairs"]["file"] == 2
    finally:
        store.close()


def test_thresholds_make_low_mean_a_wrong_top_hit() -> None:
    right = [Probe(1, True, 0.5 + i / 100, True) for i in range(30)]  # 0.50-0.79
    wrong = [Probe(3, False, 0.1 + i / 100, True) for i in range(20)]  # 0.10-0.29
    unanswerable = [Probe(None, False, 0.2 + i / 100, False) for i in range(10)]  # 0.20-0.29
    th = fit_thresholds(right + wrong + unanswerable, RetrievalConfig())
    assert th["fitted"] and 0.29 < th["medium"] <= 0.5
    assert th["high"] >= th["medium"]
    few = fit_thresholds(right[:5], RetrievalConfig())
    assert few == {"high": 0.65, "medium": 0.36, "fitted": False}


def test_automatic_retuning_after_n_accepted_candidates(tmp_path: Path, demo_snippets: list[Snippet]) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    settings = replace(_settings(url, tmp_path), auto_tune_after=2)
    kb = KnowledgeBase(settings, store=store)
    try:
        cands = kb.candidates()
        cands.add_accepted("faq-returns-process", "退货咋操作", actor="editor")
        assert kb.auto_tune is None  # one accepted: not yet
        cands.add_accepted("faq-returns-process", "退货的流程", actor="editor")
        assert kb.auto_tune is not None
        kb.auto_tune.join(timeout=600)
        report = kb.last_auto_tune
        assert report is not None and report["pairs"]["similar_questions"] > 0
        # The bundled model is BM25 for Chinese: the tuned model is better, so it was switched to.
        assert report["switched"] is True and store.get_meta(ACTIVE_MODEL_KEY) == report["switched_to"]
        cands.add_accepted("faq-returns-process", "怎样退货呢", actor="editor")
        assert kb.auto_tune is not None and not kb.auto_tune.is_alive()  # 3 - 2 < 2: no new run
    finally:
        kb.close()


def test_split_holds_out_only_pairs_the_current_model_has_not_seen() -> None:
    """A re-tune's held-out questions are new pairs (accepted candidates), a snippet's only one too."""
    old = [Pair(f"旧问法{i}", f"问题{i % 5}", f"s{i % 5}") for i in range(40)]
    new = [Pair(f"新问法{i}", f"单独问题{i}", f"single{i}") for i in range(40)]
    seen = frozenset(pair_key(p) for p in old)
    train, test = split_pairs(old + new, 0.25, 0, seen=seen)
    assert test and not {pair_key(p) for p in test} & seen
    assert set(old) <= set(train) and len(train) + len(test) == 80
    # every held-out pair here is its snippet's only pair: across snippets, not within them
    assert all(p.snippet_id and p.snippet_id.startswith("single") for p in test)
    # a first tune (nothing seen) never holds out a snippet's only pair while others have several
    _, first = split_pairs(old + new, 0.25, 0)
    assert first and all(p.snippet_id and p.snippet_id.startswith("s") for p in first)
    # ... and across snippets when every snippet has one (afqmc-dev after accepting candidates)
    _, single = split_pairs(new, 0.25, 0)
    assert 0 < len(single) < len(new)


def test_tuned_model_stores_its_pairs_and_the_retune_holds_out_only_new_ones(
    tmp_path: Path, demo_snippets: list[Snippet]
) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    settings = _settings(url, tmp_path)
    opts = TuneOptions(epochs=1, show_progress=False, force=True)
    try:
        first = run_tune(settings, opts, store=store, say=_quiet)
        assert first["seen_by_current"] == 0 and first["held_out"] > 0
        kb = KnowledgeBase(settings, store=store)
        seen = seen_pairs(kb.embedder)
        assert len(seen) == first["pairs"]["similar_questions"]  # trained on or held out: all of them
        kb.close()
        second = run_tune(settings, opts, store=store, say=_quiet)
        # nothing new since: the current model has seen every pair, so nothing can be held out fairly
        assert second["seen_by_current"] == len(seen) and second["held_out"] == 0
    finally:
        store.close()


def test_e5_shares_are_compared_on_a_few_fusions_and_the_best_share_on_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tune's cost: every e5 share times 4 fusions, then the whole grid at the best share only."""
    from knowledge import tune_cmd

    calls: list[tuple[float, int]] = []

    def fake_measure(embedder: object, *_a: object, grid: tuple[object, ...] = (), **_k: object) -> dict:
        w = float(embedder)  # type: ignore[arg-type]
        calls.append((w, len(grid)))
        score = 1 - abs(w - 0.7) + (0.01 if len(grid) == len(tune_cmd.FUSION_GRID) else 0)
        return {"recall@5": score, "mrr@10": score, "retrieval": {}, "labels": {}}

    monkeypatch.setattr(tune_cmd, "measure", fake_measure)
    monkeypatch.setattr(tune_cmd, "fuse", lambda _g, _s, w, cache_kb=True: w)
    best, weight = tune_cmd._best_fusion(object(), object(), [], [], None, [], 0, None)  # type: ignore[arg-type]
    assert weight == 0.7
    assert calls[:-1] == [(w, len(tune_cmd.SHARE_GRID)) for w in tune_cmd.E5_WEIGHTS]
    assert calls[-1] == (0.7, len(tune_cmd.FUSION_GRID))
    assert set(tune_cmd.SHARE_GRID) <= set(tune_cmd.FUSION_GRID)
    assert best["mrr@10"] == best["e5_weights"]["0.7"]["mrr@10"] == pytest.approx(1.01)

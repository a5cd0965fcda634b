"""Indexes: traditional-Chinese queries, persistence with a manifest, rebuilds and single-edit updates."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.index import KnowledgeIndex
from knowledge.model import Snippet, SnippetFilter
from knowledge.retriever import HybridRetriever, RetrievalConfig
from knowledge.store import Store
from knowledge.text import Analyzer


def _open(store: Store, embedder: SentenceTransformerEmbedder, root: Path) -> tuple[KnowledgeIndex, str]:
    index = KnowledgeIndex(embedder, Analyzer("wcb"))
    how = index.open(store, root, log_fn=lambda _m: None)
    return index, how


def test_traditional_query_finds_simplified_snippet(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    r = HybridRetriever(index, RetrievalConfig())
    res = r.search("請問怎麼申請退貨？", k=3)
    assert res.hits[0].snippet_id == "faq-returns-process"
    assert res.dense_weight == 0  # the English model has no say on Chinese
    full_width = r.search("ＹＩ空氣炸鍋能烤蛋糕嗎", k=3)
    assert full_width.hits[0].snippet_id == "faq-y1-bake-cake"


def test_english_query_uses_dense_model(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    res = HybridRetriever(index).search("can I send back something I bought", k=3)
    assert res.dense_weight > 0
    assert res.hits[0].snippet_id == "faq-en-returns"
    assert res.hits[0].dense is not None


def test_filters_status_kind_and_validity(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    r = HybridRetriever(index)
    ids = [
        h.snippet_id
        for h in r.search("双12有什么活动", k=10, flt=SnippetFilter(valid_on=date(2026, 11, 26))).hits
    ]
    assert "promo-2026-double12" in ids and "promo-2025-double12" not in ids  # expired
    old = r.search("双12有什么活动", k=10, flt=SnippetFilter(valid_on=date(2025, 12, 10))).hits
    assert "promo-2025-double12" in [h.snippet_id for h in old]
    drafts = [h.snippet_id for h in r.search("礼品包装", k=10).hits]
    assert "faq-gift-wrapping" not in drafts  # a draft is not served
    assert "faq-gift-wrapping" in [
        h.snippet_id for h in r.search("礼品包装", k=10, flt=SnippetFilter(status=None, valid_on=None)).hits
    ]
    only = r.search("空气炸锅", k=10, flt=SnippetFilter(kinds=("product",)))
    assert only.hits and {h.snippet.kind for h in only.hits} == {"product"}


def test_each_hit_says_what_matched_and_how_sure(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    r = HybridRetriever(index)
    exact = r.search("快递把东西压坏了", k=3).hits[0]
    assert exact.snippet_id == "faq-shipping-damaged"
    assert exact.matched_field == "similar" and exact.matched_text == "快递把东西压坏了"
    assert exact.confidence == "high"
    far = r.search("今天天气怎么样", k=3)
    assert far.confidence == "low"


def test_index_persisted_loaded_and_rebuilt_when_model_changes(
    store: Store,
    demo_snippets: list[Snippet],
    minilm: SentenceTransformerEmbedder,
    demo_model_dir: Path,
    tmp_path: Path,
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    root = tmp_path / "idx"
    _, how = _open(store, minilm, root)
    assert how.startswith("rebuilt index (no saved index)")
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    assert manifest["model_id"] == minilm.model_id and manifest["kb_revision"] == store.revision()
    assert set(manifest["checksums"]) == {"dense.faiss", "texts.jsonl", "snippets.jsonl"}

    index2, how = _open(store, minilm, root)
    assert how.startswith("loaded saved index")
    assert len(index2.texts) == sum(len(s.texts()) + 1 for s in demo_snippets)  # + each answer

    tuned = SentenceTransformerEmbedder(str(demo_model_dir))
    index3, how = _open(store, tuned, root)
    assert "rebuilt index (built with model" in how
    assert json.loads((root / "current" / "manifest.json").read_text())["model_id"] == tuned.model_id
    # The KB model understands Chinese: the dense side now counts.
    res = HybridRetriever(index3).search("东西坏了想换个新的", k=3)
    assert res.dense_weight > 0 and res.hits[0].dense is not None


def test_corrupt_index_is_rebuilt(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets[:10], actor="t")
    root = tmp_path / "idx"
    _open(store, minilm, root)
    with (root / "current" / "texts.jsonl").open("a") as f:
        f.write("garbage\n")
    _, how = _open(store, minilm, root)
    assert "checksum mismatch in texts.jsonl" in how


def test_single_edit_updates_index_without_full_rebuild(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    r = HybridRetriever(index, RetrievalConfig(sync_interval_s=0), store)
    n_texts = len(index.texts)
    assert r.search("炒锅能不能放进烤箱", k=1).hits[0].snippet_id != "faq-c6-oven"

    s = store.add(
        Snippet(
            id="faq-c6-oven",
            question="炒锅能不能放进烤箱？",
            answer="C6 炒锅手柄不耐高温，请勿放入烤箱。",
            similar_questions=("炒锅进烤箱",),
        ),
        actor="editor",
    )
    index.embedded_last = -1
    assert index.sync(store) == 1
    assert index.embedded_last == 2  # only the new snippet's two texts were embedded
    assert len(index.texts) == n_texts + 3  # question, similar question, answer (BM25 only)
    assert r.search("炒锅能不能放进烤箱", k=1).hits[0].snippet_id == "faq-c6-oven"

    store.update(s.id, {"similar_questions": ["炒锅可以进烤箱吗"]}, expected_version=1, actor="editor")
    r.search("任意", k=1)  # a search notices the new revision and catches up
    assert r.search("炒锅可以进烤箱吗", k=1).hits[0].matched_text == "炒锅可以进烤箱吗"
    assert "炒锅进烤箱" not in {t.text for t in index.texts.values()}

    store.delete(s.id, expected_version=2, actor="editor")
    index.sync(store)
    assert "faq-c6-oven" not in index.snippets and len(index.texts) == n_texts


def test_unchanged_reimport_embeds_nothing(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index, _ = _open(store, minilm, tmp_path / "idx")
    store.import_snippets(demo_snippets, actor="t")
    assert index.sync(store) == 0
    # A full rebuild takes every vector from the cache in the database.
    index.build(store)
    assert index.embedded_last == 0


@pytest.mark.parametrize("threshold", [10])
def test_hnsw_past_threshold_supports_edits(
    store: Store, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder, threshold: int
) -> None:
    store.import_snippets(demo_snippets, actor="t")
    index = KnowledgeIndex(minilm, Analyzer("wcb"), hnsw_threshold=threshold)
    index.build(store)
    assert index.dense.kind == "hnsw"
    r = HybridRetriever(index, RetrievalConfig(sync_interval_s=0), store)
    assert r.search("What is your return policy?", k=1).hits[0].snippet_id == "faq-en-returns"
    cur = store.get("faq-en-returns")
    store.update(cur.id, {"status": "archived"}, expected_version=cur.version, actor="e")
    index.sync(store)
    assert "faq-en-returns" not in [h.snippet_id for h in r.search("What is your return policy?", k=5).hits]


def test_hnsw_index_searches_with_the_current_ef_search_after_a_load(
    tmp_path: Path, demo_snippets: list[Snippet], minilm: SentenceTransformerEmbedder
) -> None:
    import faiss

    from knowledge.index import HNSW_EF_SEARCH

    index = KnowledgeIndex(minilm, Analyzer("wcb"), hnsw_threshold=10)
    index.build_from(demo_snippets)
    faiss.downcast_index(index.dense.index.index).hnsw.efSearch = 500  # saved by an older setting
    index.save(tmp_path)
    loaded = KnowledgeIndex(minilm, Analyzer("wcb"), hnsw_threshold=10)
    assert loaded.load(tmp_path) is None and loaded.dense.kind == "hnsw"
    assert faiss.downcast_index(loaded.dense.index.index).hnsw.efSearch == HNSW_EF_SEARCH

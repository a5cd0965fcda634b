"""The retriever's fast paths (row layout, per-query scores, revision check) change nothing it returns.

``reference_search`` is the straightforward aggregation the retriever used before (every matching
row sorted by snippet, every found snippet sorted by score); the fast one must give the same hits,
scores and labels for the same index, whatever the filter, k and fusion.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest

from eval.bench import base_entries, generate_kb, write_jsonl
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.index import IndexedText, KnowledgeIndex, LexicalIndex, current_revision
from knowledge.io import read_snippets
from knowledge.model import Snippet, SnippetFilter
from knowledge.retriever import Hit, HybridRetriever, RetrievalConfig, _QueryWeights
from knowledge.service import KnowledgeBase
from knowledge.settings import KnowledgeSettings
from knowledge.store import Store
from knowledge.text import Analyzer, normalize
from tests.conftest import REPO

FILTERS = [
    SnippetFilter(valid_on=date(2026, 11, 26)),
    SnippetFilter(status=None, valid_on=None),
    SnippetFilter(kinds=("restricted",)),
    SnippetFilter(kinds=("promotion",), valid_on=date(2026, 11, 26)),
    SnippetFilter(kinds=("faq", "policy")),
    SnippetFilter(products=("Y1空气炸锅",), valid_on=None),
    SnippetFilter(status="draft", valid_on=None),
]


def reference_search(r: HybridRetriever, query: str, k: int, flt: SnippetFilter) -> list[Hit]:
    """The retriever's ranking computed the plain way (no layout, no per-query memory)."""
    idx, cfg = r.index, r.config
    qtokens = idx.analyzer.tokens(normalize(query), normalized=True)
    n = len(idx.snippet_order)
    lex_best = np.zeros(n)
    lex_row = np.full(n, -1, dtype=np.int64)
    answer = np.zeros(n)
    scores = idx.lexical.scores(qtokens)
    for row in np.flatnonzero(scores > 0).tolist():  # rows in order: the first of equals wins
        o, sc = int(idx.row_owner[row]), float(scores[row])
        if idx.row_is_answer[row]:
            answer[o] += sc
        elif sc > lex_best[o]:
            lex_best[o], lex_row[o] = sc, row
    for o in range(n):
        if lex_row[o] < 0 and answer[o] > 0:
            lex_row[o] = next(i for i in range(len(scores)) if idx.row_owner[i] == o and idx.row_is_answer[i])
    lex = lex_best + answer
    coverage = idx.embedder.coverage(query)
    dw = 0.0
    if coverage >= cfg.min_coverage and cfg.dense_weight > 0:
        dw = cfg.dense_weight * (coverage - cfg.min_coverage) / (1 - cfg.min_coverage or 1)
    dense = np.full(n, -1.0)
    dense_tid = np.zeros(n, dtype=np.int64)
    if dw > 0 and idx.dense.ntotal:
        ds, di = idx.dense.search(idx.embedder.encode_query(query), cfg.dense_pool)
        for dsc, tid in zip(ds.tolist(), di.tolist(), strict=True):
            hit = idx.texts.get(int(tid))
            o = idx.ordinal.get(hit.snippet_id, -1) if hit is not None else -1
            if o >= 0 and dsc > dense[o]:
                dense[o], dense_tid[o] = dsc, int(tid)
    found = np.flatnonzero((lex > 0) | (dense > -1.0))
    if cfg.fusion == "weighted":
        max_lex = float(lex.max()) if n else 0.0
        fused = (1 - dw) * (lex / max_lex if max_lex > 0 else lex) + dw * np.clip(dense, 0.0, None)
    else:
        fused = np.zeros(n)
        for part, weight in ((lex, 1 - dw), (dense, dw)):
            has = found[part[found] > (0 if part is lex else -1.0)]
            ranked = has[np.argsort(-part[has], kind="stable")]
            fused[ranked] += weight / (cfg.rrf_k + np.arange(1, ranked.size + 1))
    hits: list[Hit] = []
    for o in found[np.lexsort((found, -fused[found]))].tolist():
        sid = idx.snippet_order[o]
        if not flt.accepts(idx.snippets[sid]):
            continue
        lex_hit = (float(lex[o]), int(idx.lexical.row_ids[lex_row[o]])) if lex_row[o] >= 0 else None
        dense_hit = (float(dense[o]), int(dense_tid[o])) if dense[o] > -1.0 else None
        hits.append(
            r._hit(sid, float(fused[o]), lex_hit, dense_hit, dw, _QueryWeights(qtokens, idx.lexical.idf))
        )
        if len(hits) >= k:
            break
    return hits


def _same(index: KnowledgeIndex, queries: list[str], filters: list[SnippetFilter]) -> int:
    checked = 0
    # exact BM25 on every text (lexical_exact): the budgeted lexical path has its own test below
    exact = 10**9
    for config in (RetrievalConfig(lexical_exact=exact), RetrievalConfig(fusion="rrf", lexical_exact=exact)):
        r = HybridRetriever(index, config)
        for q in queries:
            for flt in filters:
                for k in (1, 5):
                    fast = [h.to_dict() for h in r.search(q, k=k, flt=flt).hits]
                    assert fast == [h.to_dict() for h in reference_search(r, q, k, flt)], (q, flt, k)
                    checked += 1
    return checked


@pytest.fixture(scope="module")
def demo_queries() -> list[str]:
    import json

    lines = (REPO / "knowledge" / "data" / "demo_queries.jsonl").read_text("utf-8").splitlines()
    extra = ["退货", "hello, can I return it?", "价格多少", "y1 空气炸锅", ""]
    return [*[json.loads(line)["query"] for line in lines if line.strip()][:25], *extra]


def test_demo_kb_same_hits_as_reference(
    demo_snippets: list[Snippet], demo_model_dir: Path, demo_queries: list[str]
) -> None:
    index = KnowledgeIndex(SentenceTransformerEmbedder(str(demo_model_dir)), Analyzer("wcb"))
    index.build_from(demo_snippets)
    assert _same(index, demo_queries, FILTERS) == 2 * len(demo_queries) * len(FILTERS) * 2


def test_generated_kb_same_hits_as_reference(
    tmp_path: Path, demo_model_dir: Path, demo_queries: list[str]
) -> None:
    """A KB with many near-duplicates (600 snippets from the bench recipe: six variants of each), so ties and the partial
    sort past the first candidates are exercised."""
    base, _ = base_entries(None)
    write_jsonl(generate_kb(600, seed=2, base=base), tmp_path / "kb.jsonl")
    snippets = read_snippets(tmp_path / "kb.jsonl")
    index = KnowledgeIndex(
        SentenceTransformerEmbedder(str(demo_model_dir)),
        Analyzer("wcb", sorted({s.product for s in snippets if s.product})),
    )
    index.build_from(snippets)
    flts = [*FILTERS[:4], SnippetFilter(products=("青禾保温杯", "云杉电饭煲Pro"), valid_on=None)]
    _same(index, demo_queries[:12], flts)


def test_scores_follow_edits_and_other_replicas(tmp_path: Path, demo_snippets: list[Snippet]) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = Store(url)
    store.import_snippets(demo_snippets, actor="t")
    minilm = SentenceTransformerEmbedder()
    kb = KnowledgeBase(KnowledgeSettings(database_url=url, index_dir=tmp_path / "a"), embedder=minilm)
    kb.open_index(log_fn=lambda _m: None)
    replica = KnowledgeBase(KnowledgeSettings(database_url=url, index_dir=tmp_path / "b"), embedder=minilm)
    replica.open_index(log_fn=lambda _m: None)
    query = "能不能寄到火星基地"
    for r in (kb, replica):
        assert all(h.snippet_id != "faq-shipping-remote" for h in r.retriever.search(query, k=1).hits)
    s = kb.store.get("faq-shipping-remote")
    kb.store.update(
        s.id,
        {"similar_questions": [*s.similar_questions, query]},
        expected_version=s.version,
        actor="t",
    )
    for r in (kb, replica):  # the same query again: its remembered scores are from an older index
        assert r.retriever.search(query, k=1).hits[0].snippet_id == "faq-shipping-remote"
    assert current_revision(replica.store) == replica.store.revision() == replica.index.kb_revision
    kb.close()
    replica.close()
    store.close()


def test_current_revision_matches_store(store: Store) -> None:  # SQLite and PostgreSQL
    assert current_revision(store) == store.revision() == 0
    store.add(Snippet(id="a", question="问题", answer="答案"), actor="t")
    assert current_revision(store) == store.revision() == 1


def test_tokens_are_shared_strings(demo_snippets: list[Snippet], tmp_path: Path) -> None:
    index = KnowledgeIndex(SentenceTransformerEmbedder(), Analyzer("wcb"))
    index.build_from(demo_snippets)
    occurrences = [tok for t in index.texts.values() for tok in t.tokens]
    assert len({id(t) for t in occurrences}) == len(set(occurrences))


def test_static_model_query_fast_path_matches_sentence_transformers(demo_model_dir: Path) -> None:
    """encode_query of a static model is a numpy mean of token vectors: the same vector as the
    sentence-transformers call, for Chinese, traditional, English, empty-vocabulary and mixed text."""
    emb = SentenceTransformerEmbedder(str(demo_model_dir))
    assert emb._static is not None
    texts = ["怎么申请退货", "運費險怎麼理賠", "order status", "￥￥￥", "", "Y1空气炸锅保修多久？"]
    fast = np.stack([emb.encode_query(t) for t in texts])
    slow = emb.encode_documents(texts)
    assert fast.dtype == np.float32 and fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_transformer_model_has_no_static_fast_path(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm._static is None
    np.testing.assert_allclose(
        minilm.encode_query("refund"), minilm.encode_documents(["refund"])[0], atol=1e-6
    )


def test_faiss_search_uses_one_thread_from_any_thread(demo_model_dir: Path) -> None:
    """OpenMP's thread count is per calling thread: a search from a web worker thread must not use
    every core for one query (it cost 8 ms of CPU per search instead of 0.05 ms)."""
    import threading

    import faiss

    from knowledge.index import DenseIndex

    emb = SentenceTransformerEmbedder(str(demo_model_dir))
    dense = DenseIndex(emb.dim, hnsw_threshold=10_000)
    vecs = emb.encode_documents(["退货", "换货", "发票"])
    dense.add(np.arange(3, dtype=np.int64), vecs)
    seen: list[int] = []

    def worker() -> None:
        faiss.omp_set_num_threads(4)  # what a fresh thread may start with
        dense.search(vecs[0], 2)
        seen.append(faiss.omp_get_max_threads())

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert seen == [1]


def test_lexical_search_past_the_budget_scores_the_rarer_tokens_rows_exactly(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    """On a KB whose queries have more postings than the budget, the lexical search scores the rows
    that contain the query's rarer tokens, each exactly as the full BM25 does; within the budget it is
    the full BM25, every matching row."""
    base, _ = base_entries(None)
    snippets = [Snippet.from_dict(r) for r in generate_kb(1500, seed=3, base=base)]
    index = KnowledgeIndex(SentenceTransformerEmbedder(str(demo_model_dir)), Analyzer("wcb"))
    index.build_from(snippets)
    lexical = index.lexical
    queries = ["请问空气炸锅怎么退货", "青禾保温杯可以用洗碗机洗吗？", "我想问下发票怎么开", "你好"]
    partial = 0
    for q in queries:
        tokens = index.analyzer.tokens(q)
        exact = lexical.scores(tokens)
        rows, scores, complete = lexical.search(tokens, exact=10**9, budget=300)
        assert complete and rows.tolist() == np.flatnonzero(exact > 0).tolist()
        assert scores.tolist() == exact[rows].tolist()  # bit for bit
        rows, scores, complete = lexical.search(tokens, exact=300, budget=300)
        ids = lexical.token_ids(tokens)
        sizes = {int(t): int(lexical._indptr[t + 1] - lexical._indptr[t]) for t in ids}
        if sum(sizes.values()) <= 300:
            continue
        partial += 1
        assert not complete and 0 < rows.size < np.count_nonzero(exact > 0)
        np.testing.assert_allclose(scores, exact[rows], rtol=1e-5)
        rarest = min(sizes, key=lambda t: sizes[t])
        posting = lexical._rows[lexical._indptr[rarest] : lexical._indptr[rarest + 1]]
        if sizes[rarest] <= 300:  # every row with the rarest token is scored
            assert set(posting.tolist()) <= set(rows.tolist())
        else:  # only the best rows of the rarest token
            assert rows.size == 300
        # rows the caller adds (the dense search's texts) are scored exactly too, when they match
        left_out = np.setdiff1d(np.flatnonzero(exact > 0), rows)[:5]
        with_also, also_scores, _ = lexical.search(tokens, exact=300, budget=300, also=left_out)
        assert set(left_out.tolist()) <= set(with_also.tolist())
        np.testing.assert_allclose(also_scores, exact[with_also], rtol=1e-5)
    assert partial >= 3
    r = HybridRetriever(index, RetrievalConfig(lexical_exact=300, lexical_budget=300))
    res = r.search("请问空气炸锅怎么退货", k=5, flt=SnippetFilter(valid_on=None))
    assert res.hits and res.stats["exact_bm25"] is False
    full = HybridRetriever(index, RetrievalConfig()).search("请问空气炸锅怎么退货", k=5)
    assert full.stats["exact_bm25"] is True


def test_kb_model_shares_the_kb_analyzer_only_when_it_segments_alike(demo_model_dir: Path) -> None:
    """A query is segmented once for BM25 and the vector when the KB's analyzer is set up as the
    model's; the vector is the same either way."""
    emb = SentenceTransformerEmbedder(str(demo_model_dir))
    assert emb.analyzer is not None
    before = emb.encode_query("運費險怎麼理賠")
    other = Analyzer("c", emb.analyzer.terms)
    assert emb.share_analyzer(other) is False and emb.analyzer is not other
    same = Analyzer(emb.analyzer.mode, emb.analyzer.terms)
    assert emb.share_analyzer(same) is True and emb.analyzer is same
    np.testing.assert_array_equal(emb.encode_query("運費險怎麼理賠"), before)
    assert same.cached_tokens.cache_info().currsize >= 1  # the query's tokens are there for BM25


def _bm25s_reference(
    texts: list[IndexedText], k1: float = 1.2, b: float = 0.75
) -> tuple[Any, dict[str, int]]:
    """bm25s built the way the index used to build it: a fresh vocabulary in order of appearance."""
    vocab: dict[str, int] = {}
    docs = [[vocab.setdefault(tok, len(vocab)) for tok in t.tokens] for t in texts]
    bm = bm25s.BM25(k1=k1, b=b)
    bm.index(bm25s.tokenization.Tokenized(ids=docs, vocab=vocab), show_progress=False)
    return bm, vocab


def _assert_same_as_bm25s(lexical: LexicalIndex, texts: list[IndexedText], queries: list[list[str]]) -> None:
    bm, vocab = _bm25s_reference(texts)
    data, indices, indptr = bm.scores["data"], bm.scores["indices"], bm.scores["indptr"]
    for tok, j in vocab.items():  # every token's postings: the same rows, the same float32 bits
        mine = lexical.vocab.get(tok)
        if mine is None:  # bm25s adds "" to the vocabulary it is given, past its postings
            assert tok == "" and j == indptr.size - 1
            continue
        a, b = lexical._indptr[mine], lexical._indptr[mine + 1]
        assert lexical._rows[a:b].tolist() == indices[indptr[j] : indptr[j + 1]].tolist(), tok
        assert (
            lexical._data[a:b].view(np.uint32).tolist()
            == data[indptr[j] : indptr[j + 1]].view(np.uint32).tolist()
        )
    assert lexical.vocab == {t: j for t, j in vocab.items() if t}  # numbered alike, nothing stale
    n = len(texts)
    df: dict[str, int] = {}
    for t in texts:
        for tok in set(t.tokens):
            df[tok] = df.get(tok, 0) + 1
    assert lexical.idf == {tok: float(np.log(1 + (n - c + 0.5) / (c + 0.5))) for tok, c in df.items()}
    for q in queries:
        known = [t for t in q if t in vocab]
        if not known:
            continue
        expected = np.asarray(bm.get_scores(known), dtype=np.float32) * lexical.row_weights
        assert lexical.scores(q).view(np.uint32).tolist() == expected.view(np.uint32).tolist(), q


def test_lexical_index_is_bm25s_bit_for_bit_before_and_after_edits(demo_snippets: list[Snippet]) -> None:
    """The numpy build gives bm25s's postings and scores exactly, also when a rebuild reuses the token
    ids of unchanged texts (rows removed, added and moved; a text re-analysed into other tokens)."""
    base, _ = base_entries(None)
    snippets = [*demo_snippets, *(Snippet.from_dict(r) for r in generate_kb(400, seed=5, base=base))]
    analyzer = Analyzer("wcb")
    texts = [
        IndexedText(i, s.id, fld, txt, tuple(analyzer.tokens(txt)))
        for i, (s, (fld, txt)) in enumerate((s, ft) for s in snippets for ft in s.texts())
    ]
    queries = [
        analyzer.tokens(q) for q in ("请问怎么申请退货？", "空气炸锅保修多久", "发票发票怎么开", "你好")
    ]
    lexical = LexicalIndex()
    lexical.build(texts)
    _assert_same_as_bm25s(lexical, texts, queries)
    # an edit: some texts gone, some new (with tokens never seen), the rest moved; one re-analysed
    kept = texts[50:][::-1]
    new = [
        IndexedText(10_000 + i, "new", "question", f"全新问题{i}", ("全新", "问题", f"词{i}"))
        for i in range(30)
    ]
    moved = kept[:5] + new + kept[5:]
    moved[0] = IndexedText(moved[0].id, moved[0].snippet_id, moved[0].field, "改", ("改", "过", "了"))
    lexical.build(moved)
    _assert_same_as_bm25s(lexical, moved, [*queries, ["全新", "词3", "改"]])
    lexical.build([])
    assert (
        lexical.scores(queries[0]).size == 0 and lexical.search(queries[0], exact=10, budget=10)[0].size == 0
    )


def test_budgeted_search_after_edits_is_the_fresh_builds() -> None:
    """A long-lived worker and a freshly started one answer alike: a token whose last text was deleted
    does not count, and equally rare tokens are taken in the same order (found in review)."""
    rows = [IndexedText(i, f"s{i}", "question", "", ("c", f"u{i}") + ("x",) * (i % 3)) for i in range(20)]
    edited, fresh = LexicalIndex(), LexicalIndex()
    edited.build([*rows, IndexedText(99, "s99", "question", "", ("gone",))])
    edited.build(rows)
    fresh.build(rows)
    for q in (["gone", "c"], ["c", "x"], ["u3", "x", "c"]):
        got, want = edited.search(q, exact=5, budget=5), fresh.search(q, exact=5, budget=5)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist(), q
    assert edited.search(["gone", "c"], exact=5, budget=5)[0].size == 5  # the rarest real token's best rows
    a = [IndexedText(i, f"a{i}", "question", "", ("a", "x" * (i + 1))) for i in range(3)]
    b = [IndexedText(10 + i, f"b{i}", "question", "", ("b", "y" * (i + 1))) for i in range(3)]
    edited, fresh = LexicalIndex(), LexicalIndex()
    edited.build(b + a)
    edited.build(a + b)
    fresh.build(a + b)
    got = edited.search(["a", "b"], exact=1, budget=2)[0].tolist()
    assert got == fresh.search(["a", "b"], exact=1, budget=2)[0].tolist()

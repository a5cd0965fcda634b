"""The persisted search indexes of one knowledge base: FAISS (dense) and BM25 (lexical).

Every snippet is indexed by its question and by each similar question; a text's FAISS id is a
stable 63-bit hash of (snippet id, text), so a single edit removes and adds just that snippet's
vectors. BM25 (bm25s) has no in-place update; it is re-indexed from the stored token lists, which
takes milliseconds for thousands of texts.

On disk an index is a directory with ``manifest.json`` (model id, dimension, KB revision, file
checksums), ``dense.faiss`` and ``texts.jsonl``; it is written to a temporary directory and then
swapped in with an atomic rename of the ``current`` link, so a crash never leaves half an index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse
from sqlalchemy import select
from tqdm import tqdm

from knowledge.embedding import Embedder
from knowledge.model import Snippet
from knowledge.schema import kb_state
from knowledge.store import Store
from knowledge.text import Analyzer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: OpenMP threads of one FAISS search (``KEFU_FAISS_THREADS``, set by ``KnowledgeBase``).
SEARCH_THREADS = 1
#: HNSW candidates explored per search (FAISS's efSearch). At 100,000 snippets 64 instead of 128
#: takes a search from 0.32 to 0.20 ms and leaves bq-dev's hit@1/hit@5 as they were (docs/benchmarks.md).
HNSW_EF_SEARCH = 64
#: Nearest KB texts whose mean similarity measures a text's hubness (``KnowledgeIndex._note_hubs``).
HUB_NEIGHBOURS = 30
#: Texts embedded and stored in the database cache at a time.
EMBED_CHUNK = 1024


_REVISION_SQL: dict[str, str] = {}


def current_revision(store: Store) -> int:
    """``store.revision()`` through one pooled DBAPI cursor, without SQLAlchemy's per-connection work.

    Every search asks it (``KEFU_RETRIEVAL_SYNC_INTERVAL_S=0``: replicas follow edits at once), so it is
    on the hot path: about 8 µs instead of 85 µs on SQLite.
    """
    engine = store.engine
    sql = _REVISION_SQL.get(engine.dialect.name)
    if sql is None:
        stmt = select(kb_state.c.revision).where(kb_state.c.id == 1)
        sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        _REVISION_SQL[engine.dialect.name] = sql
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql)
            row = cur.fetchone()
        finally:
            cur.close()
    finally:
        conn.close()  # back to the pool, which rolls back what the read began (PostgreSQL)
    return int(row[0]) if row is not None else store.revision()


def _interned(tokens: Iterable[str]) -> tuple[str, ...]:
    """Tokens as one shared string each: a KB has tens of thousands of distinct tokens but millions of
    token occurrences (about 2 GB of duplicate strings per process at 100,000 snippets otherwise)."""
    return tuple(map(sys.intern, tokens))


def text_id(snippet_id: str, text: str) -> int:
    digest = hashlib.blake2b(f"{snippet_id}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class IndexedText:
    id: int
    snippet_id: str
    field: str  # "question" or "similar"
    text: str  # the original, for display
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    format: int
    model_id: str
    dim: int
    analyzer: str
    terms: list[str]
    kb_revision: int
    n_texts: int
    dense_kind: str
    checksums: dict[str, str]
    built_at: float

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text("utf-8")))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DenseIndex:
    """FAISS inner product over normalised vectors: flat for small KBs, HNSW past a threshold."""

    def __init__(self, dim: int, *, hnsw_threshold: int, expected: int = 0) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.kind = "hnsw" if expected >= hnsw_threshold else "flat"
        self.index = self._new(self.kind)
        self.deleted: set[int] = set()  # HNSW cannot remove; its removed ids are filtered out

    def _new(self, kind: str) -> Any:
        inner: Any
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = HNSW_EF_SEARCH
            inner.hnsw.efConstruction = 80
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.deleted)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.deleted.difference_update(int(i) for i in ids)
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        if self.kind == "flat":
            self.index.remove_ids(np.array(ids, dtype=np.int64))
        else:
            self.deleted.update(ids)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.index.ntotal)
        if n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        kk = min(n, k + len(self.deleted))
        # OpenMP's thread count is per calling thread, and the web server searches from its worker
        # threads: unset there, one query would spin up every core (measured: 8 ms of CPU per search
        # on the demo KB instead of 0.05 ms).
        faiss.omp_set_num_threads(SEARCH_THREADS)
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), kk)
        s, i = scores[0], ids[0]
        keep = i >= 0
        if self.deleted:
            keep &= np.array([int(x) not in self.deleted for x in i])
        return s[keep][:k], i[keep][:k]

    def neighbour_similarity(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """Mean similarity of each vector to its ``k`` nearest indexed texts other than itself."""
        if not len(vectors) or int(self.index.ntotal) < 2:
            return np.zeros(len(vectors), dtype=np.float32)
        kk = min(int(self.index.ntotal), k + 1)
        faiss.omp_set_num_threads(SEARCH_THREADS)
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), kk)
        scores = np.where(ids >= 0, scores, np.nan)[:, 1:]  # the first is the text itself
        return np.nan_to_num(np.nanmean(scores, axis=1)).astype(np.float32)

    def vectors_of(self, ids: Iterable[int]) -> np.ndarray:
        return np.stack([self.index.reconstruct(int(i)) for i in ids])


def embed_cached(
    embedder: Embedder, store: Store | None, texts: list[str], progress: bool = False
) -> tuple[np.ndarray, int]:
    """Vectors of ``texts`` by ``embedder``, taken from the store's embedding cache where present and
    added to it otherwise; also how many were newly embedded."""
    keys = [embedder.input_key(t) for t in texts]
    cached = store.cached_vectors(embedder.model_id, keys) if store else {}
    missing = [i for i, k in enumerate(keys) if k not in cached]
    fresh: dict[str, np.ndarray] = {}
    # Stored chunk by chunk: an interrupted import of a large KB keeps what e5 already encoded.
    step = EMBED_CHUNK if store else max(1, len(missing))
    bar = tqdm(total=len(missing), desc="embedding", unit="text", disable=not progress or not missing)
    for at in range(0, len(missing), step):
        chunk = missing[at : at + step]
        vecs = embedder.encode_documents([texts[i] for i in chunk])
        part = {keys[i]: v for i, v in zip(chunk, vecs, strict=True)}
        if store:
            store.store_vectors(embedder.model_id, part)
        fresh.update(part)
        bar.update(len(chunk))
    bar.close()
    vectors = {**cached, **fresh}
    if not keys:
        return np.zeros((0, embedder.dim), dtype=np.float32), 0
    return np.stack([vectors[k] for k in keys]).astype(np.float32), len(missing)


def embed_cached_parts(
    embedder: Embedder, store: Store | None, texts: list[str], progress: bool = False
) -> tuple[np.ndarray, int]:
    """:func:`embed_cached`, with a fused embedder (``encoders.FusedEmbedder``) cached part by part:
    a new tune of the KB model re-embeds nothing with the general encoder. Also how many texts were
    newly embedded (by the part that embedded most)."""
    parts = getattr(embedder, "parts", None)
    if not parts:
        return embed_cached(embedder, store, texts, progress)
    cached = getattr(embedder, "cached", (True,) * len(parts))
    counted = [
        embed_cached(p, store if keep else None, texts, progress)
        for (p, _), keep in zip(parts, cached, strict=True)
    ]
    vectors = embedder.combine([v for v, _ in counted])  # type: ignore[attr-defined]
    return np.asarray(vectors, dtype=np.float32), max(n for _, n in counted)


def sorted_union(*parts: np.ndarray) -> np.ndarray:
    """The union of int arrays, sorted, as int64 (np.union1d hashes, which costs more on a few
    thousand ids; a boolean mask over every row costs a pass over the whole index)."""
    both = np.sort(np.concatenate(parts).astype(np.int64, copy=False))
    return both[np.r_[True, both[1:] != both[:-1]]] if both.size else both


class LexicalIndex:
    """BM25 over analyzer tokens, with bm25s's scores (Lucene variant, k1, b), built in numpy.

    The index keeps every text's precomputed score per token, token by token (a token's postings:
    the rows that contain it and their scores), exactly the arrays bm25s builds (a test compares
    them bit for bit). Building them is vectorised and reuses each unchanged text's token ids, so a
    KB edit at 100,000 snippets re-indexes in seconds, not the 20 s that bm25s's per-text Python
    loops took while every search of the worker waited (docs/benchmarks.md). Tokens are numbered by
    first appearance, as bm25s numbers them: after any edits the index equals a fresh build.

    Summing whole postings costs as many additions as the query's tokens have postings: at 100,000
    snippets a question's common characters (我, 的, 吗) touch over a million, and every row with one
    of them then has a score to aggregate. So :meth:`search` scores every matching row exactly, as
    bm25s does, only while the query's postings are few (every query of a small KB); past that, it
    takes the rows that contain the query's rarer tokens (from the rarest up, as many tokens as fit a
    budget) and the rows the caller adds (the texts the dense search found), and scores just those,
    exactly, with all the query's tokens, from a row-by-row copy of the same scores. Rows that share
    only common tokens with the query and were not found by the dense search are left out.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75, answer_weight: float = 0.5) -> None:
        self.k1, self.b = k1, b
        self.answer_weight = answer_weight
        self.row_weights = np.zeros(0, dtype=np.float32)
        self.vocab: dict[str, int] = {}
        self.built = False
        self.row_ids = np.zeros(0, dtype=np.int64)
        self.idf: dict[str, float] = {}
        self._weighted_from: int | None = None
        self._data = np.zeros(0, dtype=np.float32)  # the postings' scores, token by token
        self._rows = np.zeros(0, dtype=np.int32)  # the postings' rows, sorted within a token
        self._indptr = np.zeros(1, dtype=np.int64)  # token t's postings: _indptr[t]:_indptr[t + 1]
        self._by_row: Any = None  # the same scores row by row (scipy CSR), for scoring chosen rows
        # Every row's token ids, row after row (int32), where each row starts, and each row's token
        # tuple (an unchanged text keeps its tuple: its ids are copied, not looked up again).
        self._ids = np.zeros(0, dtype=np.int32)
        self._ids_start = np.zeros(1, dtype=np.int64)
        self._row_tokens: list[tuple[str, ...]] = []

    def build(self, texts: list[IndexedText]) -> None:
        ids, start = self._token_ids_of(texts)
        self.row_ids = np.array([t.id for t in texts], dtype=np.int64)
        self.row_weights = np.array(
            [self.answer_weight if t.field == "answer" else 1.0 for t in texts], dtype=np.float32
        )
        # The rows that carry a weight, when they are one run at the end (KnowledgeIndex puts the
        # answers last): then only those are multiplied.
        weighted = np.flatnonzero(self.row_weights != 1.0)
        tail = int(weighted[0]) if weighted.size else len(texts)
        self._weighted_from = tail if weighted.size == len(texts) - tail else None
        n, lengths = len(texts), np.diff(start)
        if not n or not ids.size:
            self.built = False
            self.idf = {}
            self._data, self._rows = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int32)
            self._indptr = np.zeros(1, dtype=np.int64)
            self._by_row = None
            return
        n_vocab = len(self.vocab)
        # (token, row) pairs sorted by token, then row, as bm25s lays out its postings, with counts.
        # Temporaries are freed as soon as possible: at 100,000 snippets each is 40-80 MB.
        # Packed as token << 32 | row (both below 2**31): sorted the same as (token, row), unpacked
        # with a shift and a mask instead of a 64-bit division.
        key = ids.astype(np.int64)
        key <<= 32
        key |= np.repeat(np.arange(n, dtype=np.int64), lengths)
        key.sort()
        head = np.empty(key.size, dtype=bool)
        head[0] = True
        np.not_equal(key[1:], key[:-1], out=head[1:])
        at = np.flatnonzero(head)
        del head
        tf = np.empty(at.size, dtype=np.float64)
        tf[:-1] = np.diff(at)
        tf[-1] = key.size - at[-1]
        pairs = key[at]
        del key, at
        tok = pairs >> 32
        row = pairs & 0xFFFFFFFF
        del pairs
        df = np.bincount(tok, minlength=n_vocab)
        # bm25s's arithmetic, operation for operation: IDF with math.log in float64, stored as float32;
        # the length part in float64 with the mean length of an int array; the product rounded once.
        idf32 = np.zeros(n_vocab, dtype=np.float32)
        present = np.flatnonzero(df)
        counts = df[present]
        distinct, where = np.unique(counts, return_inverse=True)
        idf32[present] = np.array(
            [math.log(1 + (n - c + 0.5) / (c + 0.5)) for c in distinct.tolist()], dtype=np.float64
        )[where]
        avg_len = lengths.mean()
        norm = self.k1 * ((1 - self.b) + self.b * lengths.astype(np.float64) / avg_len)
        score = norm[row]  # float64: k1 * (1 - b + b * len / avg) + tf, then tf / that, times idf
        score += tf
        np.divide(tf, score, out=score)
        del tf
        score *= idf32[tok]
        del tok
        self._data = score.astype(np.float32)
        del score
        self._rows = row.astype(np.int32)
        del row
        self._indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(df, out=self._indptr[1:])
        self.built = True
        shape = (n, n_vocab)
        self._by_row = scipy.sparse.csc_matrix((self._data, self._rows, self._indptr), shape=shape).tocsr()
        tokens = list(self.vocab)  # by id
        # The confidence's IDF keeps numpy's log, as before (the postings use math.log, as bm25s):
        # the two may differ in the last bit, and each side stays what it was.
        by_count = {c: float(np.log(1 + (n - c + 0.5) / (c + 0.5))) for c in distinct.tolist()}
        self.idf = {tokens[t]: by_count[c] for t, c in zip(present.tolist(), counts.tolist(), strict=True)}

    def _token_ids_of(self, texts: list[IndexedText]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's token ids, one after the other, and where each text's start (``len + 1``);
        called before ``row_ids`` moves on to ``texts``.

        A text indexed before with the same token tuple has its ids copied from the last build; only
        new or re-analysed texts are looked up in (and add to) the vocabulary.
        """
        vocab = self.vocab
        old_row = {tid: r for r, tid in enumerate(self.row_ids.tolist())} if self._row_tokens else {}
        src = np.empty(len(texts), dtype=np.int64)  # where the row's ids start in `pool`
        lengths = np.empty(len(texts), dtype=np.int64)
        fresh: list[IndexedText] = []
        n_fresh = 0
        base = self._ids.size
        for i, t in enumerate(texts):
            r = old_row.get(t.id)
            lengths[i] = len(t.tokens)
            if r is not None and self._row_tokens[r] is t.tokens:
                src[i] = self._ids_start[r]
            else:
                src[i] = base + n_fresh
                n_fresh += len(t.tokens)
                fresh.append(t)
        del old_row
        new_ids = np.fromiter(  # straight into int32, not a list of ten million ints first
            (vocab.setdefault(tok, len(vocab)) for t in fresh for tok in t.tokens),
            dtype=np.int32,
            count=n_fresh,
        )
        pool = np.concatenate((self._ids, new_ids)) if base else new_ids
        del new_ids
        start = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        # position k of row i comes from pool[src[i] + k], without a Python loop over rows
        ids = pool[np.repeat(src - start[:-1], lengths) + np.arange(int(start[-1]))]
        del pool
        # Number the tokens as a fresh build does: by first appearance in the current texts. Tokens
        # no text has any more drop out, and the index is the same as a fresh build's whatever edits
        # came before (the budgeted search breaks ties between equally rare tokens by id).
        size = len(vocab)
        first = np.full(size, ids.size, dtype=np.int64)
        np.minimum.at(first, ids, np.arange(ids.size, dtype=np.int64))
        seen = np.flatnonzero(first < ids.size)
        in_order = seen[np.argsort(first[seen])]  # first positions differ: no ties
        if in_order.size != size or not np.array_equal(in_order, np.arange(size)):
            remap = np.zeros(size, dtype=np.int32)
            remap[in_order] = np.arange(in_order.size, dtype=np.int32)
            ids = remap[ids]
            by_id = list(vocab)
            self.vocab = {by_id[i]: new for new, i in enumerate(in_order.tolist())}
        self._ids, self._ids_start = ids, start
        self._row_tokens = [t.tokens for t in texts]
        return ids, start

    def token_ids(self, tokens: list[str]) -> np.ndarray:
        """The query's known tokens as ids, in order, repeats kept (a repeated token counts twice)."""
        vocab = self.vocab
        return np.array([vocab[t] for t in tokens if t in vocab], dtype=np.int64)

    def scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every indexed text, aligned with ``row_ids``."""
        return self._scores_of(self.token_ids(tokens))

    def _scores_of(self, ids: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(self.row_ids), dtype=np.float32)
        if not self.built or not ids.size:
            return scores
        for t in ids.tolist():  # bm25s's get_scores: token by token, in the query's order
            a, b = self._indptr[t], self._indptr[t + 1]
            np.add.at(scores, self._rows[a:b], self._data[a:b])
        if self._weighted_from is None:
            return scores * self.row_weights
        tail = self._weighted_from
        scores[tail:] *= self.row_weights[tail:]
        return scores

    def search(
        self, tokens: list[str], *, exact: int, budget: int, also: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The rows that match ``tokens`` (sorted), their BM25 scores (float32, answers weighted),
        and whether every matching row is there: when the query's postings are at most ``exact``.
        Past that, the rows of the rarest tokens whose postings fit ``budget``, and the rows ``also``
        (e.g. the texts the dense search found)."""
        ids = self.token_ids(tokens)
        if not self.built or ids.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), True
        uniq = np.unique(ids)
        starts, ends = self._indptr[uniq], self._indptr[uniq + 1]
        sizes = ends - starts
        if int(sizes.sum()) <= exact:
            scores = self._scores_of(ids)
            rows = np.flatnonzero(scores > 0)
            return rows, scores[rows], True
        order = np.argsort(sizes, kind="stable")
        fits = int(np.count_nonzero(np.cumsum(sizes[order]) <= budget))
        parts: list[np.ndarray] = []
        if fits == 0:  # not even the rarest token fits: its best-scoring rows
            a, b = int(starts[order[0]]), int(ends[order[0]])
            best = np.argpartition(-self._data[a:b], budget - 1)[:budget]
            parts.append(self._rows[a:b][best])
        parts.extend(self._rows[int(starts[i]) : int(ends[i])] for i in order[:fits])
        if also is not None:
            parts.append(also)
        # A few thousand rows: sorting them beats marking a mask as long as the whole index.
        rows = sorted_union(*parts)
        query = np.zeros(self._indptr.size - 1, dtype=np.float32)
        np.add.at(query, ids, 1.0)  # a token the query repeats counts as often
        scores = np.asarray(self._by_row[rows] @ query, dtype=np.float32) * self.row_weights[rows]
        matched = scores > 0
        return rows[matched], scores[matched], False


@dataclass(frozen=True)
class RowLayout:
    """Where each snippet's rows are, so that the retriever aggregates rows without sorting them.

    The lexical rows are ``n_questions`` question texts grouped by snippet ordinal (snippet ``o`` owns
    rows ``q_start[o]:q_start[o + 1]``), then at most one answer row per snippet. ``dense_ids`` are the
    text ids of the question rows, sorted, with their owners in ``dense_owner`` (FAISS ids to snippets).
    ``kind_code``/``status_code`` let a search drop whole kinds or statuses before ranking.
    """

    n_questions: int
    q_start: np.ndarray  # int64, n_snippets + 1
    q_owner: np.ndarray  # int64, the owner of each question row (rows 0...n_questions)
    answer_owner: np.ndarray  # int64, the owner of each answer row (rows n_questions...)
    answer_row: np.ndarray  # int64, n_snippets: the snippet's answer row or -1
    dense_ids: np.ndarray  # int64, sorted
    dense_owner: np.ndarray  # int64, aligned with dense_ids
    kinds: dict[str, int]
    kind_code: np.ndarray  # int16, n_snippets
    statuses: dict[str, int]
    status_code: np.ndarray  # int16, n_snippets

    @classmethod
    def empty(cls) -> RowLayout:
        z = np.zeros(0, dtype=np.int64)
        return cls(
            0, np.zeros(1, dtype=np.int64), z, z, z, z, z, {}, z.astype(np.int16), {}, z.astype(np.int16)
        )

    @classmethod
    def build(
        cls, row_owner: np.ndarray, n_questions: int, row_ids: np.ndarray, snippets: list[Snippet]
    ) -> RowLayout:
        n = len(snippets)
        counts = np.bincount(row_owner[:n_questions], minlength=n)
        q_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=q_start[1:])
        answer_owner = np.ascontiguousarray(row_owner[n_questions:])
        answer_row = np.full(n, -1, dtype=np.int64)
        answer_row[answer_owner] = np.arange(n_questions, len(row_owner), dtype=np.int64)
        order = np.argsort(row_ids[:n_questions], kind="stable")
        kinds: dict[str, int] = {}
        statuses: dict[str, int] = {}
        kind_code = np.array([kinds.setdefault(s.kind, len(kinds)) for s in snippets], dtype=np.int16)
        status_code = np.array(
            [statuses.setdefault(s.status, len(statuses)) for s in snippets], dtype=np.int16
        )
        return cls(
            n_questions=n_questions,
            q_start=q_start,
            q_owner=np.ascontiguousarray(row_owner[:n_questions]),
            answer_owner=answer_owner,
            answer_row=answer_row,
            dense_ids=np.ascontiguousarray(row_ids[:n_questions][order]),
            dense_owner=np.ascontiguousarray(row_owner[:n_questions][order]),
            kinds=kinds,
            kind_code=kind_code,
            statuses=statuses,
            status_code=status_code,
        )

    def rows_of(self, owners: np.ndarray) -> np.ndarray:
        """Every lexical row of the snippets ``owners`` (ordinals): their questions, then their answers."""
        starts, ends = self.q_start[owners], self.q_start[owners + 1]
        lengths = ends - starts
        # starts[i], starts[i] + 1, ... for each owner, without a Python loop
        q_rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        a_rows = self.answer_row[owners]
        return np.concatenate((q_rows, a_rows[a_rows >= 0]))


class KnowledgeIndex:
    """Snippets, their texts, and the dense and lexical indexes, following one Store's revisions."""

    def __init__(
        self,
        embedder: Embedder,
        analyzer: Analyzer,
        *,
        hnsw_threshold: int = 50_000,
        answer_weight: float = 0.5,
    ) -> None:
        self.embedder = embedder
        self.analyzer = analyzer
        self.hnsw_threshold = hnsw_threshold
        self.snippets: dict[str, Snippet] = {}
        self.texts: dict[int, IndexedText] = {}
        self.by_snippet: dict[str, list[int]] = {}
        self.dense = DenseIndex(embedder.dim, hnsw_threshold=hnsw_threshold)
        self.lexical = LexicalIndex(answer_weight=answer_weight)
        #: Dense text id -> mean similarity to its nearest KB texts (see ``_note_hubs``).
        self.hub_raw: dict[int, float] = {}
        self.hub_mean = 0.0
        self.kb_revision = -1
        self.lock = threading.RLock()
        self.last_sync = 0.0
        self.embedded_last = 0
        self.snippet_order: list[str] = []
        self.ordinal: dict[str, int] = {}
        self.row_owner = np.zeros(0, dtype=np.int64)
        self.row_is_answer = np.zeros(0, dtype=bool)
        self.layout = RowLayout.empty()
        #: Changes whenever what a search sees changes (the retriever keys its per-query scores on it).
        self.generation = 0
        #: Called after a sync that saw a new KB revision (the KB follows model switches with it).
        self.on_revision: Callable[[int], None] | None = None

    # -- building -------------------------------------------------------------------------------

    def _rebuild_lexical(self) -> None:
        """Re-index BM25 and the arrays that map its rows to snippets (used by the retriever).

        Rows are laid out for the retriever (see :class:`RowLayout`): the question texts snippet by
        snippet in ``snippet_order`` (each snippet's in their own order), then the answers in the same
        snippet order.
        """
        self.snippet_order = list(self.snippets)
        self.ordinal = {sid: i for i, sid in enumerate(self.snippet_order)}
        questions: list[IndexedText] = []
        answers: list[IndexedText] = []
        for sid in self.snippet_order:
            for tid in self.by_snippet.get(sid, ()):
                t = self.texts[tid]
                (answers if t.field == "answer" else questions).append(t)
        texts = questions + answers
        self.lexical.build(texts)
        self.row_owner = np.array([self.ordinal[t.snippet_id] for t in texts], dtype=np.int64)
        self.row_is_answer = np.array([t.field == "answer" for t in texts], dtype=bool)
        self.layout = RowLayout.build(
            self.row_owner,
            len(questions),
            self.lexical.row_ids,
            [self.snippets[sid] for sid in self.snippet_order],
        )
        self.generation += 1

    def _texts_of(self, s: Snippet) -> list[IndexedText]:
        out = [
            IndexedText(text_id(s.id, txt), s.id, fld, txt, _interned(self.analyzer.tokens(txt)))
            for fld, txt in s.texts()
        ]
        if s.answer.strip():
            # The answer is matched lexically only (with a lower weight, see RetrievalConfig):
            # its facts (中通, 48小时) answer questions that no similar question anticipated.
            out.append(
                IndexedText(
                    text_id(s.id, "\x01answer"),
                    s.id,
                    "answer",
                    s.answer,
                    _interned(self.analyzer.tokens(s.answer)),
                )
            )
        return out

    def _embed(self, store: Store | None, texts: list[IndexedText], progress: bool) -> np.ndarray:
        """Vectors for ``texts``, from the store's cache where the model already embedded them.

        A fused embedder (``encoders.FusedEmbedder``) is cached part by part: a new tune of the KB
        model re-embeds nothing with the general encoder."""
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        vectors, self.embedded_last = embed_cached_parts(
            self.embedder, store, [t.text for t in texts], progress
        )
        return vectors

    def build(self, store: Store, *, progress: bool = False) -> None:
        """Index every snippet of the store from scratch (reusing cached vectors)."""
        with self.lock:
            rev = store.revision()
            snippets = store.all()
            self._reset(len(snippets))
            self._add_snippets(store, snippets, progress=progress)
            self._rebuild_lexical()
            self.kb_revision = rev
            self.last_sync = time.monotonic()

    def build_from(self, snippets: list[Snippet], *, revision: int = 0, cache: Store | None = None) -> None:
        """Index snippets that live in no store (tests, evaluations); ``cache``: a store whose cached
        embeddings may be used (and extended)."""
        with self.lock:
            self._reset(len(snippets))
            self._add_snippets(cache, snippets, progress=False)
            self._rebuild_lexical()
            self.kb_revision = revision

    def _reset(self, n_snippets: int) -> None:
        self.snippets, self.texts, self.by_snippet = {}, {}, {}
        self.hub_raw, self.hub_mean = {}, 0.0
        self.dense = DenseIndex(
            self.embedder.dim, hnsw_threshold=self.hnsw_threshold, expected=n_snippets * 4
        )

    def _add_snippets(self, store: Store | None, snippets: list[Snippet], *, progress: bool) -> None:
        new_texts: list[IndexedText] = []
        for s in snippets:
            ts = self._texts_of(s)
            self.snippets[s.id] = s
            self.by_snippet[s.id] = [t.id for t in ts]
            for t in ts:
                self.texts[t.id] = t
            new_texts.extend(ts)
        dense_texts = [t for t in new_texts if t.field != "answer"]
        vecs = self._embed(store, dense_texts, progress)
        ids = np.array([t.id for t in dense_texts], dtype=np.int64)
        self.dense.add(ids, vecs)
        self._note_hubs(ids, vecs)

    def _note_hubs(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Each new text's hubness: how close it is to its nearest KB texts, against the KB's mean.

        Some texts (short, generic: 怎么办理) are near every question in e5's space and would be
        everyone's top hit; the retriever subtracts ``RetrievalConfig.hub_weight`` times this from
        their dense score (CSLS, Conneau et al. 2018; computed from the KB alone). Texts indexed
        earlier keep their value when neighbours are added (a rebuild refreshes all)."""
        if not len(ids):
            return
        near = self.dense.neighbour_similarity(vecs, HUB_NEIGHBOURS)
        self.hub_raw.update(zip(ids.tolist(), near.tolist(), strict=True))
        self.hub_mean = float(np.mean(list(self.hub_raw.values()))) if self.hub_raw else 0.0

    def hubness(self, ids: np.ndarray) -> np.ndarray:
        """The centred hubness of dense text ids (0 for an unknown id)."""
        raw, mean = self.hub_raw, self.hub_mean
        return np.fromiter((raw.get(i, mean) - mean for i in ids.tolist()), dtype=np.float64, count=ids.size)

    def remove_snippets(self, snippet_ids: Iterable[str]) -> None:
        """Take snippets out of an index built with :meth:`build_from` (held-out measurements)."""
        with self.lock:
            for sid in snippet_ids:
                self._remove_snippet(sid)
            self._rebuild_lexical()

    def _remove_snippet(self, snippet_id: str) -> None:
        ids = self.by_snippet.pop(snippet_id, [])
        self.dense.remove(ids)
        for i in ids:
            self.hub_raw.pop(i, None)
        for i in ids:
            self.texts.pop(i, None)
        self.snippets.pop(snippet_id, None)

    def sync(self, store: Store) -> int:
        """Catch up with the store's revision by re-indexing only the snippets that changed."""
        with self.lock:
            self.last_sync = time.monotonic()
            if current_revision(store) == self.kb_revision:
                return 0
            changes = store.changes_since(self.kb_revision)
            for sid in changes.deleted | changes.changed:
                self._remove_snippet(sid)
            fresh = [s for s in (store.find(i) for i in sorted(changes.changed)) if s is not None]
            if changes.changed or changes.deleted:
                self._add_snippets(store, fresh, progress=False)
                self._rebuild_lexical()
            self.kb_revision = changes.until
            if self.dense.kind == "hnsw" and len(self.dense.deleted) > 0.2 * max(1, self.dense.ntotal):
                self._rebuild_dense()
            n = len(changes.changed | changes.deleted)
        if self.on_revision is not None:
            # Outside the lock: the listener (KnowledgeBase) may check which model is active.
            self.on_revision(changes.until)
        return n

    def _rebuild_dense(self) -> None:
        ids = np.array([i for i, t in self.texts.items() if t.field != "answer"], dtype=np.int64)
        vecs = self.dense.vectors_of(ids) if len(ids) else np.zeros((0, self.embedder.dim), np.float32)
        self.dense = DenseIndex(
            self.embedder.dim, hnsw_threshold=self.hnsw_threshold, expected=len(self.snippets) * 4
        )
        self.dense.add(ids, vecs)
        self.generation += 1

    # -- persistence ----------------------------------------------------------------------------

    def save(self, root: Path) -> Path:
        """Write the index under ``root`` and point ``root/current`` at it atomically."""
        with self.lock:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
            try:
                faiss.write_index(self.dense.index, str(tmp / "dense.faiss"))
                with (tmp / "texts.jsonl").open("w", encoding="utf-8") as f:
                    for t in self.texts.values():
                        rec = {"id": t.id, "s": t.snippet_id, "f": t.field, "t": t.text, "k": list(t.tokens)}
                        if t.id in self.hub_raw:
                            rec["h"] = self.hub_raw[t.id]
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                with (tmp / "snippets.jsonl").open("w", encoding="utf-8") as f:
                    for s in self.snippets.values():
                        f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
                manifest = Manifest(
                    format=FORMAT_VERSION,
                    model_id=self.embedder.model_id,
                    dim=self.embedder.dim,
                    analyzer=self.analyzer.mode,
                    terms=list(self.analyzer.terms),
                    kb_revision=self.kb_revision,
                    n_texts=len(self.texts),
                    dense_kind=self.dense.kind,
                    checksums={n: _sha256(tmp / n) for n in ("dense.faiss", "texts.jsonl", "snippets.jsonl")},
                    built_at=time.time(),
                )
                (tmp / "manifest.json").write_text(json.dumps(manifest.__dict__, indent=2), "utf-8")
                final = root / f"rev-{self.kb_revision}-{int(time.time() * 1000)}"
                tmp.rename(final)
                link_tmp = root / f".current-{os.getpid()}-{threading.get_ident()}"
                if link_tmp.is_symlink() or link_tmp.exists():
                    link_tmp.unlink()
                link_tmp.symlink_to(final.name)
                old = (root / "current").resolve() if (root / "current").is_symlink() else None
                os.replace(link_tmp, root / "current")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if old is not None and old != final and old.exists():
                shutil.rmtree(old, ignore_errors=True)
            return final

    def load(self, root: Path, *, expected_revision: int | None = None) -> str | None:
        """Load ``root/current`` if it fits this embedder and analyzer; else return why not."""
        path = root / "current"
        if not (path / "manifest.json").exists():
            return "no saved index"
        try:
            m = Manifest.read(path / "manifest.json")
        except (OSError, ValueError, TypeError) as e:
            return f"unreadable manifest: {e}"
        if m.format != FORMAT_VERSION:
            return f"index format {m.format}, expected {FORMAT_VERSION}"
        if m.model_id != self.embedder.model_id or m.dim != self.embedder.dim:
            return f"built with model {m.model_id}, now {self.embedder.model_id}"
        if m.analyzer != self.analyzer.mode or sorted(m.terms) != sorted(self.analyzer.terms):
            return "built with other tokenizer settings"
        for name, digest in m.checksums.items():
            if not (path / name).exists() or _sha256(path / name) != digest:
                return f"checksum mismatch in {name}"
        if expected_revision is not None and m.kb_revision > expected_revision:
            return f"index is newer (revision {m.kb_revision}) than the database ({expected_revision})"
        with self.lock:
            self.snippets = {}
            with (path / "snippets.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    s = Snippet.from_dict(json.loads(line))
                    self.snippets[s.id] = s
            self.texts, self.by_snippet, self.hub_raw = {}, {}, {}
            with (path / "texts.jsonl").open(encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    t = IndexedText(int(r["id"]), r["s"], r["f"], r["t"], _interned(r["k"]))
                    self.texts[t.id] = t
                    if "h" in r:
                        self.hub_raw[t.id] = float(r["h"])
                    self.by_snippet.setdefault(t.snippet_id, []).append(t.id)
            self.hub_mean = float(np.mean(list(self.hub_raw.values()))) if self.hub_raw else 0.0
            self.dense = DenseIndex(self.embedder.dim, hnsw_threshold=self.hnsw_threshold)
            self.dense.index = faiss.read_index(str(path / "dense.faiss"))
            self.dense.kind = m.dense_kind
            if m.dense_kind == "hnsw":  # an index saved with another setting searches with this one
                hnsw: Any = faiss.downcast_index(self.dense.index.index)
                hnsw.hnsw.efSearch = HNSW_EF_SEARCH
            self._rebuild_lexical()
            self.kb_revision = m.kb_revision
            self.last_sync = time.monotonic()
        return None

    def open(
        self,
        store: Store,
        root: Path | None,
        *,
        progress: bool = False,
        log_fn: Callable[[str], None] = log.info,
    ) -> str:
        """Load the saved index (then catch up with the store) or rebuild it; save when it changed."""
        reason = self.load(root, expected_revision=store.revision()) if root else "no index directory"
        if reason is None:
            n = self.sync(store)
            how = f"loaded saved index (revision {self.kb_revision}, {n} snippet(s) updated since)"
            if n and root:
                self.save(root)
        else:
            self.build(store, progress=progress)
            how = f"rebuilt index ({reason}); {len(self.texts)} texts, {self.embedded_last} newly embedded"
            if root:
                self.save(root)
        log_fn(how)
        return how

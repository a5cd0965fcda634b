"""Training a compact KB-specific embedding model (``kefu kb tune``).

No Chinese sentence-embedding model can be downloaded here, but the knowledge base holds what a
model needs: each snippet's question and similar questions are paraphrases of one another. A
sentence-transformers ``StaticEmbedding`` over the analyzer's tokens (jieba words, characters,
character bigrams), trained with MultipleNegativesRankingLoss on those pairs, takes seconds on two
CPU cores and beats BM25 alone on real customer-service questions (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from knowledge.embedding import KEFU_MODEL_FILE
from knowledge.errors import KefuError
from knowledge.model import Snippet
from knowledge.text import Analyzer, normalize

MIN_PAIRS = 8


class TuningError(KefuError):
    code = "tuning_error"


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    snippet_id: str | None = None


@dataclass
class TuneParams:
    dim: int = 256
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.05
    seed: int = 0
    analyzer: str = "wcb"
    #: Also pair a snippet's similar questions with one another (not only with its question).
    sibling_pairs: bool = False
    #: Add, per pair, the best BM25 text of another snippet as a hard negative.
    hard_negatives: bool = True
    #: Scale of the random initial token vectors (small: tokens the pairs never train stay quiet).
    init_scale: float = 1.0


def kb_pairs(snippets: Sequence[Snippet], *, siblings: bool = False) -> list[Pair]:
    """(similar question, question) pairs of every snippet that has similar questions; with
    ``siblings`` also (similar question, another similar question of the same snippet)."""
    out: list[Pair] = []
    for s in snippets:
        if s.status == "archived":
            continue
        sims = [q for q in s.similar_questions if q != s.question]
        out.extend(Pair(sim, s.question, s.id) for sim in sims)
        if siblings:
            out.extend(Pair(a, b, s.id) for i, a in enumerate(sims) for b in sims[i + 1 :] if a != b)
    return out


def pair_key(p: Pair) -> str:
    """A short, stable hash of a pair (its snippet, anchor and positive, normalised): what a tuned
    model stores of the pairs it was trained and fitted on (``SEEN_PAIRS_KEY`` in its metadata)."""
    raw = "\x00".join((p.snippet_id or "", normalize(p.anchor), normalize(p.positive)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def split_pairs(
    pairs: Sequence[Pair], held_out: float, seed: int, *, seen: frozenset[str] | set[str] = frozenset()
) -> tuple[list[Pair], list[Pair]]:
    """Hold out a share of the pairs for measuring, never one in ``seen`` (the ``pair_key`` of the
    pairs the current model was trained or fitted on: holding those out would favour it).

    A first tune (nothing seen) never holds out a snippet's only pair (its question must stay
    learnable), unless every snippet has only one (then a share of them is held out). A re-tune
    holds out a share of the new pairs only (in practice: the candidates accepted since), a
    snippet's only new pair included: on a KB whose snippets have one similar question
    each (afqmc-dev after its candidates were accepted) the held-out questions must come from across
    snippets, not from within them."""
    rng = random.Random(seed)
    by_snippet: dict[str | None, list[Pair]] = {}
    for p in pairs:
        by_snippet.setdefault(p.snippet_id, []).append(p)
    # One similar question per snippet: within snippets there is nothing to hold out, so across them.
    across = bool(seen) or all(len(g) == 1 for g in by_snippet.values())
    train: list[Pair] = []
    test: list[Pair] = []
    for sid in sorted(by_snippet, key=str):
        group = list(by_snippet[sid])
        rng.shuffle(group)
        if across:
            known = [pair_key(p) in seen for p in group]
            new = [p for p, k in zip(group, known, strict=True) if not k]
            old = [p for p, k in zip(group, known, strict=True) if k]
            n_test = min(int(len(new) * held_out + rng.random()), len(new)) if sid is not None else 0
            test.extend(new[:n_test])
            train.extend(new[n_test:] + old)
            continue
        n_test = int(len(group) * held_out + rng.random()) if len(group) > 1 else 0
        n_test = min(n_test, len(group) - 1)
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    return train, test


def train_static_model(
    texts: Sequence[str],
    pairs: Sequence[Pair],
    out_dir: Path,
    *,
    params: TuneParams | None = None,
    terms: Sequence[str] = (),
    show_progress: bool = False,
    corpus: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Train and save a StaticEmbedding model; ``texts`` supply the vocabulary (all KB texts)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import losses  # type: ignore[no-redef,attr-defined]

    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import StaticEmbedding  # type: ignore[no-redef]
    from tokenizers import Tokenizer, models, pre_tokenizers

    p = params or TuneParams()
    if len(pairs) < MIN_PAIRS:
        raise TuningError(
            f"训练样本太少：只有 {len(pairs)} 对相似问法，至少需要 {MIN_PAIRS} 对；请先给常见问题补充相似问法",
            f"too few training pairs: {len(pairs)}, at least {MIN_PAIRS} needed; add similar questions to the FAQs first",
        )
    analyzer = Analyzer(p.analyzer, terms)
    counts = Counter(
        tok
        for t in [*texts, *(x for pr in pairs for x in (pr.anchor, pr.positive))]
        for tok in analyzer.tokens(t)
    )
    vocab = {"[UNK]": 0, "[PAD]": 1}
    for tok in sorted(counts):
        vocab.setdefault(tok, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    random.seed(p.seed)
    torch.manual_seed(p.seed)
    static = StaticEmbedding(tokenizer, embedding_dim=p.dim)
    if p.init_scale != 1.0:
        with torch.no_grad():
            static.embedding.weight.mul_(p.init_scale)
    model = SentenceTransformer(modules=[static], device="cpu")

    def prep(t: str) -> str:
        return " ".join(analyzer.tokens(t))

    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    # Hard negatives need to know which snippet each text belongs to (``corpus``).
    negatives = bm25_negatives(pairs, corpus, analyzer, p.seed) if p.hard_negatives and corpus else None
    order = list(range(len(pairs)))
    random.Random(p.seed).shuffle(order)
    for i in order:
        columns["anchor"].append(prep(pairs[i].anchor))
        columns["positive"].append(prep(pairs[i].positive))
        if negatives is not None:
            columns.setdefault("negative", []).append(prep(negatives[i]))
    dataset = Dataset.from_dict(columns)
    out_dir = Path(out_dir)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / ".trainer"),
        num_train_epochs=p.epochs,
        per_device_train_batch_size=p.batch_size,
        learning_rate=p.learning_rate,
        seed=p.seed,
        data_seed=p.seed,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        batch_sampler="no_duplicates",
        use_cpu=True,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )
    started = time.perf_counter()
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=losses.MultipleNegativesRankingLoss(model)
    )
    # The trainer prints its log lines to stdout; keep stdout for the commands' own output (--json).
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    model.save(str(out_dir))
    meta = {
        "type": "kb-static",
        "analyzer": p.analyzer,
        "terms": sorted(analyzer.terms),
        "params": p.__dict__,
        "n_pairs": len(pairs),
        "vocab_size": len(vocab),
        "train_seconds": round(time.perf_counter() - started, 2),
        "created_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / KEFU_MODEL_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), "utf-8")
    import shutil

    shutil.rmtree(out_dir / ".trainer", ignore_errors=True)
    return out_dir


def bm25_negatives(
    pairs: Sequence[Pair], corpus: Sequence[tuple[str, str]], analyzer: Analyzer, seed: int
) -> list[str]:
    """For each pair, the text of another snippet that BM25 ranks highest for its anchor.

    ``corpus`` is (snippet id, text) of every indexed question text. A pair whose anchor matches no
    other snippet's text gets a random one, so that every row has a negative.
    """
    import bm25s
    import numpy as np

    rng = random.Random(seed)
    if not corpus:
        raise TuningError("没有可用的负例文本", "no texts to draw negatives from")
    vocab: dict[str, int] = {}
    docs = [[vocab.setdefault(tok, len(vocab)) for tok in analyzer.tokens(t)] for _, t in corpus]
    bm = bm25s.BM25()
    bm.index(bm25s.tokenization.Tokenized(ids=docs, vocab=vocab), show_progress=False)
    owners = [sid for sid, _ in corpus]
    out: list[str] = []
    for pr in pairs:
        known = [t for t in analyzer.tokens(pr.anchor) if t in vocab]
        chosen = None
        if known:
            scores = np.asarray(bm.get_scores(known))
            top = np.argpartition(-scores, min(20, len(scores) - 1))[:20]
            for j in top[np.argsort(-scores[top])]:
                if scores[j] <= 0:
                    break
                if owners[j] != pr.snippet_id and corpus[j][1] not in (pr.anchor, pr.positive):
                    chosen = corpus[j][1]
                    break
        if chosen is None:
            while True:
                sid, text = corpus[rng.randrange(len(corpus))]
                if sid != pr.snippet_id or len(corpus) < 2:
                    chosen = text
                    break
        out.append(chosen)
    return out

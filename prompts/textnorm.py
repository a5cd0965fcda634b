"""Normalising replies for matching while keeping the way back to the original text.

Rules are written once, in simplified Chinese with ASCII punctuation and lower case. A reply is
matched in that form (NFKC folds full-width letters and punctuation, OpenCC ``t2s`` folds traditional
characters, ``lower`` folds case), and every match is mapped back to a span of the text the agent
actually wrote, so highlights and repairs land on the right characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import opencc

_T2S = opencc.OpenCC("t2s")
_S2T = opencc.OpenCC("s2t")
# Typographic quotes fold to ASCII so that "can’t" matches "can't" (one character each: spans hold).
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    return _T2S.convert(unicodedata.normalize("NFKC", ch)).lower().translate(_QUOTES)


@lru_cache(maxsize=8192)
def _script(ch: str) -> int:
    """1 for a character written only in traditional, -1 only in simplified, 0 for both or neither."""
    if _T2S.convert(ch) != ch:
        return 1
    if _S2T.convert(ch) != ch:
        return -1
    return 0


def is_traditional(text: str) -> bool:
    """Whether ``text`` is written in traditional characters.

    Decided by the share of script-specific characters: a reply is traditional when more of its
    characters exist only in traditional than only in simplified, so a stray traditional character
    (or a product name) in a simplified reply does not make phrases inserted into it traditional.
    Characters shared by both scripts (您, 好, 的, ...) do not count.
    """
    score = 0
    for ch in text:
        if ord(ch) >= 0x2E80:  # CJK and beyond; ASCII and Latin never differ
            score += _script(ch)
    return score > 0


def language_of(text: str) -> str:
    """``"en"`` when Latin letters outnumber CJK characters in ``text``, else ``"zh"``.

    Counting letters rather than looking for any Chinese keeps a product code or a brand name from
    deciding: "Y1空气炸锅多少钱" is Chinese, "Is the Y1 空气炸锅 in stock?" is English. A message with
    neither (digits, emoji, "?") counts as Chinese, the service's first language.
    """
    cjk = latin = 0
    for ch in text:
        if "a" <= ch.lower() <= "z":
            latin += 1
        elif _is_cjk(ch):
            cjk += 1
    # a CJK character carries about as much as a short English word
    return "en" if latin > 3 * cjk and latin >= 2 else "zh"


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


@lru_cache(maxsize=8)
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


def fold(text: str) -> str:
    """The matching form of a lexicon term (the same folding as ``normalize``, without the map)."""
    return _T2S.convert(unicodedata.normalize("NFKC", text)).lower().translate(_QUOTES)


def to_script(text: str, config: str) -> str:
    """Convert simplified text with an OpenCC config (``s2tw``, ``s2t``, ...)."""
    return _converter(config).convert(text) if config else text


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """A reply in matching form; ``starts[i]``/``ends[i]`` bound the original characters of ``text[i]``."""

    original: str
    text: str
    starts: tuple[int, ...] | None  # None: position i of text is position i of original
    ends: tuple[int, ...] | None
    traditional: bool

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a span of ``text`` back to a span of ``original``."""
        if self.starts is None or self.ends is None:
            return start, end
        n = len(self.text)
        if start >= n:
            return len(self.original), len(self.original)
        o_start = self.starts[start]
        if end <= start:
            return o_start, o_start
        return o_start, self.ends[min(end, n) - 1]

    def position(self, index: int) -> int:
        """Map an insertion point of ``text`` to one of ``original``."""
        return self.span(index, index)[0]


@lru_cache(maxsize=4096)
def normalize(text: str) -> NormalizedText:
    """``text`` in matching form with the map back to it (cached: the checker and the fixer look at the
    same reply once per rule, and the result is immutable)."""
    if text.isascii():
        return NormalizedText(text, text.lower(), None, None, traditional=False)
    nfkc = unicodedata.normalize("NFKC", text)
    simplified = _T2S.convert(nfkc)
    # only a reply with some traditional character needs counting
    traditional = simplified != nfkc and is_traditional(nfkc)
    folded = simplified.lower().translate(_QUOTES)
    if nfkc == text and len(folded) == len(text):
        return NormalizedText(text, folded, None, None, traditional)
    # Some character changed width or length (full-width punctuation, "…" -> "..."): fold one
    # character at a time so that every folded character knows where it came from.
    parts = [_fold_char(ch) for ch in text]
    if all(len(f) == 1 for f in parts):  # full-width punctuation only: positions stay as they are
        return NormalizedText(text, "".join(parts), None, None, traditional)
    starts: list[int] = []
    ends: list[int] = []
    for i, f in enumerate(parts):
        starts.extend([i] * len(f))
        ends.extend([i + 1] * len(f))
    return NormalizedText(text, "".join(parts), tuple(starts), tuple(ends), traditional)

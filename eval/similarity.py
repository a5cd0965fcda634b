"""Similarity of a draft to a reference reply, at the character level (Chinese has no spaces).

Both texts are folded first (NFKC, traditional -> simplified, lower case) and punctuation and spaces
are dropped, so 您好，退貨 and 您好 退货 compare equal. Latin letters and digits are compared as
words (a run of them is one token), CJK characters one by one.
"""

from __future__ import annotations

import re
from collections import Counter

from prompts.textnorm import fold

_TOKEN = re.compile(r"[a-z0-9]+|[^\W\d_a-z]", re.UNICODE)


def tokens(text: str) -> list[str]:
    t = fold(text)
    return _TOKEN.findall(t)


def char_f1(candidate: str, reference: str) -> float:
    """Bag-of-characters F1 (SQuAD-style overlap); 0 when either text has no tokens."""
    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    common = sum((Counter(c) & Counter(r)).values())
    if common == 0:
        return 0.0
    p, rec = common / len(c), common / len(r)
    return 2 * p * rec / (p + rec)


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over characters (longest common subsequence); 0 when either text has no tokens."""
    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)

"""Text metrics on matched (ground truth, prediction) pairs, computed locally (no network, no model).

ROUGE-L follows the ``rouge_score`` package's defaults: lower-case, every run of characters other than ``a-z0-9``
becomes a token boundary, no stemming; ``P = LCS / len(pred)``, ``R = LCS / len(ref)``, ``F = 2PR / (P + R)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokens(text: str) -> list[str]:
    """``rouge_score``'s default tokenisation (lower-case alphanumeric runs)."""
    return [t for t in _NON_ALNUM.split(text.lower()) if t]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F-measure of one pair (0 when either side has no token)."""
    ref, pred = tokens(reference), tokens(prediction)
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


def text_scores(pairs: Sequence[tuple[str, str]]) -> dict[str, float | int | None]:
    """Mean ROUGE-L and exact-match rate (after normalisation) over ``(reference, prediction)`` pairs."""
    if not pairs:
        return {"pairs": 0, "rouge_l": None, "exact_match": None}
    rouge = [rouge_l(r, p) for r, p in pairs]
    exact = [tokens(r) == tokens(p) for r, p in pairs]
    return {"pairs": len(pairs), "rouge_l": sum(rouge) / len(rouge), "exact_match": sum(exact) / len(exact)}

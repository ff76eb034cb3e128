"""ROUGE-L on matched pairs (``pytest tests/evaluation/test_text_metrics.py``)."""

from __future__ import annotations

import pytest

from evaluation.text_metrics import lcs_length, rouge_l, text_scores


def test_lcs_of_token_lists() -> None:
    """The longest common subsequence skips tokens on either side."""
    assert lcs_length("a b c d e".split(), "a x c e".split()) == 3


def test_rouge_l_by_hand() -> None:
    """LCS 3 of a 4-token reference and a 5-token prediction: P 3/5, R 3/4, F = 2/3."""
    assert rouge_l("Keep your knees out", "keep the knees pushed out!") == pytest.approx(2 / 3)


def test_rouge_l_of_texts_without_tokens_is_zero() -> None:
    """Punctuation only has no token, so no overlap."""
    assert rouge_l("...", "Knees!") == 0.0


def test_text_scores_average_over_pairs() -> None:
    """Mean ROUGE-L and exact match after normalisation."""
    scores = text_scores([("Knees out.", "knees OUT"), ("Back straight", "slow down")])
    assert scores == {"pairs": 2, "rouge_l": 0.5, "exact_match": 0.5}

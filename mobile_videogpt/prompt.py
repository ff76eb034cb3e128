"""The released ChatML prompt with a Hugging Face tokenizer: adapters around :mod:`engine_format.prompt`.

The prompt text and its split around the ``<image>`` placeholders are defined once in ``engine_format.prompt``; the
functions there take an ``encode`` callable, which :func:`hf_encoder` builds from a transformers tokenizer.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from engine_format.prompt import (  # noqa: F401 - re-exported for the reference package
    DEFAULT_COACH_SYSTEM,
    DEFAULT_INSTRUCTION,
    DEFAULT_SYSTEM,
    WINDOW_QUESTION,
    Encode,
    PromptIds,
    StreamingPromptIds,
    chatml_prompt,
    coach_system_prompt,
)
from engine_format.prompt import streaming_prompt_ids as _streaming_prompt_ids
from engine_format.prompt import tokenize_prompt as _tokenize_prompt


def hf_encoder(tokenizer: PreTrainedTokenizerBase) -> Encode:
    """Text -> ids of a Hugging Face tokenizer, without special tokens added."""
    return lambda text: list(tokenizer(text, add_special_tokens=False).input_ids)


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> PromptIds:
    """Splits on ``<image>`` and tokenizes the pieces separately, as the release's ``tokenizer_image_token`` does."""
    return _tokenize_prompt(hf_encoder(tokenizer), prompt)


def streaming_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, instruction: str = DEFAULT_INSTRUCTION, question: str = WINDOW_QUESTION
) -> StreamingPromptIds:
    """The streaming conversation's token pieces (see :func:`engine_format.prompt.streaming_prompt_ids`)."""
    return _streaming_prompt_ids(hf_encoder(tokenizer), instruction, question)

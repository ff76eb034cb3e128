"""The released ChatML prompt and how it is split around the ``<image>`` placeholders (release: ``mm_utils.py``).

The release builds (conv_mode ``qwen2_instruct``)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>x16\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

and ``tokenizer_image_token`` splits the string on the literal ``<image>`` and tokenizes each piece separately
(Qwen adds no BOS), so the ids are ``prefix_ids``, a run of ``-200`` placeholders, ``suffix_ids``. The whole run is
replaced by the 2402 visual rows. Only the pieces before the first and after the last placeholder are non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from mobile_videogpt.vocab import IMAGE_TOKEN

DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class PromptIds:
    """Token ids around the visual rows.

    Attributes:
        prefix_ids: Ids before the placeholder run.
        suffix_ids: Ids after it.
    """

    prefix_ids: list[int]
    suffix_ids: list[int]


def chatml_prompt(question: str, num_images: int = 16, system: str = DEFAULT_SYSTEM) -> str:
    """Builds the release's prompt string.

    Args:
        question: The user's question.
        num_images: Number of ``<image>`` placeholders (one per frame).
        system: System message.

    Returns:
        The ChatML text, ending with the assistant header.
    """
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_TOKEN * num_images}\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> PromptIds:
    """Splits on ``<image>`` and tokenizes the pieces separately, as ``tokenizer_image_token`` does.

    Args:
        tokenizer: The Qwen2 tokenizer.
        prompt: Text containing one contiguous run of ``<image>`` placeholders.

    Returns:
        The ids before and after the run.

    Raises:
        ValueError: If the prompt has no placeholder or text between placeholders.
    """
    pieces = prompt.split(IMAGE_TOKEN)
    if len(pieces) < 2:
        raise ValueError("prompt has no <image> placeholder")
    if any(p for p in pieces[1:-1]):
        raise ValueError("the <image> placeholders must form one contiguous run")
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return PromptIds(prefix_ids=list(encode(pieces[0])), suffix_ids=list(encode(pieces[-1])))

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


DEFAULT_COACH_SYSTEM = (
    "You are a real-time exercise coach watching a live video. After each clip answer with <next> to keep watching, "
    "<feedback> followed by one short spoken correction when the form needs fixing, or <correct> when a rep is done well."
)
WINDOW_QUESTION = "What should the coach do now?"


@dataclass(frozen=True)
class StreamingPromptIds:
    """Token ids of the streaming conversation (same ChatML as the release, one user turn per window).

    The context is ``system_ids`` once, then per window ``window_prefix_ids`` + visual rows + ``window_suffix_ids``,
    after which the decoder's next-token logits at the last position decide the action. For ``<next>``/``<correct>``
    the action id and ``turn_end_ids`` are appended; for ``<feedback>`` generation continues after the action id.

    Attributes:
        system_ids: System turn.
        window_prefix_ids: User-turn header before the visual rows.
        window_suffix_ids: Question and assistant header after the visual rows (the action query).
        turn_end_ids: Closes an assistant turn (``<|im_end|>\\n``).
    """

    system_ids: list[int]
    window_prefix_ids: list[int]
    window_suffix_ids: list[int]
    turn_end_ids: list[int]

    def as_dict(self) -> dict[str, list[int]]:
        """JSON-friendly form (stored in engine manifests)."""
        return {
            "system_ids": self.system_ids,
            "window_prefix_ids": self.window_prefix_ids,
            "window_suffix_ids": self.window_suffix_ids,
            "turn_end_ids": self.turn_end_ids,
        }


def streaming_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, system: str = DEFAULT_COACH_SYSTEM, question: str = WINDOW_QUESTION
) -> StreamingPromptIds:
    """Tokenizes the streaming conversation pieces.

    Args:
        tokenizer: The Qwen2 tokenizer (extended or not).
        system: System instruction.
        question: Per-window action query.

    Returns:
        The id pieces.
    """
    encode = lambda text: list(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    return StreamingPromptIds(
        system_ids=encode(f"<|im_start|>system\n{system}<|im_end|>\n"),
        window_prefix_ids=encode("<|im_start|>user\n"),
        window_suffix_ids=encode(f"\n{question}<|im_end|>\n<|im_start|>assistant\n"),
        turn_end_ids=encode("<|im_end|>\n"),
    )

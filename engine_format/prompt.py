"""The released ChatML prompt and the streaming conversation's token pieces.

The release builds (conv_mode ``qwen2_instruct``)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>x16\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

and ``tokenizer_image_token`` splits the string on the literal ``<image>`` and tokenizes each piece separately
(Qwen adds no BOS), so the ids are ``prefix_ids``, a run of ``-200`` placeholders, ``suffix_ids``. The whole run is
replaced by the 2402 visual rows. Only the pieces before the first and after the last placeholder are non-empty.

The streaming conversation keeps that ChatML with one user turn per window (see :class:`StreamingPromptIds`). Its
system message is the action-token protocol followed by the configured coaching instruction
(:func:`coach_system_prompt`); the exporter, the runtime, the parity harness and training all build it with
:func:`streaming_prompt_ids`, so the prompt that is validated and trained is the prompt that runs.

Every function takes ``encode``: text -> ids without special tokens added (``Tokenizer.encode`` of
``engine_format.tokenizer``, or ``mobile_videogpt.prompt.hf_encoder`` around a Hugging Face tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine_format import FormatError
from engine_format.vocab import IMAGE_TOKEN

Encode = Callable[[str], list[int]]
"""Text -> token ids, no special tokens added (control tokens written in the text are recognised)."""

DEFAULT_SYSTEM = "You are a helpful assistant."

DEFAULT_COACH_SYSTEM = (
    "You are a real-time exercise coach watching a live video. After each clip answer with <next> to keep watching, "
    "<feedback> followed by one short spoken correction when the form needs fixing, or <correct> when a rep is done well."
)
"""The action-token protocol: the fixed first part of the streaming system message."""

DEFAULT_INSTRUCTION = "You are a fitness coach. In one short sentence, correct the person's exercise form."
"""The default coaching instruction (``generation.instruction`` in ``streaming_config.yaml``)."""

WINDOW_QUESTION = "What should the coach do now?"
"""The per-window action query."""


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
    """Builds the release's prompt string (ends with the assistant header)."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_TOKEN * num_images}\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def tokenize_prompt(encode: Encode, prompt: str) -> PromptIds:
    """Splits on ``<image>`` and tokenizes the pieces separately, as ``tokenizer_image_token`` does.

    Raises:
        ValueError: If the prompt has no placeholder or text between placeholders.
    """
    pieces = prompt.split(IMAGE_TOKEN)
    if len(pieces) < 2:
        raise ValueError("prompt has no <image> placeholder")
    if any(p for p in pieces[1:-1]):
        raise ValueError("the <image> placeholders must form one contiguous run")
    return PromptIds(prefix_ids=list(encode(pieces[0])), suffix_ids=list(encode(pieces[-1])))


def coach_system_prompt(instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The streaming system message: the action-token protocol, then the coaching instruction."""
    return f"{DEFAULT_COACH_SYSTEM} {instruction.strip()}"


@dataclass(frozen=True)
class StreamingPromptIds:
    """Token ids of the streaming conversation (same ChatML as the release, one user turn per window).

    The context is ``system_ids`` once, then per window ``window_prefix_ids`` + visual rows + ``window_suffix_ids``,
    after which the decoder's next-token logits at the last position decide the action. For ``<next>``/``<correct>``
    the action id and ``turn_end_ids`` close the turn; for ``<feedback>`` generation continues after the action id.

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

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StreamingPromptIds:
        """Inverse of :meth:`as_dict`.

        Raises:
            FormatError: For missing keys or non-integer ids.
        """
        keys = ("system_ids", "window_prefix_ids", "window_suffix_ids", "turn_end_ids")
        if not isinstance(data, dict) or set(data) != set(keys):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise FormatError(f"{where}: expected keys {list(keys)}, got {found}")
        for key in keys:
            if not isinstance(data[key], list) or not all(isinstance(i, int) and i >= 0 for i in data[key]):
                raise FormatError(f"{where}.{key}: must be a list of non-negative token ids")
        return cls(*(list(data[k]) for k in keys))


def streaming_prompt_ids(
    encode: Encode, instruction: str = DEFAULT_INSTRUCTION, question: str = WINDOW_QUESTION
) -> StreamingPromptIds:
    """Tokenizes the streaming conversation pieces.

    Args:
        encode: Text -> ids (no special tokens added).
        instruction: The coaching instruction appended to the action-token protocol.
        question: Per-window action query.

    Returns:
        The id pieces.
    """
    return StreamingPromptIds(
        system_ids=list(encode(f"<|im_start|>system\n{coach_system_prompt(instruction)}<|im_end|>\n")),
        window_prefix_ids=list(encode("<|im_start|>user\n")),
        window_suffix_ids=list(encode(f"\n{question}<|im_end|>\n<|im_start|>assistant\n")),
        turn_end_ids=list(encode("<|im_end|>\n")),
    )

"""A scripted model backend and a character tokenizer for fast, deterministic pipeline and context tests.

The fake decoder's KV for a token is its embedding rotated by RoPE at its position (what a real decoder's layer-0
keys are, up to a projection), so a cache re-based after eviction must equal a fresh prefill of the kept tokens
exactly. Its logits follow a script: the action logits of each window come from ``action_logits``; after
``<feedback>`` it spells ``feedback_text`` one character per step and then emits ``<|im_end|>``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from mobile_videogpt.vocab import ActionTokenIds
from runtime.backends.base import ImageFeatures, KVState, ModelBackend
from runtime.backends.kv import NumpyKVState, RopeSpec

SPECIAL = {
    "<|im_start|>": 1000,
    "<|im_end|>": 1001,
    "<|endoftext|>": 1002,
    "<next>": 1003,
    "<feedback>": 1004,
    "<correct>": 1005,
}
VOCAB = 1006
HIDDEN = 8
ROPE = RopeSpec(head_dim=HIDDEN, theta=10000.0)


class CharTokenizer:
    """One id per character (code point mod 256); the strings in :data:`SPECIAL` are single tokens."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        ids: list[int] = []
        i = 0
        while i < len(text):
            for token, token_id in SPECIAL.items():
                if text.startswith(token, i):
                    ids.append(token_id)
                    i += len(token)
                    break
            else:
                ids.append(ord(text[i]) % 256)
                i += 1
        return SimpleNamespace(input_ids=ids)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        if token in SPECIAL:
            return SPECIAL[token]
        return ord(token) % 256 if len(token) == 1 else None

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        names = {v: k for k, v in SPECIAL.items()}
        return "".join(chr(i) if i < 256 else ("" if skip_special_tokens else names[i]) for i in ids)


@dataclass
class DecodeCall:
    """One recorded ``decode`` call."""

    first_id: int
    last_id: int
    length: int
    positions: list[int]


class FakeBackend(ModelBackend):
    """Scripted backend (see the module docstring).

    Args:
        action_logits: Window number (0, 1, ... in processing order) -> logits of ``<next>``, ``<feedback>``,
            ``<correct>``.
        feedback_text: What every feedback spells.
        before_video: Called at the start of each ``encode_video`` with the window number (tests block here to
            emulate a slow model).
    """

    name = "fake"
    precision = "fp32"
    hidden_size = HIDDEN
    vocab_size = VOCAB
    random_weights = False
    max_position_embeddings = 100_000

    def __init__(
        self,
        action_logits: Callable[[int], Sequence[float]] = lambda i: (2.0, 0.0, 0.0),
        feedback_text: str = "Go!",
        before_video: Callable[[int], None] | None = None,
    ) -> None:
        self.action_token_ids = ActionTokenIds(SPECIAL["<next>"], SPECIAL["<feedback>"], SPECIAL["<correct>"])
        self.action_logits = action_logits
        self.feedback_text = feedback_text
        self.before_video = before_video
        self.calls: list[DecodeCall] = []
        self.encoded_frames = 0
        self.windows = 0
        self._spelled = 0
        self._lock = threading.Lock()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        self.encoded_frames += context_pixels.shape[0]
        mean = context_pixels.mean(axis=(1, 2, 3))  # one number per frame keeps frames distinguishable
        clip = np.broadcast_to(mean[:, None, None], (len(mean), 196, 768)).astype(np.float32)
        tokens = np.broadcast_to(mean[:, None, None], (len(mean), 144, HIDDEN)).astype(np.float32)
        return ImageFeatures(clip_features=clip, image_tokens=tokens)

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, 8), np.float32), np.array([[0, 2, 4, 6], [1, 3, 5, 7]], dtype=np.int64)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        if self.before_video is not None:
            self.before_video(self.windows)
        return np.full((2, 49, HIDDEN), 0.5, dtype=np.float32)

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        ids_arr = np.asarray(list(ids), dtype=np.float32)
        # Column 0 carries the id so decode can tell which token it was given; the rest varies smoothly.
        return np.stack([ids_arr] + [np.cos(ids_arr * (j + 1)) for j in range(HIDDEN - 1)], axis=-1)

    def decode(
        self, inputs_embeds: np.ndarray, past: KVState | None, position_ids: np.ndarray
    ) -> tuple[np.ndarray, KVState]:
        s = inputs_embeds.shape[1]
        rows = inputs_embeds[0]  # [S, H]
        keys = rotate(rows, position_ids[0])[None, None]  # [1, 1, S, H]
        values = rows[None, None].astype(np.float32)
        if past is not None:
            assert isinstance(past, NumpyKVState)
            k0, v0 = past.layers[0]
            keys, values = np.concatenate([k0, keys], axis=2), np.concatenate([v0, values], axis=2)
        state = NumpyKVState.after_decode([(keys, values)], ROPE, past, position_ids)
        first, last = round(float(rows[0, 0])), round(float(rows[-1, 0]))
        self.calls.append(DecodeCall(first, last, s, position_ids[0].tolist()))
        logits = np.full((1, VOCAB), -10.0, dtype=np.float32)
        if s == 1 and last == SPECIAL["<feedback>"]:
            self._spelled = 0
        if s == 1 and (last == SPECIAL["<feedback>"] or last < 256):
            if self._spelled < len(self.feedback_text):
                logits[0, ord(self.feedback_text[self._spelled]) % 256] = 10.0
                self._spelled += 1
            else:
                logits[0, SPECIAL["<|im_end|>"]] = 10.0
        elif past is not None and s > 100:  # a window append (2402 visual rows): the action query
            ids = self.action_token_ids.ids
            logits[0, list(ids)] = np.asarray(self.action_logits(self.windows), dtype=np.float32)
            self.windows += 1
        return logits, state


def rotate(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Qwen2 RoPE (rotate_half) of ``rows [S, D]`` at ``positions [S]``."""
    angles = ROPE.angles(np.asarray(positions))
    emb = np.concatenate([angles, angles], axis=-1)
    half = HIDDEN // 2
    rotated = np.concatenate([-rows[:, half:], rows[:, :half]], axis=-1)
    return (rows * np.cos(emb) + rotated * np.sin(emb)).astype(np.float32)

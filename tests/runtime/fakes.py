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
from pathlib import Path

import numpy as np

from engine_format import FormatError
from engine_format.geometry import ModelFacts
from engine_format.preprocess import ClipPreprocessConfig
from engine_format.rope import RopeSpec
from engine_format.vocab import ActionTokenIds
from runtime.backends.base import ImageFeatures, ModelBackend, Segment, host_embeds
from runtime.backends.kv import KVCache, PingPongKV, numpy_kv

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
ROPE = RopeSpec(HIDDEN, 10000.0, 1.0 / (10000.0 ** (np.arange(0, HIDDEN, 2, dtype=np.float32) / HIDDEN)))
FACTS = ModelFacts(
    hidden_size=HIDDEN,
    vocab_size=VOCAB,
    num_layers=1,
    num_key_value_heads=1,
    head_dim=HIDDEN,
    image_size=224,
    clip_patches=196,
    clip_hidden_size=768,
    num_frames=16,
    chunk_size=8,
    top_k=4,
    image_tokens_per_frame=144,
    video_tokens_per_chunk=49,
    tokenizer_size=VOCAB,
    num_attention_heads=1,
    rope_theta=10000.0,
    rope_inv_freq=tuple(float(x) for x in ROPE.inv_freq),
    rms_norm_eps=1e-6,
    max_position_embeddings=100_000,
    largest=True,
    videomamba_depth=1,
    eos_token_ids=(SPECIAL["<|im_end|>"],),
    image_token_id=999,
)


class CharStream:
    """Incremental decoding of the character tokenizer."""

    def __init__(self, skip_special_tokens: bool) -> None:
        self.skip, self.text = skip_special_tokens, ""

    def push(self, token_id: int) -> str:
        piece = CharTokenizer().decode([token_id], self.skip)
        self.text += piece
        return piece


class CharTokenizer:
    """One id per character (code point mod 256); the strings in :data:`SPECIAL` are single tokens."""

    def encode(self, text: str) -> list[int]:
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
        return ids

    def single_token_id(self, token: str, where: str) -> int:
        if token in SPECIAL:
            return SPECIAL[token]
        if len(token) == 1:
            return ord(token) % 256
        raise FormatError(f"{where} = {token!r}: is not a single token of the tokenizer")

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        names = {v: k for k, v in SPECIAL.items()}
        return "".join(chr(i) if i < 256 else ("" if skip_special_tokens else names[i]) for i in ids)

    def text_stream(self, skip_special_tokens: bool = True) -> CharStream:
        return CharStream(skip_special_tokens)


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
    device = "cpu"
    random_weights = False
    clip_preprocess = ClipPreprocessConfig()
    tokenizer_dir = Path("fake")

    def __init__(
        self,
        action_logits: Callable[[int], Sequence[float]] = lambda i: (2.0, 0.0, 0.0),
        feedback_text: str = "Go!",
        before_video: Callable[[int], None] | None = None,
    ) -> None:
        self.action_token_ids = ActionTokenIds(SPECIAL["<next>"], SPECIAL["<feedback>"], SPECIAL["<correct>"])
        self.facts = FACTS
        self.action_logits = action_logits
        self.feedback_text = feedback_text
        self.before_video = before_video
        self.calls: list[DecodeCall] = []
        self.encoded_frames = 0
        self.windows = 0
        self._spelled = 0
        self._lock = threading.Lock()

    def load_tokenizer(self) -> CharTokenizer:
        """The character tokenizer (so the CLI can run on this backend)."""
        return CharTokenizer()

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        self.encoded_frames += context_pixels.shape[0]
        mean = context_pixels.mean(axis=(1, 2, 3))  # one number per frame keeps frames distinguishable
        clip = np.broadcast_to(mean[:, None, None], (len(mean), 196, 768)).astype(np.float32)
        tokens = np.broadcast_to(mean[:, None, None], (len(mean), 144, HIDDEN)).astype(np.float32)
        return ImageFeatures(clip_features=clip, image_tokens=tokens, clip_mean=clip.mean(axis=1))

    def select_frames(self, clip_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, 8), np.float32), np.array([[0, 2, 4, 6], [1, 3, 5, 7]], dtype=np.int64)

    def encode_video(self, video_pixels: np.ndarray) -> np.ndarray:
        if self.before_video is not None:
            self.before_video(self.windows)
        return np.full((2, 49, HIDDEN), 0.5, dtype=np.float32)

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        return _table()[np.asarray(list(ids), dtype=np.int64)]

    def allocate_kv(self, capacity: int) -> PingPongKV:
        return numpy_kv(ROPE, 1, 1, capacity, np.float32)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        assert isinstance(kv, PingPongKV)
        rows = host_embeds(_table(), segments, HIDDEN)[0]  # [S, H]
        s = rows.shape[0]
        positions = kv.new_positions(s)
        keys = rotate(rows, positions[0])[None, None]  # [1, 1, S, H]
        (old_k, old_v), = kv.layer_views()
        (new_k, new_v), = kv.output_views(s)
        new_k[:, :, : kv.length], new_v[:, :, : kv.length] = old_k, old_v
        new_k[:, :, kv.length :], new_v[:, :, kv.length :] = keys, rows[None, None]
        had_past = kv.length > 0
        kv.commit(positions)
        first, last = round(float(rows[0, 0])), round(float(rows[-1, 0]))
        self.calls.append(DecodeCall(first, last, s, positions[0].tolist()))
        logits = np.full(VOCAB, -10.0, dtype=np.float32)
        if s == 1 and last == SPECIAL["<feedback>"]:
            self._spelled = 0
        if s == 1 and (last == SPECIAL["<feedback>"] or last < 256):
            if self._spelled < len(self.feedback_text):
                logits[ord(self.feedback_text[self._spelled]) % 256] = 10.0
                self._spelled += 1
            else:
                logits[SPECIAL["<|im_end|>"]] = 10.0
        elif had_past and s > 100:  # a window append (2402 visual rows): the action query
            ids = self.action_token_ids.ids
            logits[list(ids)] = np.asarray(self.action_logits(self.windows), dtype=np.float32)
            self.windows += 1
        return logits


def _table() -> np.ndarray:
    """Embedding rows: column 0 carries the id so decode can tell which token it was given; the rest varies."""
    ids = np.arange(VOCAB, dtype=np.float32)
    return np.stack([ids] + [np.cos(ids * (j + 1)) for j in range(HIDDEN - 1)], axis=-1)


def rotate(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Qwen2 RoPE (rotate_half) of ``rows [S, D]`` at ``positions [S]``."""
    angles = ROPE.angles(np.asarray(positions))
    emb = np.concatenate([angles, angles], axis=-1)
    half = HIDDEN // 2
    rotated = np.concatenate([-rows[:, half:], rows[:, :half]], axis=-1)
    return (rows * np.cos(emb) + rotated * np.sin(emb)).astype(np.float32)

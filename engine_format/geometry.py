"""``ModelFacts``: the geometry and vocabulary facts of one exported model (the manifest's ``model`` section).

The exporter fills it from the reference model; every backend reads it from the manifest instead of hard-coding the
model's shape (16 frames, 2 chunks of 8, 144 image rows per frame, 49 video rows per chunk at the release geometry).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine_format import FormatError
from engine_format.rope import RopeSpec


@dataclass(frozen=True)
class GraphGeometry:
    """What the exported graphs' shapes depend on.

    Attributes:
        hidden_size: H, the decoder width (and the projectors' output width).
        vocab_size: V, embedding rows including ``<image>`` and the action tokens (the logits width).
        num_layers: L decoder layers.
        num_key_value_heads: Hkv, KV heads.
        head_dim: D.
        image_size: Side of both preprocessing branches' output (224).
        clip_patches: CLIP patch tokens per frame (196).
        clip_hidden_size: CLIP width E (768).
        num_frames: Frames per window (16).
        chunk_size: Frames per frame-selection chunk (8).
        top_k: Frames kept per chunk (4).
        image_tokens_per_frame: Image-ETP rows per frame (144).
        video_tokens_per_chunk: Video-ETP rows per chunk (49).
    """

    hidden_size: int
    vocab_size: int
    num_layers: int
    num_key_value_heads: int
    head_dim: int
    image_size: int
    clip_patches: int
    clip_hidden_size: int
    num_frames: int
    chunk_size: int
    top_k: int
    image_tokens_per_frame: int
    video_tokens_per_chunk: int

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.num_frames % self.chunk_size or not 1 <= self.top_k <= self.chunk_size:
            raise FormatError(
                f"model geometry: num_frames {self.num_frames} must split into chunks of {self.chunk_size} and "
                f"1 <= top_k {self.top_k} <= chunk_size"
            )

    @property
    def num_chunks(self) -> int:
        """C, frame-selection chunks per window (2)."""
        return self.num_frames // self.chunk_size

    @property
    def selected_frames(self) -> int:
        """Frames VideoMamba encodes per window: C x K (8)."""
        return self.num_chunks * self.top_k

    @property
    def num_visual_tokens(self) -> int:
        """Visual rows per window: F x 144 + C x 49 (2402)."""
        return self.num_frames * self.image_tokens_per_frame + self.num_chunks * self.video_tokens_per_chunk


@dataclass(frozen=True)
class ModelFacts(GraphGeometry):
    """Everything the runtime needs to know about the model behind the engines (the manifest's ``model`` section).

    Attributes (beyond :class:`GraphGeometry`):
        tokenizer_size: Entries of the saved (extended) tokenizer.
        num_attention_heads: Query heads.
        rope_theta: RoPE base.
        rope_inv_freq: The decoder's RoPE inverse frequencies ``[D/2]`` (from the model's rotary buffer).
        rms_norm_eps: Decoder RMSNorm epsilon.
        max_position_embeddings: Decoder RoPE range; the streaming context stays below it.
        largest: Keep the highest-scoring frames (the release) or the lowest.
        videomamba_depth: VideoMamba blocks (informational).
        eos_token_ids: Ids that end free generation (from the checkpoint's generation config or config.json).
        image_token_id: Id of ``<image>`` in the tokenizer.
    """

    tokenizer_size: int
    num_attention_heads: int
    rope_theta: float
    rope_inv_freq: tuple[float, ...]
    rms_norm_eps: float
    max_position_embeddings: int
    largest: bool
    videomamba_depth: int
    eos_token_ids: tuple[int, ...]
    image_token_id: int

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rope  # validates head_dim and inv_freq

    @property
    def rope(self) -> RopeSpec:
        """The decoder's rotary embedding."""
        return RopeSpec.from_list(self.head_dim, self.rope_theta, self.rope_inv_freq)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ModelFacts:
        """Parses the manifest's ``model`` section, checking every field's presence and type.

        Raises:
            FormatError: Naming the missing, unknown or mistyped key.
        """
        if not isinstance(data, dict):
            raise FormatError(f"{where}: must be an object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = sorted(set(fields) - set(data))
        unknown = sorted(set(data) - set(fields))
        if missing or unknown:
            raise FormatError(f"{where}: missing keys {missing}, unknown keys {unknown} (re-export the engines)")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            value = data[name]
            kind = str(f.type)
            if kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind == "float":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif kind.startswith("tuple[int"):
                ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                value = tuple(value) if ok else value
            else:  # tuple[float, ...]
                ok = isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
                value = tuple(float(v) for v in value) if ok else value
            if not ok:
                raise FormatError(f"{where}.{name} = {data[name]!r}: must be {kind}")
            values[name] = value
        return cls(**values)

"""Per-stage behaviour of the reference model on the tiny synthetic checkpoint (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobile_videogpt import frame_selection
from mobile_videogpt.checkpoint import load_model
from mobile_videogpt.projector import adaptive_pool_matrix
from mobile_videogpt.prompt import chatml_prompt, tokenize_prompt
from mobile_videogpt.video_io import VideoReadError, read_video_frames, sample_positions


def _frames(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 120, 160, 3), dtype=np.uint8)


def test_stage_shapes(tiny_model) -> None:  # noqa: ANN001
    """Each entry point returns the documented shape; 2402 visual rows."""
    video_px, context_px = tiny_model.preprocess(_frames())
    assert video_px.shape == context_px.shape == (16, 3, 224, 224)
    vis = tiny_model.encode_clip(video_px, context_px)
    h = tiny_model.config.hidden_size
    assert vis.clip_features.shape == (16, 196, 768)
    assert vis.frame_scores.shape == (2, 8) and vis.selected_frames.shape == (2, 4)
    assert torch.allclose(vis.frame_scores.sum(-1), torch.full((2,), 1568.0), rtol=1e-4)
    assert vis.videomamba_tokens.shape == (8, 196, 576)
    assert vis.video_pooled.shape == (2, 196, 576)
    assert vis.video_projected.shape == (2, 49, h)
    assert vis.image_projected.shape == (16, 144, h)
    assert vis.visual_tokens.shape == (2402, h)


def test_select_top_k_sorted_by_time_and_gather_order() -> None:
    """Top-K keeps the largest scores, sorted ascending; gathering is chunk-major."""
    scores = torch.tensor([[0.0, 9, 1, 8, 2, 7, 3, 6], [5.0, 0, 0, 0, 9, 9, 9, 1]])
    sel = frame_selection.select_top_k(scores, 4)
    assert sel.tolist() == [[1, 3, 5, 7], [0, 4, 5, 6]]
    pixels = torch.arange(16).float().reshape(16, 1, 1, 1)
    assert frame_selection.gather_selected_frames(pixels, sel).flatten().tolist() == [1, 3, 5, 7, 8, 12, 13, 14]


def test_pool_matrix_equals_adaptive_avg_pool() -> None:
    """The ETP pooling matrix is exactly PyTorch's adaptive average pool (14->12 overlapping, 14->7)."""
    x = torch.randn(2, 5, 14, 14)
    for g in (7, 12):
        ref = torch.nn.functional.adaptive_avg_pool2d(x, (g, g)).flatten(2)
        assert torch.allclose(x.flatten(2) @ adaptive_pool_matrix(14, g).T, ref, atol=1e-6)


def test_kv_cache_decode_equals_full_recompute(tiny_model) -> None:  # noqa: ANN001
    """Prefill + cached single-token decode gives the logits of recomputing the whole sequence."""
    embeds = tiny_model.embed_tokens(list(range(100, 140)))[None]  # [1, 40, H]
    full, _ = tiny_model.decode_step(embeds, all_logits=True)
    _, past = tiny_model.decode_step(embeds[:, :39])
    step, present = tiny_model.decode_step(embeds[:, 39:], past)
    assert present[0][0].shape[2] == 40
    assert torch.allclose(step[0], full[0, -1], atol=1e-4)


def test_append_two_windows_equals_one_prefill(tiny_model) -> None:  # noqa: ANN001
    """Appending two windows onto a past equals one prefill of everything (the streaming contract)."""
    torch.manual_seed(0)
    prefix = tiny_model.embed_tokens(list(range(10, 22)))[None]
    w1, w2 = torch.randn(1, 30, tiny_model.config.hidden_size) * 0.5, torch.randn(1, 30, tiny_model.config.hidden_size) * 0.5
    one, _ = tiny_model.decode_step(torch.cat([prefix, w1, w2], dim=1))
    _, past = tiny_model.decode_step(prefix)
    _, past = tiny_model.decode_step(w1, past)
    two, _ = tiny_model.decode_step(w2, past)
    assert torch.allclose(one, two, atol=1e-4)


def test_generate_stops_at_eos_and_embed_rejects_bad_ids(tiny_model) -> None:  # noqa: ANN001
    """Greedy generation stops after an eos id; out-of-range ids raise."""
    embeds = tiny_model.embed_tokens([1, 2, 3])
    ids, logits = tiny_model.generate(embeds, 5)
    assert len(ids) == 5 and logits.shape == (5, tiny_model.vocab_size)
    first = ids[0]
    ids2, _ = tiny_model.generate(embeds, 5, eos_token_ids=[first])
    assert ids2 == [first]
    with pytest.raises(ValueError, match="token ids must lie in"):
        tiny_model.embed_tokens([tiny_model.vocab_size])


def test_prompt_split_matches_release(tiny_checkpoint: tuple[Path, Path]) -> None:
    """The ChatML prompt splits into prefix/suffix ids around the <image> run, as tokenizer_image_token does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint[0]))
    ids = tokenize_prompt(tok, chatml_prompt("How is my squat?"))
    assert ids.prefix_ids == tok("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n").input_ids
    assert ids.prefix_ids[:3] == [151644, 8948, 198]
    assert ids.suffix_ids[-3:] == tok("<|im_start|>assistant\n").input_ids[-3:]
    with pytest.raises(ValueError, match="no <image>"):
        tokenize_prompt(tok, "no placeholder")


def test_extend_vocab_adds_tied_mean_rows(tiny_checkpoint: tuple[Path, Path]) -> None:
    """Loading with extend_vocab grows the tied matrix by 3 mean-initialised rows."""
    model = load_model(*tiny_checkpoint, extend_vocab=True)
    w = model.lm.model.embed_tokens.weight
    assert w.shape[0] == 151669 and model.lm.lm_head.weight.data_ptr() == w.data_ptr()
    assert torch.allclose(w[151666], w[:151666].float().mean(0), atol=1e-6)
    logits, _ = model.decode_step(model.embed_tokens([1, 2])[None])
    assert logits.shape == (1, 151669)


def test_sample_positions_follow_release_examples() -> None:
    """Frame sampling reproduces the spec's worked examples (section 1.2)."""
    assert sample_positions(145, 30.0) == list(range(0, 136, 9))  # 4.83 s clip: stride 144 // 15 = 9
    long = sample_positions(60 * 30, 30.0)  # 60 s: candidates every 30 frames, linspace over 60 of them
    assert long[:4] == [0, 90, 210, 330] and len(long) == 16
    assert sample_positions(10, 30.0) == list(range(10))


def test_read_video_errors_name_the_file(tmp_path: Path) -> None:
    """Missing and undecodable files raise VideoReadError naming the path."""
    with pytest.raises(VideoReadError, match="does not exist"):
        read_video_frames(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match="junk.mp4"):
        read_video_frames(junk)

"""The pytorch backend's GPU fast-path settings, each against the reference path (docs/gpu.md).

On the CPU: the settings are validated (config and backend), device preprocessing runs on CPU tensors and is held
against ``engine_format.preprocess`` (pixels, then the tiny model's tokens and logits), ``sdpa_causal`` against
``sdpa``, and the static-write decode step (what the CUDA graph records) against the dynamic one. On CUDA the graphs
themselves are replayed against eager calls; here those tests skip with the reason.

Run: ``.venv/bin/pytest tests/runtime/test_torch_fastpath.py -q -s`` (the ``-s`` output has the measured differences).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_format.preprocess import ClipPreprocessConfig, clip_branch, video_branch
from mobile_videogpt.preprocess_device import clip_branch_device, upload_frames, video_branch_device
from mobile_videogpt.selective_scan import SCAN_IMPLS
from runtime.backends import BackendError, create_backend
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SCAN_IMPL_NAMES, ConfigError, apply_overrides, config_from_dict
from runtime.generation import GreedyState, greedy_decode
from runtime.sources import SyntheticSource

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")
# One grey level after ImageNet normalisation (the smallest std, 0.224) is 0.0175.
VIDEO_MAX, CLIP_MAX, MEAN_MAX = 1.01 / 255 / 0.224, 12.01 / 255 / 0.2613, 3e-3


def _frames() -> dict[str, np.ndarray]:
    """The golden frames (240x320, a real clip's statistics) and the synthetic squat scene at 640x480."""
    from tests.conftest import golden_dir

    out = {"synthetic": np.stack([SyntheticSource(fps=30.0, duration_s=10.0).render(i) for i in range(0, 48, 6)])}
    path = golden_dir() / "frames.npy"
    if path.is_file():
        out["golden"] = np.load(path)
    return out


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend.name": "pytorch", "backend.scan_impl": "cuda"},
         "backend.scan_impl = 'cuda': must be one of chunked, ref, triton"),
        ({"backend.name": "pytorch", "backend.preprocess": "gpu"},
         "backend.preprocess = 'gpu': must be one of cpu, device"),
        ({"backend.name": "pytorch", "backend.attention": "flash"},
         "backend.attention = 'flash': must be one of sdpa, sdpa_causal"),
        ({"backend.name": "onnxruntime", "backend.preprocess": "device"},
         "backend.preprocess = 'device': only the pytorch backend"),
        ({"backend.name": "pytorch", "backend.cuda_graphs": True},
         "backend.cuda_graphs = True: needs backend.device cuda"),
    ],
)
def test_fast_path_config_errors_name_the_key(overrides: dict[str, object], message: str) -> None:
    """Each new ``backend`` key is validated on load: unknown values, pytorch-only keys on another backend and CUDA
    graphs on a CPU are ConfigErrors naming the dotted key and what is allowed."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(config_from_dict({}), overrides)


def test_config_scan_names_are_registered() -> None:
    """The runtime's ``backend.scan_impl`` choices are names of the scan registry (the backend resolves them there)."""
    assert set(SCAN_IMPL_NAMES) <= set(SCAN_IMPLS)


def test_fast_path_settings_on_other_backends_are_refused(tmp_path: Path) -> None:
    """``create_backend`` refuses pytorch-only settings for the exported backends instead of ignoring them."""
    with pytest.raises(BackendError, match="onnxruntime backend: cuda_graphs, preprocess are pytorch backend"):
        create_backend("onnxruntime", engines_dir=tmp_path, preprocess="device", cuda_graphs=True)


def test_cuda_graphs_on_cpu_are_refused(tiny_checkpoint: tuple[Path, Path]) -> None:
    """CUDA graphs on a CPU device: a BackendError naming the setting, before the model is loaded."""
    with pytest.raises(BackendError, match="cuda_graphs needs a CUDA device, got device 'cpu'"):
        TorchBackend(*tiny_checkpoint, cuda_graphs=True)


def test_triton_scan_on_cpu_is_refused_without_the_interpreter(
    tiny_checkpoint: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Triton scan on a CPU device without Triton's interpreter: an error saying to use ``chunked``."""
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendError, match="scan_impl 'triton' needs a CUDA device.*use chunked"):
        TorchBackend(*tiny_checkpoint, scan_impl="triton")


# ---------------------------------------------------------------------------------------------------- preprocessing
def test_upload_frames_rejects_mixed_sizes_and_dtypes() -> None:
    """One uint8 [H, W, 3] size per window: anything else is an error naming the frame."""
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="frame 1 is \\(32, 40, 3\\), frame 0 \\(32, 48, 3\\)"):
        upload_frames([frame, frame[:, :40]], "cpu")
    with pytest.raises(ValueError, match="frame 0 must be a uint8"):
        upload_frames([frame.astype(np.float32)], "cpu")


def test_device_preprocessing_pixels_match_the_reference() -> None:
    """Both torch branches (run on CPU tensors) against ``engine_format.preprocess``: video within one grey level
    (OpenCV's fixed-point weights), CLIP within 12 grey levels at edges (PIL rounds between its two passes), both
    with a mean error below 3e-3 (about 0.2 grey levels)."""
    cfg = ClipPreprocessConfig()
    for name, frames in _frames().items():
        uploaded = upload_frames(list(frames), "cpu")
        video = np.abs(video_branch_device(uploaded).numpy() - video_branch(frames))
        clip = np.abs(clip_branch_device(uploaded, cfg).numpy() - clip_branch(frames, cfg))
        print(f"{name} {frames.shape[1]}x{frames.shape[2]}: video max {video.max():.4f} mean {video.mean():.2e}; "
              f"clip max {clip.max():.4f} mean {clip.mean():.2e}")
        assert video.max() <= VIDEO_MAX and clip.max() <= CLIP_MAX
        assert video.mean() <= MEAN_MAX and clip.mean() <= MEAN_MAX


def _cosine(a: object, b: object) -> float:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_device_preprocessing_through_the_tiny_model(tiny_checkpoint: tuple[Path, Path], tiny_backend) -> None:
    """``preprocess: device`` in the backend on CPU tensors against the reference preprocessing: the image tokens,
    video tokens and the window's logits of the tiny model (random weights) keep cosine >= 0.999."""
    device_backend = TorchBackend(*tiny_checkpoint, preprocess="device")
    frames = list(_frames()["synthetic"]) * 2  # 16 frames
    out = {}
    for name, backend in (("cpu", tiny_backend), ("device", device_backend)):
        uploaded = backend.upload_frames(frames)
        images = backend.encode_images(backend.preprocess_images(uploaded, range(16)))
        video = backend.encode_video(backend.preprocess_video(uploaded, [0, 2, 4, 6, 9, 11, 13, 15]))
        kv = backend.allocate_kv(3000)
        logits = backend.decode([[1, 2, 3], images.image_tokens, video, [4]], kv)
        out[name] = [backend.to_host(images.image_tokens), backend.to_host(video), logits]
    cos = [_cosine(a, b) for a, b in zip(out["cpu"], out["device"])]
    err = [float(np.abs(a - b).max()) for a, b in zip(out["cpu"], out["device"])]
    print(f"device vs cpu preprocessing, tiny model: cosine image {cos[0]:.6f} video {cos[1]:.6f} "
          f"logits {cos[2]:.6f}; "
          f"max abs image {err[0]:.2e} video {err[1]:.2e} logits {err[2]:.2e}")
    assert min(cos) >= 0.999
    assert int(np.argmax(out["cpu"][2])) == int(np.argmax(out["device"][2]))


# ---------------------------------------------------------------------------------------------------- decoder
def test_sdpa_causal_attention_matches_sdpa(tiny_checkpoint: tuple[Path, Path], tiny_backend) -> None:
    """``attention: sdpa_causal`` (lower-right causal bias, folded GQA for single queries) gives the logits of
    transformers' ``sdpa`` for a prefill, a 2402-row window append and greedy steps, and the same greedy ids."""
    causal = TorchBackend(*tiny_checkpoint, attention="sdpa_causal")
    rng = np.random.default_rng(0)
    shape = (tiny_backend.facts.num_visual_tokens, tiny_backend.hidden_size)
    visual = rng.normal(0, 0.5, size=shape).astype(np.float32)
    runs = []
    for backend in (tiny_backend, causal):
        kv = backend.allocate_kv(3000)
        first = backend.decode([list(range(100, 140))], kv)
        window = backend.decode([[7, 8], visual, [9]], kv)
        ids = list(greedy_decode(window, lambda t, b=backend, k=kv: b.decode([list(t)], k), 6, set(), GreedyState()))
        runs.append((first, window, ids))
    (f0, w0, ids0), (f1, w1, ids1) = runs
    np.testing.assert_allclose(f1, f0, atol=1e-5 * np.abs(f0).max())
    np.testing.assert_allclose(w1, w0, atol=1e-5 * np.abs(w0).max())
    assert ids1 == ids0


def test_static_write_decode_step_matches_the_dynamic_step(tiny_backend) -> None:
    """The function the CUDA graph records, run eagerly: the cache in static-write mode (one slot at a device index,
    attention over all C slots under the ``slot <= index`` mask) gives the dynamic step's logits and writes the same
    keys and values into that slot."""
    backend, model = tiny_backend, tiny_backend.model
    kv = backend.allocate_kv(200)
    backend.decode([list(range(100, 160))], kv)
    embeds = model.embed_tokens([42])[None]
    slot = kv.length
    with torch.no_grad():
        kv.cache.set_static_index(torch.tensor([slot]))
        mask = (torch.arange(kv.capacity) <= slot)[None, None, None, :]
        static = model.forward_cached(embeds, kv.cache, torch.tensor([[slot]]), attention_mask=mask)
        kv.cache.set_static_index(None)
        written = [(k[:, :, slot].clone(), v[:, :, slot].clone()) for k, v in kv.cache.buffers()]
        dynamic = model.forward_cached(embeds, kv.cache, torch.tensor([[slot]]))
    torch.testing.assert_close(static, dynamic, rtol=1e-5, atol=1e-5)
    for (k, v), (dk, dv) in zip(written, kv.cache.views()):
        torch.testing.assert_close(k, dk[:, :, slot])
        torch.testing.assert_close(v, dv[:, :, slot])


# ---------------------------------------------------------------------------------------------------- CUDA graphs
@pytest.fixture(scope="module")
def cuda_pair(tiny_checkpoint: tuple[Path, Path]) -> tuple[TorchBackend, TorchBackend]:
    """The tiny model on CUDA, eager and with CUDA graphs (fp32)."""
    return TorchBackend(*tiny_checkpoint, device="cuda"), TorchBackend(*tiny_checkpoint, device="cuda",
                                                                        cuda_graphs=True)


@needs_cuda
def test_graphed_decode_steps_match_eager_across_an_eviction(cuda_pair: tuple[TorchBackend, TorchBackend]) -> None:
    """Greedy steps replayed from the decode graph give the eager logits and ids, also after the cache dropped and
    re-based a range (the graph reads the slot from a device index, so in-place compaction keeps it valid)."""
    rng = np.random.default_rng(1)
    facts = cuda_pair[0].facts
    visual = rng.normal(0, 0.5, size=(facts.num_visual_tokens, facts.hidden_size)).astype(np.float32)
    runs = []
    for backend in cuda_pair:
        kv = backend.allocate_kv(6000)
        backend.decode([list(range(100, 140))], kv)
        logits = backend.decode([[7], visual, [9]], kv)
        ids = list(greedy_decode(logits, lambda t, b=backend, k=kv: b.decode([list(t)], k), 5, set(), GreedyState()))
        kv.drop(40, 40 + 2404)  # evict the window
        logits = backend.decode([[7], visual, [9]], kv)
        ids += list(greedy_decode(logits, lambda t, b=backend, k=kv: b.decode([list(t)], k), 5, set(), GreedyState()))
        runs.append((ids, backend.decode([[ids[-1]]], kv)))
    assert runs[1][0] == runs[0][0]
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-4, atol=1e-4 * np.abs(runs[0][1]).max())


@needs_cuda
def test_graphed_encoders_match_eager_per_batch_size(cuda_pair: tuple[TorchBackend, TorchBackend]) -> None:
    """The image encoder graph (batch 16 and 12, one graph each) and the video encoder graph give the eager outputs;
    the returned tensors are copies (a later replay does not change them)."""
    eager, graphed = cuda_pair
    rng = np.random.default_rng(2)
    pixels = rng.normal(0, 1, size=(16, 3, 224, 224)).astype(np.float32)
    first = graphed.encode_images(pixels)
    for batch in (16, 12):
        want, got = eager.encode_images(pixels[:batch]), graphed.encode_images(pixels[:batch])
        torch.testing.assert_close(got.image_tokens, want.image_tokens, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got.clip_mean, want.clip_mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first.image_tokens, eager.encode_images(pixels).image_tokens, rtol=1e-4, atol=1e-4)
    assert sorted(graphed._image_graph.shapes) == [(12, 3, 224, 224), (16, 3, 224, 224)]
    video = pixels[:8]
    torch.testing.assert_close(graphed.encode_video(video), eager.encode_video(video), rtol=1e-4, atol=1e-4)


@needs_cuda
def test_fast_path_window_matches_the_reference_on_cuda(tiny_checkpoint: tuple[Path, Path]) -> None:
    """Every fast-path setting at once (Triton scan, device preprocessing, CUDA graphs, sdpa_causal; fp32) against
    the reference settings on CUDA: the window's logits keep cosine >= 0.9999 and the same arg-max."""
    pytest.importorskip("triton", reason="triton is not installed")
    frames = list(_frames()["synthetic"]) * 2
    out = []
    for options in ({}, {"scan_impl": "triton", "preprocess": "device", "cuda_graphs": True,
                         "attention": "sdpa_causal"}):
        backend = TorchBackend(*tiny_checkpoint, device="cuda", **options)
        uploaded = backend.upload_frames(frames)
        images = backend.encode_images(backend.preprocess_images(uploaded, range(16)))
        video = backend.encode_video(backend.preprocess_video(uploaded, [0, 2, 4, 6, 9, 11, 13, 15]))
        kv = backend.allocate_kv(3000)
        logits = backend.decode([[1, 2, 3], images.image_tokens, video, [4]], kv)
        out.append(np.concatenate([logits, backend.decode([[int(np.argmax(logits))]], kv)]))
    assert _cosine(out[0], out[1]) >= 0.9999
    assert int(np.argmax(out[0][: len(out[0]) // 2])) == int(np.argmax(out[1][: len(out[1]) // 2]))

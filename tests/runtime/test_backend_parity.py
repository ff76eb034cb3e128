"""End to end over a synthetic video with the tiny model: ONNX Runtime decides exactly like the PyTorch reference.

``pytest tests/runtime/test_backend_parity.py -s``. Needs exported engines: ``$MVGPT_ENGINES_DIR``, else
``engines/tiny``, else a session export into a temporary directory (``python -m export``) when the exporter exists;
skips with the reason otherwise.

The tiny model's three action-token rows are identical (initialised to the mean embedding), so the model policy
would always tie; the run therefore uses the ``every_n`` policy for the decisions and checks the action logits and
the greedy feedback text, which depend on the whole decoder and the full-vocabulary logits.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import create_backend, tokenizer_for
from runtime.config import apply_overrides, config_from_dict
from runtime.events import Event, EventBus, FeedbackFinished, WindowDecided
from runtime.pipeline import StreamingEngine
from runtime.sources import SyntheticSource

REPO = Path(__file__).resolve().parents[2]
ENGINES_ENV = "MVGPT_ENGINES_DIR"


@pytest.fixture(scope="session")
def tiny_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engines directory for the synthetic tiny model (see the module docstring)."""
    if os.environ.get(ENGINES_ENV):
        path = Path(os.environ[ENGINES_ENV])
        if not (path / "manifest.json").is_file():
            pytest.fail(f"${ENGINES_ENV}={path} has no manifest.json")
        return path
    if (REPO / "engines" / "tiny" / "manifest.json").is_file():
        return REPO / "engines" / "tiny"
    if importlib.util.find_spec("export.__main__") is None:
        pytest.skip("no engines/tiny and no exporter yet (python -m export): cannot compare ONNX Runtime")
    out = tmp_path_factory.mktemp("engines")
    cmd = [
        sys.executable,
        "-m",
        "export",
        "--preset",
        "tiny",
        "--name",
        "tiny",
        "--out",
        str(out),
        "--precision",
        "fp32",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out / "tiny"


def _stream(backend, engines: Path) -> list[Event]:
    cfg = apply_overrides(
        config_from_dict({}),
        {
            "window.latest_wins": False,  # every window, in order: the two runs see the same windows
            "capture.ring_buffer_frames": 512,
            "policy.name": "every_n",
            "policy.every_n.n": 2,
            "decision.min_feedback_interval_s": 0,
            "decision.suppress_repeats": False,
            "generation.max_new_tokens": 8,
            "context.clear_after_feedback": False,  # later windows attend to the generated text as well
            "context.max_windows": 2,  # and one eviction happens
        },
    )
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    source = SyntheticSource(duration_s=6.5, paced=False)
    StreamingEngine(cfg, backend, source, bus, tokenizer_for(backend, engines)).run()
    return events


def test_onnxruntime_decides_like_the_pytorch_reference(tiny_engines: Path) -> None:
    if importlib.util.find_spec("runtime.backends.onnxruntime_backend") is None:
        pytest.skip("runtime/backends/onnxruntime_backend.py does not exist yet")
    reference = create_backend("pytorch", engines_dir=tiny_engines, threads=2)
    exported = create_backend("onnxruntime", engines_dir=tiny_engines, threads=2)
    assert exported.action_token_ids == reference.action_token_ids
    ref_events, ort_events = _stream(reference, tiny_engines), _stream(exported, tiny_engines)

    ref_dec = [e for e in ref_events if isinstance(e, WindowDecided)]
    ort_dec = [e for e in ort_events if isinstance(e, WindowDecided)]
    assert [(e.window_index, e.action) for e in ort_dec] == [(e.window_index, e.action) for e in ref_dec]
    assert len(ref_dec) == 3
    ref_logits = np.array([e.action_logits for e in ref_dec])
    ort_logits = np.array([e.action_logits for e in ort_dec])
    err = float(np.abs(ref_logits - ort_logits).max())
    print(f"action logits: max |ORT - PyTorch| = {err:.2e} (scale {np.abs(ref_logits).max():.2f})")
    assert err <= 1e-3 * max(1.0, float(np.abs(ref_logits).max()))

    ref_text = [e.text for e in ref_events if isinstance(e, FeedbackFinished)]
    ort_text = [e.text for e in ort_events if isinstance(e, FeedbackFinished)]
    print(f"feedback (random weights): {ref_text}")
    assert ort_text == ref_text and len(ref_text) == 1

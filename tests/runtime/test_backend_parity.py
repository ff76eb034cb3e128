"""End to end over a synthetic video with the tiny model: ONNX Runtime streams like the PyTorch reference.

``pytest tests/runtime/test_backend_parity.py -s``. Uses the session's tiny engines (``exported_tiny``).

The tiny model's three action-token rows are identical (initialised to the mean embedding), so the model policy
would always tie; the runs therefore use the ``every_n`` policy for the decisions (identical by construction) and
compare what depends on the backend: the action logits of every window and the greedy feedback text, which depend
on the whole decoder (with an eviction and text kept in the context) and on the full-vocabulary logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends import create_backend
from runtime.config import apply_overrides, config_from_dict
from runtime.engine import StreamingEngine
from runtime.events import Event, EventBus, FeedbackFinished, WindowDecided
from runtime.sources import SyntheticSource


def _stream(backend) -> list[Event]:
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
    source = SyntheticSource(duration_s=5.0, paced=False)  # windows 0-2, the last ends at 5.0 s
    StreamingEngine(cfg, backend, source, bus, backend.load_tokenizer()).run()
    return events


def test_onnxruntime_streams_like_the_pytorch_reference(exported_tiny: Path) -> None:
    reference = create_backend("pytorch", engines_dir=exported_tiny, threads=2)
    exported = create_backend("onnxruntime", engines_dir=exported_tiny, threads=2)
    assert exported.action_token_ids == reference.action_token_ids
    assert exported.clip_preprocess == reference.clip_preprocess
    ref_events, ort_events = _stream(reference), _stream(exported)

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

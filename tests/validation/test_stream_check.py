"""The end-to-end ``StreamSession`` check: its windows, its verdicts, and a runtime bug it found.

``pytest tests/validation/test_stream_check.py -s``. The passing runs on the tiny engines are part of
``test_parity.py`` (the parity CLI runs this check for every backend).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from runtime.backends import create_backend
from validation.compare import all_passed, render_table
from validation.stream_check import StreamRecord, compare_streams, run_stream, stream_config, stream_plan
from validation.tolerances import tolerance_for


def test_stream_windows_and_frames() -> None:
    """Four 2 s windows with 0.5 s overlap at 30 fps: 61 frames each, consecutive windows share 16 frame indices."""
    config = stream_config(4)
    plan = stream_plan(config, 4)
    windows, frames = plan.windows, plan.frames
    assert [(w.index, w.t_start, w.t_end) for w in windows] == [(k, 1.5 * k, 1.5 * k + 2.0) for k in range(4)]
    assert [len(f) for f in frames] == [61, 61, 61, 61]
    shared = {f.index for f in frames[0]} & {f.index for f in frames[1]}
    assert shared == set(range(45, 61))
    assert config.policy.name == "every_n" and config.policy.every_n.n == 2
    assert config.decision.min_feedback_interval_s == 0.0 and config.generation.max_new_tokens == 4


def _record(subject: str) -> StreamRecord:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 50)).astype(np.float32)
    return StreamRecord(
        subject,
        decisions=[(0, "<next>", 100, 1), (1, "<feedback>", 200, 2)],
        window_logits=logits,
        action_logits=logits[:, -3:],
        feedback_tokens={1: [7, 8, 9]},
        feedback_texts={1: "abc"},
        feedback_margins={1: [1.0, 0.2, 1.0, 1.0]},
    )


def test_compare_streams_verdicts() -> None:
    """Identical records pass; a changed decision fails; a feedback diverging at a near tie passes only for fp16."""
    ref = _record("pytorch fp32")
    assert all_passed(compare_streams(ref, _record("onnxruntime fp32"), tolerance_for("fp32")))
    other = _record("onnxruntime fp32")
    other.decisions[1] = (1, "<next>", 200, 2)
    rows = compare_streams(ref, other, tolerance_for("fp32"))
    assert [r.output for r in rows if not r.passed] == ["decisions"]
    diverged = copy.deepcopy(ref)
    diverged.subject, diverged.feedback_tokens = "onnxruntime fp16", {1: [7, 5, 9]}  # at step 1, margin 0.2
    rows = {r.output: r for r in compare_streams(ref, diverged, tolerance_for("fp16"))}
    assert rows["feedback_tokens[w1]"].passed and "near tie" in rows["feedback_tokens[w1]"].note
    rows = {r.output: r for r in compare_streams(ref, diverged, tolerance_for("fp32"))}
    assert not rows["feedback_tokens[w1]"].passed
    missing = copy.deepcopy(ref)
    missing.feedback_tokens = {}
    rows = {r.output: r for r in compare_streams(ref, missing, tolerance_for("fp32"))}
    assert not rows["feedback_tokens[w1]"].passed and "only one of" in rows["feedback_tokens[w1]"].note


def test_eviction_matches_between_pytorch_and_onnxruntime(exported_tiny: Path) -> None:
    """every_n 3 with max_windows 2: window 2 evicts window 0 and re-bases window 1 (drop + RoPE shift) before its
    append; pytorch and ORT fp32 must then agree on the action query and the feedback (this pinned a bug where the
    torch cache's rotation aliased its fp32 input, fixed in ``kv_torch._f32_copy``)."""
    plan = stream_plan(stream_config(2, max_windows=2, every_n=3), 3)
    with create_backend("pytorch", engines_dir=exported_tiny, threads=1) as backend:
        ref = run_stream(backend, plan, record_margins=True)
    with create_backend("onnxruntime", engines_dir=exported_tiny, threads=1) as backend:
        out = run_stream(backend, plan)
    assert ref.evictions == {"max_windows": 1}
    rows = compare_streams(ref, out, tolerance_for("fp32"))
    print(render_table(rows))
    assert all_passed(rows)

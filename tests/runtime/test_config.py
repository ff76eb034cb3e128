"""streaming_config.yaml loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import DEFAULT_CONFIG_PATH, ConfigError, StreamingConfig, apply_overrides, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_repo_config_matches_defaults() -> None:
    assert DEFAULT_CONFIG_PATH.exists()
    cfg = load_config()
    assert cfg == StreamingConfig()
    assert (cfg.window.window_s, cfg.window.overlap_s, cfg.window.frames_per_window) == (2.0, 0.5, 16)
    assert cfg.policy.name == "every_n" and cfg.backend.name == "onnxruntime"
    # Unset (null): the checkpoint's stop ids and penalty apply (runtime.generation.resolve_generation).
    assert cfg.generation.stop_tokens is None and cfg.generation.repetition_penalty is None


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "window:\n  overlap_s: 1\npolicy:\n  name: motion\n"))
    assert cfg.window.overlap_s == 1.0 and isinstance(cfg.window.overlap_s, float)
    assert cfg.policy.name == "motion" and cfg.window.window_s == 2.0
    assert load_config(_write(tmp_path, "")) == StreamingConfig()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("window:\n  overlap_s: 2.5\n", r"window\.overlap_s = 2\.5: must be >= 0 and < window\.window_s \(2\.0\)"),
        ("policy:\n  random:\n    p: 1.5\n", r"policy\.random\.p = 1\.5: must be in \[0, 1\]"),
        ("backend:\n  name: tflite\n", r"backend\.name = 'tflite': must be one of pytorch, onnxruntime, tensorrt"),
        ("context:\n  max_windows: true\n", r"context\.max_windows = True: must be an integer"),
        ("decision:\n  confidence_threshold: high\n", r"decision\.confidence_threshold = 'high': must be a number"),
        ("window:\n  frame_rate: 30\n", r"window\.frame_rate: unknown key \(allowed in window: window_s, overlap_s"),
        ("extras: 1\n", r"extras: unknown key \(allowed in top level: window"),
        ("policy: motion\n", r"policy: must be a mapping"),
        ("window:\n  frames_per_window: 0\n", r"window\.frames_per_window = 0: must be >= 1"),
        ("window:\n  latest_wins: 1\n", r"window\.latest_wins = 1: must be true or false"),
        ("context:\n  max_tokens: 2000\n", r"context\.max_tokens = 2000: must be >= 3000"),
        ("backend:\n  model_dir: ' '\n", r"backend\.model_dir = ' ': must be a non-empty path"),
        ("window:\n  min_tail_s: 2.0\n", r"window\.min_tail_s = 2\.0: must be >= 0 and < window\.window_s \(2\.0\)"),
        ("backend:\n  onnxruntime:\n    decode_chunk_rows: -8\n",
         r"backend\.onnxruntime\.decode_chunk_rows = -8: must be in \[0, 65536\]"),
        ("backend:\n  onnxruntime:\n    arena: true\n", r"backend\.onnxruntime\.arena: unknown key"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, yaml_text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "window: [unclosed\n"))


def test_overrides_apply_and_validate() -> None:
    base = load_config()
    cfg = apply_overrides(base, {"window.overlap_s": "0.25", "policy.name": "random", "decision.allow_correct": True})
    assert cfg.window.overlap_s == 0.25 and cfg.policy.name == "random" and cfg.decision.allow_correct
    assert base.window.overlap_s == 0.5  # the original is unchanged
    with pytest.raises(ConfigError, match=r"window\.overlap_s = 3\.0: must be >= 0 and < window\.window_s"):
        apply_overrides(base, {"window.overlap_s": 3.0})
    with pytest.raises(ConfigError, match=r"policy\.motion\.speed: unknown key"):
        apply_overrides(base, {"policy.motion.speed": 1})
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides(base, {"window": 1})


def test_motion_threshold_range_depends_on_mode() -> None:
    base = load_config()
    assert apply_overrides(base, {"policy.motion.threshold": 5.0}).policy.motion.threshold == 5.0
    with pytest.raises(
        ConfigError, match=r"policy\.motion\.threshold = 5\.0: must be > 0 and <= 2 for policy\.motion\.mode embedding"
    ):
        apply_overrides(base, {"policy.motion.mode": "embedding", "policy.motion.threshold": 5.0})


def test_ring_buffer_must_hold_one_window_at_the_source_rate() -> None:
    """``check_ring_buffer``: 61 frames hold a 2 s window at 30 fps (both ends), 60 do not; at 60 fps 121 are needed."""
    from runtime.config import check_ring_buffer

    check_ring_buffer(apply_overrides(StreamingConfig(), {"capture.ring_buffer_frames": 61}), 30.0)
    with pytest.raises(ConfigError, match=r"capture\.ring_buffer_frames = 60: must hold one window of camera 0 "
                                          r"\(>= 61: window\.window_s 2 s at 30 fps\)"):
        check_ring_buffer(apply_overrides(StreamingConfig(), {"capture.ring_buffer_frames": 60}), 30.0, "camera 0")
    with pytest.raises(ConfigError, match=r">= 121"):
        check_ring_buffer(apply_overrides(StreamingConfig(), {"capture.ring_buffer_frames": 120}), 60.0)

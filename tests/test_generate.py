"""The reference's generation under the checkpoint's generation config, and ``mobile_videogpt.generate``'s exit codes.

``pytest tests/test_generate.py``. The penalty is checked against transformers' own ``generate`` on the same model
(prompt as ``inputs_embeds``, so HF's penalty sees the generated ids only, as in the release).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mobile_videogpt import generate as generate_cli
from mobile_videogpt.checkpoint import load_model


@pytest.fixture(scope="module")
def golden_geometry_model(tiny_golden_checkpoint: tuple[Path, Path]):  # noqa: ANN201 - MobileVideoGPT
    """The tiny-golden model (vocab 1000: 40 greedy steps repeat ids, so a penalty changes the text)."""
    return load_model(*tiny_golden_checkpoint)


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")  # HF confirms our rule
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_reference_generate_equals_transformers_generate_with_the_penalty(golden_geometry_model, penalty: float) -> None:  # noqa: ANN001
    """MobileVideoGPT.generate with a repetition penalty picks HF generate's ids (do_sample=False, num_beams=1)."""
    model = golden_geometry_model
    embeds = model.embed_tokens([5, 6, 5, 6, 5, 6])
    ids, _ = model.generate(embeds, 40, repetition_penalty=penalty)
    with torch.no_grad():
        hf = model.lm.generate(
            inputs_embeds=embeds[None], attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
            do_sample=False, num_beams=1, repetition_penalty=penalty, max_new_tokens=40, eos_token_id=None,
            pad_token_id=0,
        )
    assert ids == hf[0].tolist()
    if penalty != 1.0:
        plain, _ = model.generate(embeds, 40)
        assert plain != ids, "the penalty did not change the ids: the test cannot fail"


def test_flag_then_checkpoint_then_default(tmp_path: Path) -> None:
    """--max-new-tokens / --repetition-penalty win over generation_config.json, which wins over 32 / 1.0."""
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [7, 8], "repetition_penalty": 1.1, "max_new_tokens": 64, "do_sample": True})
    )
    from_file = generate_cli.generation_settings(tmp_path, 2, None, None)
    assert (from_file.max_new_tokens, from_file.repetition_penalty, from_file.stop_ids) == (64, 1.1, (7, 8))
    assert set(from_file.sources.values()) == {"checkpoint"}
    flags = generate_cli.generation_settings(tmp_path, 2, 5, 1.0)
    assert (flags.max_new_tokens, flags.repetition_penalty) == (5, 1.0) and set(flags.sources.values()) == {"flag"}
    bare = generate_cli.generation_settings(tmp_path / "none", 2, None, None)
    assert (bare.max_new_tokens, bare.repetition_penalty, bare.stop_ids) == (32, 1.0, (2,))


def _video(path: Path, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_cli_answers_and_reports_where_each_setting_came_from(
    tiny_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 on the tiny checkpoint: the answer is labelled random weights, the settings carry their sources."""
    model_dir, clip_dir = tiny_checkpoint
    code = generate_cli.main(["--model", str(model_dir), "--clip", str(clip_dir), "--video", str(_video(tmp_path / "v.mp4")),
                              "--max-new-tokens", "3", "--log-level", "WARNING"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("answer (random weights: the text is meaningless):")
    result = json.loads(out.split("\n", 1)[1])
    assert result["generation"]["sources"] == {"max_new_tokens": "flag", "repetition_penalty": "default"}
    assert result["generation"]["stop_ids"] == [151645, 151643] and len(result["ids"]) <= 3


def test_cli_bad_checkpoint_is_exit_2_with_one_line_and_no_traceback(
    tiny_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing model directory: exit 2, one stderr line naming it; the traceback only with --log-level DEBUG."""
    argv = ["--model", str(tmp_path / "nowhere"), "--clip", str(tiny_checkpoint[1]), "--video", str(tmp_path / "v.mp4")]
    assert generate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"generate: checkpoint: {tmp_path / 'nowhere'} does not exist"]
    assert generate_cli.main([*argv, "--log-level", "DEBUG"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_cli_unreadable_video_is_exit_3(tiny_checkpoint: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A video file that is not a video: exit 3 with one line naming it."""
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    code = generate_cli.main(["--model", str(tiny_checkpoint[0]), "--clip", str(tiny_checkpoint[1]),
                              "--video", str(bad), "--log-level", "WARNING"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and err[0].startswith("generate: video:") and str(bad) in err[0]


def test_cli_bad_arguments_are_exit_2() -> None:
    """--max-new-tokens 0 and a negative --repetition-penalty are argument errors (argparse exit 2)."""
    for flag, value in (("--max-new-tokens", "0"), ("--repetition-penalty", "-1")):
        with pytest.raises(SystemExit) as info:
            generate_cli.main(["--model", "m", "--clip", "c", "--video", "v", flag, value])
        assert info.value.code == 2

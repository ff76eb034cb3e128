"""benchmarks.video: the colour and VFR parts run and report what the decoders do (the memory part is too long)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.media import ffmpeg_missing_reason


def test_colour_and_vfr_parts_report_the_new_decoder_as_correct(tmp_path: Path) -> None:
    """``--only colour,vfr`` writes video.json: PyAV within 1.2 grey levels of BT.709, PTS exact on the VFR clip."""
    if ffmpeg_missing_reason():
        pytest.skip(ffmpeg_missing_reason())
    from benchmarks.video import main

    assert main(["--out", str(tmp_path / "out"), "--media", str(tmp_path / "media"), "--only", "colour,vfr"]) == 0
    report = json.loads((tmp_path / "out" / "video.json").read_text())
    assert report["colour"]["decoders"]["pyav (new)"]["vs_bt709"]["mean"] < 1.2
    assert report["vfr"]["new_pts"]["max"] < 1e-6
    assert report["vfr"]["old_index_over_fps"]["max"] > 1.0
    assert "memory" not in report

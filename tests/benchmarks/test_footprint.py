"""``benchmarks.footprint``'s CPU-side logic without building venvs: ``-X importtime`` parsing, size accounting and
the reuse-only skip.

Run: ``.venv/bin/python -m pytest -q tests/benchmarks/test_footprint.py``
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import footprint
from benchmarks.report import render

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:       300 |        900 | site
import time:        50 |         50 |     numpy.core
import time:      1000 |       4000 |   numpy
import time:       500 |       6000 | runtime
import time:       200 |       2500 | runtime.webcam
import time:        10 |         10 | runtimes_other
"""


def test_importtime_counts_only_the_statements_top_level_entries() -> None:
    """Start-up imports (site) and nested entries are left out; ``runtime`` and ``runtime.*`` are summed."""
    assert footprint.importtime_top_level_ms(IMPORTTIME, "runtime") == 8.5


def test_installed_size_sums_files_and_counts_distributions(tmp_path: Path) -> None:
    """site-packages bytes are the files' sizes; ``*.dist-info`` folders count the distributions."""
    sp = tmp_path / "lib" / "python3.11" / "site-packages"
    (sp / "pkg").mkdir(parents=True)
    (sp / "pkg" / "a.py").write_bytes(b"x" * 100)
    (sp / "pkg-1.0.dist-info").mkdir()
    (sp / "pkg-1.0.dist-info" / "METADATA").write_bytes(b"y" * 10)
    (sp / "single.py").write_bytes(b"z" * 5)
    size = footprint.installed_size(tmp_path)
    assert size["site_packages_bytes"] == 115
    assert size["distributions"] == 1
    assert size["largest"][0] == {"name": "pkg", "bytes": 100}


def test_reuse_only_without_venvs_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    """``--reuse-only`` never builds: a missing venv gives a report with status skipped, rendered as such."""
    assert footprint.main(["--venvs", str(tmp_path / "none"), "--reuse-only", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "footprint.json").read_text())
    assert report["status"] == "skipped" and "--reuse-only" in report["reason"]
    assert "Not measured" in render(report)


def test_a_venv_is_reused_only_for_the_same_dependencies(tmp_path: Path) -> None:
    """The stamp records the pyproject hash; another hash means rebuild."""
    venv = tmp_path / "v"
    venv.mkdir()
    assert not footprint.venv_ready(venv)
    (venv / footprint.STAMP).write_text(json.dumps({"pyproject": footprint.pyproject_hash()}))
    assert footprint.venv_ready(venv)
    (venv / footprint.STAMP).write_text(json.dumps({"pyproject": "other"}))
    assert not footprint.venv_ready(venv)

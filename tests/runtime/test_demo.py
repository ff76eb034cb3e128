"""``python -m runtime.demo`` prerequisites: engines are exported only when missing, and a missing exporter is an error.

``pytest tests/runtime/test_demo.py``. The full demo (export + 16 s paced stream) is exercised by ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import demo


def test_existing_engines_are_used_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manifest.json").write_text("{}")

    def no_export(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("export must not run when the manifest exists")

    monkeypatch.setattr(demo.subprocess, "run", no_export)
    assert demo.ensure_engines(tmp_path) == tmp_path


def test_missing_exporter_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(demo.DemoError, match=r"has no manifest\.json and the exporter \(python -m export\) is not"):
        demo.ensure_engines(tmp_path / "tiny")


def test_failed_export_is_reported_with_its_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        returncode, stdout = 7, ""

    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda _name: object())
    monkeypatch.setattr(demo.subprocess, "run", lambda *_a, **_k: Done())
    with pytest.raises(demo.DemoError, match=r"python -m export failed with exit code 7 \(command: .*--name tiny"):
        demo.ensure_engines(tmp_path / "tiny")

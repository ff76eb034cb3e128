"""Layering of validation: ``export`` never imports ``runtime`` or ``validation``, and nothing below ``validation``
imports it (``validation`` and ``benchmarks`` sit on top).

``pytest tests/validation/test_layering.py``. Reads the import statements (``ast``); nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """File -> top-level packages it imports (absolute imports, also inside functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("export", {"runtime", "validation", "benchmarks"}),
        ("runtime", {"export", "validation", "benchmarks"}),
        ("engine_format", {"mobile_videogpt", "export", "runtime", "validation", "benchmarks"}),
        ("mobile_videogpt", {"export", "runtime", "validation", "benchmarks"}),
        ("benchmarks", {"validation"}),
    ],
)
def test_package_does_not_import_upward(package: str, forbidden: set[str]) -> None:
    """No module of ``package`` imports a package above or beside it."""
    offenders = {f: sorted(names & forbidden) for f, names in imported_packages(package).items() if names & forbidden}
    assert not offenders, f"{package} imports {offenders}"


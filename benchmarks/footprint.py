"""Footprint of the lean runtime path: installed size and import time, runtime-only install vs the full install.

Usage::

    python -m benchmarks.footprint --out DIR                   # builds the venvs under artifacts/venvs on first use
    python -m benchmarks.footprint --out DIR --reuse-only      # skip (exit 0, status "skipped") if they do not exist

Two throwaway virtual environments (``python -m venv``) under ``--venvs`` (default ``artifacts/venvs``):

* ``runtime``: ``pip install ".[runtime]"``: the base dependencies and ONNX Runtime, what
  ``python -m runtime.webcam --engines DIR`` needs;
* ``full``: ``pip install torch==2.13.0`` (the local CPU wheel; an unpinned torch would pull a multi-GB CUDA build)
  then ``pip install ".[dev]"``: reference, export, tests.

An existing venv whose recorded ``pyproject.toml`` hash matches is reused; only this project is reinstalled into it
(``pip install --no-deps --force-reinstall .``), so the measurement is of the current code. pip installs from a
temporary copy of the project's files, so nothing is built inside the checkout. Per venv:

* **installed size**: bytes of every file under its ``site-packages`` (apparent size), the distribution count, the
  largest top-level entries;
* **import time** of ``runtime.webcam`` (the lean CLI), ``runtime.backends.onnxruntime_backend`` (what it loads to
  run) and, in the full venv, ``runtime.backends.torch_backend``: each in a fresh interpreter, ``--runs`` times after
  one untimed run: the wall time of the ``import`` statement (p50/p95) and ``python -X importtime``'s cumulative time
  of the statement's top-level entries (p50; interpreter start-up imports left out), and whether ``torch`` /
  ``transformers`` / ``onnxruntime`` ended up in ``sys.modules``.

The interpreters run outside the repository (so ``import runtime`` finds the installed copy, not the source tree)
with ``PYTHONPATH`` cleared. Writes ``footprint.json`` and ``footprint.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, command_line, machine_line, markdown_table, report_header, summarize, write_json

logger = logging.getLogger("benchmarks.footprint")

#: What each venv installs (pip arguments, in order); ``.`` is this repository.
INSTALLS: dict[str, list[list[str]]] = {
    "runtime": [[".[runtime]"]],
    "full": [["torch==2.13.0"], [".[dev]"]],
}
#: Modules whose import is timed, per venv.
MODULES: dict[str, tuple[str, ...]] = {
    "runtime": ("runtime.webcam", "runtime.backends.onnxruntime_backend"),
    "full": ("runtime.webcam", "runtime.backends.onnxruntime_backend", "runtime.backends.torch_backend"),
}
HEAVY = ("torch", "transformers", "onnxruntime")
#: The repository's package folders (``[tool.setuptools.packages.find] include`` of pyproject.toml).
PACKAGES = ("engine_format", "mobile_videogpt", "export", "runtime", "validation", "benchmarks")
STAMP = ".footprint.json"

_PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
wall = time.perf_counter() - start
print(json.dumps({{"wall_ms": wall * 1e3, "modules": len(sys.modules),
                  "loaded": {{m: m in sys.modules for m in {heavy!r}}}}}))
"""


class FootprintError(RuntimeError):
    """A venv could not be built or a probe failed (the message has the command and its output's tail)."""


def _run(cmd: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise FootprintError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    return proc


def pyproject_hash() -> str:
    """SHA-256 of ``pyproject.toml`` (a venv built for another dependency set is rebuilt)."""
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    """The venv's interpreter."""
    return venv / "bin" / "python"


def venv_ready(venv: Path) -> bool:
    """Whether ``venv`` was built by this module for the current ``pyproject.toml``."""
    stamp = venv / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()).get("pyproject") == pyproject_hash()


def project_copy(dest: Path) -> Path:
    """Copies what ``pip install .`` packages (``pyproject.toml``, the README, the package folders) to ``dest``.

    Installing from the copy keeps setuptools' ``build/`` and ``*.egg-info`` out of the checkout.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for package in PACKAGES:
        if (REPO / package).is_dir():
            shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def ensure_venv(kind: str, venv: Path, timeout_s: float) -> dict[str, Any]:
    """Builds ``venv`` (or reuses it and reinstalls only this project).

    Returns:
        What was done and how long it took.

    Raises:
        FootprintError: If ``python -m venv`` or ``pip`` fails.
    """
    start = time.perf_counter()
    py = str(venv_python(venv))
    with tempfile.TemporaryDirectory() as tmp:
        src = project_copy(Path(tmp) / "src")
        if venv_ready(venv):
            _run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", "."], src, timeout_s)
            return {"action": "reused (project reinstalled)", "s": time.perf_counter() - start}
        if venv.exists():
            shutil.rmtree(venv)
        logger.info("building the %s venv in %s (minutes)", kind, venv)
        _run([sys.executable, "-m", "venv", str(venv)], src, timeout_s)
        commands = []
        for args in INSTALLS[kind]:
            _run([py, "-m", "pip", "install", "-q", *args], src, timeout_s)
            commands.append("pip install " + " ".join(args))
    (venv / STAMP).write_text(json.dumps({"pyproject": pyproject_hash(), "commands": commands}))
    return {"action": "built", "commands": commands, "s": time.perf_counter() - start}


def site_packages(venv: Path) -> Path:
    """The venv's ``site-packages`` folder.

    Raises:
        FootprintError: If there is not exactly one.
    """
    found = list(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise FootprintError(f"{venv}: expected one lib/python*/site-packages, found {found}")
    return found[0]


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path`` (symlinks not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def installed_size(venv: Path, top: int = 8) -> dict[str, Any]:
    """Size of ``site-packages``, its distribution count and largest top-level entries."""
    sp = site_packages(venv)
    entries = {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in sp.iterdir()}
    largest = sorted(entries.items(), key=lambda kv: -kv[1])[:top]
    return {
        "site_packages_bytes": sum(entries.values()),
        "distributions": sum(1 for p in sp.iterdir() if p.name.endswith(".dist-info")),
        "largest": [{"name": n, "bytes": b} for n, b in largest],
    }


def importtime_top_level_ms(stderr: str, package: str) -> float:
    """Cumulative time of the top-level ``package`` imports in ``python -X importtime`` output, in ms.

    Lines look like ``import time:       123 |       4567 | package`` with nested imports indented in the last
    column. The import statement's own entries are the unindented ones named ``package`` or ``package.*`` (what the
    interpreter imports at start-up, ``site``, ``encodings``, ..., is left out); everything the module pulls in is
    nested under them.
    """
    total_us = 0
    for line in stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # not an entry, or the header line
        name = fields[2]
        top_level = name.startswith(" ") and not name.startswith("  ")
        if top_level and (name.strip() == package or name.strip().startswith(package + ".")):
            total_us += int(fields[1])
    return total_us / 1e3


def time_import(venv: Path, module: str, runs: int, timeout_s: float) -> dict[str, Any]:
    """Import time of ``module`` in fresh interpreters of ``venv`` (one untimed run first).

    Returns:
        Wall-time and ``-X importtime`` summaries and which heavy packages were loaded.
    """
    py = str(venv_python(venv))
    probe = _PROBE.format(module=module, heavy=HEAVY)
    walls, cumulative = [], []
    loaded: dict[str, bool] = {}
    modules = 0
    with tempfile.TemporaryDirectory() as cwd:  # outside the repository: the installed copy is imported
        for i in range(runs + 1):
            out = json.loads(_run([py, "-c", probe], Path(cwd), timeout_s).stdout)
            timed = _run([py, "-X", "importtime", "-c", f"import {module}"], Path(cwd), timeout_s)
            if i == 0:
                continue
            walls.append(out["wall_ms"])
            cumulative.append(importtime_top_level_ms(timed.stderr, module.split(".")[0]))
            loaded, modules = out["loaded"], out["modules"]
    return {"module": module, "wall": summarize(walls, "_ms"), "importtime_top_level": summarize(cumulative, "_ms"),
            "loaded": loaded, "modules": modules}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Builds or reuses each venv and measures it.

    Returns:
        The report (``status`` ``skipped`` with ``--reuse-only`` and a venv missing).
    """
    report = report_header("footprint", command, preset=None, backend="onnxruntime,pytorch", precision=None,
                           threads=None, random_weights=False)
    report["installs"] = {k: ["pip install " + " ".join(a) for a in v] for k, v in INSTALLS.items()}
    kinds = [k for k in args.kinds.split(",") if k]
    missing = [k for k in kinds if not venv_ready(args.venvs / k)]
    if args.reuse_only and missing:
        report["status"] = "skipped"
        report["reason"] = f"--reuse-only and no venv for {missing} under {args.venvs}"
        return report
    report["status"] = "measured"
    report["venvs"] = {}
    for kind in kinds:
        venv = args.venvs / kind
        setup = ensure_venv(kind, venv, args.install_timeout)
        entry: dict[str, Any] = {"path": str(venv), "setup": setup, **installed_size(venv), "imports": {}}
        entry["python"] = _run([str(venv_python(venv)), "-c", "import platform; print(platform.python_version())"],
                               REPO, 60).stdout.strip()
        for module in MODULES[kind]:
            entry["imports"][module] = time_import(venv, module, args.runs, 300)
            logger.info("%s: import %s p50 %.0f ms, loaded %s", kind, module,
                        entry["imports"][module]["wall"]["p50_ms"], entry["imports"][module]["loaded"])
        report["venvs"][kind] = entry
    return report


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per venv and module."""
    rows = []
    for kind, v in report.get("venvs", {}).items():
        for module, imp in v["imports"].items():
            heavy = ", ".join(m for m, on in imp["loaded"].items() if on) or "none"
            rows.append([kind, f"{v['site_packages_bytes'] / 2**20:.0f}", str(v["distributions"]), f"`{module}`",
                         f"{imp['wall']['p50_ms']:.0f} / {imp['wall']['p95_ms']:.0f}",
                         f"{imp['importtime_top_level']['p50_ms']:.0f}", heavy])
    return rows


TABLE_HEADER = ["install", "site-packages MiB", "distributions", "import", "import wall p50 / p95 ms",
                "-X importtime cumulative p50 ms", "heavy packages loaded"]


def to_markdown(report: dict[str, Any]) -> str:
    """The footprint table."""
    head = "### Runtime footprint: runtime-only vs full install"
    if report.get("status") != "measured":
        return f"{head}\n\nNot measured: {report.get('reason')}.\n"
    runs = next(iter(next(iter(report["venvs"].values()))["imports"].values()))["wall"]["n"]
    installs = "; ".join(f"{k}: `{' && '.join(v)}`" for k, v in report["installs"].items())
    return "\n".join([
        head, "", f"Machine: {machine_line(report)}", "", markdown_table(TABLE_HEADER, table_rows(report)), "",
        f"Installs: {installs}. Each import in {runs} fresh interpreters after one untimed run.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venvs", type=Path, default=REPO / "artifacts" / "venvs", help="where the venvs live")
    parser.add_argument("--kinds", default="runtime,full", help="comma-separated subset of runtime,full")
    parser.add_argument("--runs", type=int, default=5, help="timed imports per module")
    parser.add_argument("--reuse-only", action="store_true", help="skip when a venv does not exist yet")
    parser.add_argument("--install-timeout", type=float, default=900.0, help="seconds per pip command")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if bad := [k for k in args.kinds.split(",") if k and k not in INSTALLS]:
        parser.error(f"--kinds: unknown {bad}; allowed {','.join(INSTALLS)}")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    args.venvs = args.venvs.resolve()
    report = run(args, command_line("benchmarks.footprint", argv))
    write_json(args.out / "footprint.json", report)
    text = to_markdown(report)
    (args.out / "footprint.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Golden conformance check: run every stage of the reference on a golden directory and compare.

``python -m mobile_videogpt.conformance GOLDEN_DIR [--json OUT]``

A golden directory (format of ``../shared/golden/mvgpt_tiny_a``) holds ``checkpoint/``, ``clip/``, ``frames.npy``,
``prompt.json``, ``expected.npz`` and a README whose "Tolerances" table gives the per-tensor max-abs thresholds.
The checkpoint goes through the same strict loader users get. The tool prints one row per expected tensor
(max-abs-error, threshold, verdict), requires integer outputs (selected frames, greedy ids) to match exactly, and exits
non-zero when anything is outside its tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mobile_videogpt.checkpoint import load_model

logger = logging.getLogger(__name__)

# Used only when a golden README has no tolerance table; the values are the mvgpt_tiny_a README's.
DEFAULT_TOLERANCES: dict[str, float] = {
    "video_pixels": 1e-6,
    "context_pixels": 1e-6,
    "clip_patch_features": 1e-4,
    "frame_scores": 2e-3,
    "videomamba_tokens": 1e-4,
    "videomamba_cls": 1e-4,
    "video_pooled": 1e-4,
    "video_projected": 1e-5,
    "image_projected": 1e-5,
    "visual_tokens": 1e-5,
    "inputs_embeds": 1e-5,
    "last_logits": 5e-4,
    "step_logits": 5e-4,
}
EXACT_KEYS = ("selected_frames", "greedy_ids")
_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|([^|]*)\|([^|]*)\|\s*([0-9.eE+-]+)\s*\|")


@dataclass
class Row:
    """One compared tensor.

    Attributes:
        name: Tensor name in expected.npz.
        shape: Expected shape.
        max_abs_error: Max |ours - expected| (or mismatch count for exact keys).
        tolerance: Threshold (0 for exact keys).
        passed: Verdict.
    """

    name: str
    shape: list[int]
    max_abs_error: float
    tolerance: float
    passed: bool


def read_tolerances(readme: Path) -> dict[str, float]:
    """Parses the README's tolerance table (``| `name` | max | observed | threshold | note |``).

    Args:
        readme: Golden README.md.

    Returns:
        Name -> threshold; the built-in table if the README has none (logged).
    """
    tolerances: dict[str, float] = {}
    if readme.is_file():
        for line in readme.read_text().splitlines():
            if m := _ROW.match(line.strip()):
                tolerances[m.group(1)] = float(m.group(4))
    if not tolerances:
        logger.warning("no tolerance table in %s; using the built-in mvgpt_tiny_a thresholds", readme)
        return dict(DEFAULT_TOLERANCES)
    if "videomamba_tokens" in tolerances:
        tolerances.setdefault("videomamba_cls", tolerances["videomamba_tokens"])  # README: "also videomamba_cls"
    return tolerances


def run_stages(golden: Path, scan_impl: str = "ref") -> dict[str, np.ndarray]:
    """Runs every stage of the reference on a golden directory's inputs.

    Args:
        golden: Golden directory.
        scan_impl: Selective-scan implementation to check.

    Returns:
        Our value for every tensor name of expected.npz.
    """
    model = load_model(golden / "checkpoint", golden / "clip", scan_impl=scan_impl)
    frames = np.load(golden / "frames.npy")
    prompt = json.loads((golden / "prompt.json").read_text())
    video_px, context_px = model.preprocess(frames)
    vis = model.encode_clip(video_px, context_px)
    embeds = model.build_inputs_embeds(prompt["prefix_ids"], vis.visual_tokens, prompt["suffix_ids"])
    last_logits, _ = model.decode_step(embeds[None])
    ids, step_logits = model.generate(embeds, int(prompt["max_new_tokens"]), [int(prompt["eos_token_id"])])
    out = {
        "video_pixels": video_px,
        "context_pixels": context_px,
        "clip_patch_features": vis.clip_features,
        "frame_scores": vis.frame_scores,
        "selected_frames": vis.selected_frames,
        "videomamba_tokens": vis.videomamba_tokens,
        "videomamba_cls": vis.videomamba_cls,
        "video_pooled": vis.video_pooled,
        "video_projected": vis.video_projected,
        "image_projected": vis.image_projected,
        "visual_tokens": vis.visual_tokens,
        "inputs_embeds": embeds,
        "last_logits": last_logits[0],
        "greedy_ids": torch.tensor(ids),
        "step_logits": step_logits,
    }
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def compare(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray], tolerances: dict[str, float]) -> list[Row]:
    """Compares every expected tensor.

    Args:
        ours: Our outputs.
        expected: Golden outputs.
        tolerances: Name -> max-abs threshold.

    Returns:
        One row per expected tensor.

    Raises:
        KeyError: If a golden tensor has no counterpart or no tolerance (nothing is skipped silently).
    """
    rows = []
    for name in expected:
        exp = expected[name]
        if name not in ours:
            raise KeyError(f"golden tensor {name!r} is not produced by the reference")
        got = ours[name]
        if got.shape != exp.shape:
            rows.append(Row(name, list(exp.shape), float("inf"), 0.0, False))
            continue
        if name in EXACT_KEYS:
            mismatches = int(np.sum(got != exp))
            rows.append(Row(name, list(exp.shape), float(mismatches), 0.0, mismatches == 0))
            continue
        if name not in tolerances:
            raise KeyError(f"no tolerance for golden tensor {name!r}")
        err = float(np.max(np.abs(got.astype(np.float64) - exp.astype(np.float64)))) if exp.size else 0.0
        rows.append(Row(name, list(exp.shape), err, tolerances[name], bool(err <= tolerances[name])))
    return rows


def format_table(rows: list[Row]) -> str:
    """Renders the rows as a Markdown table.

    Args:
        rows: Compared tensors.

    Returns:
        The table text.
    """
    lines = ["| tensor | shape | max abs error | tolerance | result |", "|---|---|---|---|---|"]
    for r in rows:
        tol = "exact" if r.name in EXACT_KEYS else f"{r.tolerance:.1e}"
        err = f"{int(r.max_abs_error)} mismatches" if r.name in EXACT_KEYS else f"{r.max_abs_error:.3e}"
        lines.append(f"| {r.name} | {r.shape} | {err} | {tol} | {'pass' if r.passed else 'FAIL'} |")
    return "\n".join(lines)


def check_golden(golden: Path, scan_impl: str = "ref") -> list[Row]:
    """Runs and compares a golden directory.

    Args:
        golden: Golden directory.
        scan_impl: Selective-scan implementation.

    Returns:
        The compared rows.
    """
    golden = Path(golden)
    if not (golden / "expected.npz").is_file():
        raise FileNotFoundError(f"{golden} is not a golden directory (no expected.npz)")
    expected = dict(np.load(golden / "expected.npz"))
    return compare(run_stages(golden, scan_impl), expected, read_tolerances(golden / "README.md"))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments.

    Returns:
        0 when every tensor is within tolerance, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description="Check the reference model against golden conformance vectors.")
    parser.add_argument("golden", type=Path)
    parser.add_argument("--scan-impl", default="ref", help="selective-scan implementation to check")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = check_golden(args.golden, args.scan_impl)
    print(format_table(rows))
    failed = [r.name for r in rows if not r.passed]
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(f"conformance: {len(rows) - len(failed)} passed, {len(failed)} failed" + (f" ({failed})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mobile_videogpt.inspect DIR...``: what checkpoint directories hold, and whether they will load.

Each DIR may be a Mobile-VideoGPT model directory, a CLIP directory, a Hugging Face cache path to either
(``models--org--name`` or ``.../snapshots/<rev>``), or a directory with ``model/`` and ``clip/`` inside (what
``mobile_videogpt.synthetic`` writes). The report gives, per directory: the layout and weight files, the stored
dtypes, tensors and parameters per component, the geometry and vocabulary (embedding rows, tokenizer entries), the
action tokens, the generation config (what greedy decoding applies and what it ignores), the vision-tower check
(``image_mm_vision_tower`` against the CLIP given), the random-weights marker, and the verdict.

The verdict runs the loader's strict checks (names, shapes, float dtypes, configs, shard index) on the file headers
against a model built on the ``meta`` device, so nothing is loaded into memory (a ``pytorch_model.bin`` has no
header and is memory-mapped to list it). A model directory given with a CLIP directory is checked as a pair.

Exit codes: 0 every directory will load; 2 at least one will not (the reasons are printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from engine_format import FormatError
from engine_format.generation import CheckpointGeneration
from engine_format.vocab import IMAGE_TOKEN, load_action_tokens, plan_action_token_ids
from mobile_videogpt.checkpoint import DirectoryCheck, check_clip_dir, check_model_dir
from mobile_videogpt.checkpoint_files import CheckpointError, TensorInfo, hf_cache_repo_id, resolve_checkpoint_dir
from mobile_videogpt.synthetic import SYNTHETIC_MARKER

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_LOADABLE = 2

_MODEL_COMPONENTS = (
    ("embed_tokens", re.compile(r"^model\.embed_tokens\.")),
    ("decoder", re.compile(r"^model\.layers\.")),
    ("final norm", re.compile(r"^model\.norm\.")),
    ("lm_head", re.compile(r"^lm_head\.")),
    ("VideoMamba", re.compile(r"^model\.vision_tower\.")),
    ("video projector (ETP)", re.compile(r"^model\.mm_projector\.")),
    ("image projector (ETP)", re.compile(r"^model\.image_mm_projector\.")),
)
_CLIP_COMPONENTS = (
    ("vision embeddings", re.compile(r"^vision_model\.embeddings\.")),
    ("vision encoder", re.compile(r"^vision_model\.encoder\.")),
    ("vision layer norms", re.compile(r"^vision_model\.(pre_layrnorm|post_layernorm)\.")),
    ("text tower, unused", re.compile(r"^text_model\.")),
    ("projections, unused", re.compile(r"^(text_projection|visual_projection)\.|^logit_scale$")),
)
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _dtypes(infos: Iterable[TensorInfo]) -> str:
    counts = Counter(i.dtype for i in infos)
    return ", ".join(f"{d} x {n}" for d, n in sorted(counts.items()))


def component_table(tensors: dict[str, TensorInfo], components: tuple[tuple[str, re.Pattern[str]], ...]) -> list[str]:
    """One line per component: tensors, parameters, stored dtypes (and layer count for stacked parts)."""
    groups: dict[str, list[TensorInfo]] = {name: [] for name, _ in components}
    other: list[TensorInfo] = []
    for info in tensors.values():
        for name, pattern in components:
            if pattern.search(info.name):
                groups[name].append(info)
                break
        else:
            other.append(info)
    lines = [f"    {'component':<32}{'tensors':>8}{'params':>12}  dtypes"]
    for name, infos in [*groups.items(), ("other", other)]:
        if not infos:
            continue
        layers = {m.group(1) for i in infos if (m := _LAYER.search(i.name))}
        label = f"{name} ({len(layers)} layer{'s' if len(layers) > 1 else ''})" if layers else name
        lines.append(f"    {label:<32}{len(infos):>8}{_params(sum(i.numel for i in infos)):>12}  {_dtypes(infos)}")
    return lines


def _tokenizer_line(directory: Path, rows: int | None) -> str:
    path = directory / "tokenizer.json"
    if not path.is_file():
        return "none in this directory (export and the runtime need tokenizer.json)"
    from tokenizers import Tokenizer  # only when there is one to read

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises its own untyped exception
        return f"tokenizer.json unreadable ({str(exc).splitlines()[0][:120]})"
    size = tok.get_vocab_size(with_added_tokens=True)
    image = tok.token_to_id(IMAGE_TOKEN)
    fits = "" if rows is None or size <= rows else f"  (MORE entries than the {rows} embedding rows)"
    image_text = f"{IMAGE_TOKEN} = {image}" if image is not None else f"{IMAGE_TOKEN} not in it (added at export)"
    return f"tokenizer.json with {size} entries, {image_text}{fits}"


def _generation_lines(record: CheckpointGeneration) -> list[str]:
    if record.source is None:
        return ["none (greedy; stop ids from config.json's eos_token_id)"]
    unset = "unset"
    lines = [
        f"{record.source}: eos {list(record.eos_token_ids) if record.eos_token_ids else unset}, "
        f"repetition_penalty {record.repetition_penalty if record.repetition_penalty is not None else unset}, "
        f"max_new_tokens {record.max_new_tokens if record.max_new_tokens is not None else unset}"
    ]
    return lines + record.notes()


def _header(check: DirectoryCheck, given: Path, title: str) -> list[str]:
    lines = [f"{title}: {given}"]
    if check.directory != given:
        repo = hf_cache_repo_id(check.directory)
        lines.append(f"  resolved to      {check.directory}" + (f"  (HF cache: {repo})" if repo else ""))
    if check.layout is not None:
        layout = check.layout
        index = f", index {layout.index.name}" if layout.index else ""
        lines.append(f"  layout           {layout.kind}: {len(layout.files)} file(s), {_mb(layout.total_bytes)}{index}")
    if check.tensors:
        n = sum(i.numel for i in check.tensors.values())
        lines.append(f"  stored dtypes    {_dtypes(check.tensors.values())}  ({len(check.tensors)} tensors, "
                     f"{_params(n)} params)")
    return lines


def _marker_line(directory: Path) -> str | None:
    marker = directory / SYNTHETIC_MARKER
    if not marker.is_file():
        return None
    try:
        preset = json.loads(marker.read_text()).get("preset")
    except (OSError, json.JSONDecodeError):
        preset = "?"
    return f"  RANDOM WEIGHTS   synthetic checkpoint (preset {preset}): every output is meaningless"


def _verdict(check: DirectoryCheck) -> list[str]:
    if check.loadable:
        return ["  verdict          LOADABLE"]
    return ["  verdict          NOT LOADABLE:"] + [f"    - {p}" for p in check.problems]


def model_report(check: DirectoryCheck, given: Path) -> list[str]:
    """The readable report of a model directory check."""
    lines = _header(check, given, "Mobile-VideoGPT model directory")
    raw, tensors = check.raw_config, check.tensors
    if tensors:
        lines += ["  tensors"] + component_table(tensors, _MODEL_COMPONENTS)
        if "lm_head.weight" not in tensors:
            lines.append("    (no lm_head.weight: tied to embed_tokens, as HF saves tied weights)")
    rows = tensors["model.embed_tokens.weight"].shape[0] if "model.embed_tokens.weight" in tensors else None
    if raw:
        lines.append(
            f"  geometry         hidden {raw.get('hidden_size')}, {raw.get('num_hidden_layers')} layers, "
            f"{raw.get('num_attention_heads')} heads / {raw.get('num_key_value_heads')} KV heads, "
            f"vocab_size {raw.get('vocab_size')} (embedding rows {rows if rows is not None else '?'})"
        )
    lines.append(f"  tokenizer        {_tokenizer_line(check.directory, rows)}")
    try:
        actions = load_action_tokens(check.directory)
    except (FormatError, ValueError) as exc:
        actions, text = None, f"action_tokens.json invalid: {exc}"
    else:
        text = ""
    if actions is not None:
        text = f"recorded: {actions.as_dict()}"
    elif not text and rows is not None:
        planned = plan_action_token_ids(rows)
        text = f"not in the checkpoint; export appends {planned.as_dict()} (mean-initialised, tied rows)"
    lines.append(f"  action tokens    {text or '?'}")
    if check.generation is not None:
        gen = _generation_lines(check.generation)
        lines.append(f"  generation       {gen[0]}")
        lines += [f"                   {g}" for g in gen[1:]]
    if check.tower is not None:
        tower = check.tower
        verdict = {True: "a ViT-B/16 CLIP at 224 px: compatible", None: "not a recognised name"}[tower.compatible] \
            if tower.compatible is not False else "incompatible"
        named = f"{tower.named!r}: {verdict}" if tower.named else "not named"
        lines.append(f"  vision tower     image_mm_vision_tower {named}")
        if tower.identity:
            lines.append(f"                   CLIP directory given: {tower.identity}")
    if raw.get("mm_vision_tower"):
        lines.append(f"  VideoMamba       mm_vision_tower {raw['mm_vision_tower']!r} (weights: this checkpoint's "
                     "model.vision_tower.* tensors)")
    lines += [f"  note             {n}" for n in check.notes]
    if check.tower:
        lines += [f"  warning          {w}" for w in check.tower.warnings]
    marker = _marker_line(check.directory)
    return lines + ([marker] if marker else []) + _verdict(check)


def clip_report(check: DirectoryCheck, given: Path) -> list[str]:
    """The readable report of a CLIP directory check."""
    lines = _header(check, given, "CLIP directory")
    raw = check.raw_config
    if raw:
        full = raw.get("model_type") == "clip" or "vision_config" in raw
        vision = {**(raw.get("vision_config") or {}), **(raw.get("vision_config_dict") or {})} if full else raw
        lines.append(
            f"  config           {'full CLIPModel (text + vision)' if full else 'CLIPVisionModel'}: image "
            f"{vision.get('image_size')}, patch {vision.get('patch_size')}, width {vision.get('hidden_size')}, "
            f"{vision.get('num_hidden_layers')} layers"
        )
    if check.tensors:
        lines += ["  tensors"] + component_table(check.tensors, _CLIP_COMPONENTS)
    lines += [f"  note             {n}" for n in check.notes]
    preprocessor = check.directory / "preprocessor_config.json"
    lines.append(f"  preprocessing    {'preprocessor_config.json' if preprocessor.is_file() else 'MISSING preprocessor_config.json'}")
    marker = _marker_line(check.directory)
    return lines + ([marker] if marker else []) + _verdict(check)


def classify(path: Path) -> list[tuple[str, Path]]:
    """What a DIR argument holds: ``[("model" | "clip" | "unknown", directory)]`` (two entries for model/ + clip/)."""
    if (path / "model").is_dir() and (path / "clip").is_dir() and not (path / "config.json").exists():
        return [*classify(path / "model"), *classify(path / "clip")]
    try:
        directory = resolve_checkpoint_dir(path)
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (CheckpointError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        return [("unknown", path)]
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type in ("clip", "clip_vision_model") or (isinstance(raw, dict) and "vision_config" in raw):
        return [("clip", path)]
    return [("model", path)]


def _unknown_report(path: Path) -> tuple[list[str], bool]:
    try:
        directory = resolve_checkpoint_dir(path)
    except CheckpointError as exc:
        return [f"{path}", "  verdict          NOT LOADABLE:", f"    - {exc}"], False
    config = directory / "config.json"
    reason = f"{config} does not exist" if not config.exists() else f"{config} is not a valid JSON object"
    return [f"{path}", "  verdict          NOT LOADABLE:", f"    - {reason}"], False


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: Arguments (defaults to sys.argv).

    Returns:
        0 when every directory will load, 2 otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="python -m mobile_videogpt.inspect", description=__doc__.split("\n\n")[0].split(": ", 1)[1]
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="model, CLIP or HF cache directories")
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG shows the loader's lines)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    entries = [entry for path in args.dirs for entry in classify(path)]
    clip_checks = {path: check_clip_dir(path) for kind, path in entries if kind == "clip"}
    pair = next(iter(clip_checks.values())) if len(clip_checks) == 1 else None
    ok = True
    blocks: list[list[str]] = []
    for kind, path in entries:
        if kind == "unknown":
            block, loadable = _unknown_report(path)
        elif kind == "clip":
            check = clip_checks[path]
            block, loadable = clip_report(check, path), check.loadable
        else:
            check = check_model_dir(path, pair)
            block = model_report(check, path)
            loadable = check.loadable
        ok &= loadable
        blocks.append(block)
    print("\n\n".join("\n".join(b) for b in blocks))
    return EXIT_OK if ok else EXIT_NOT_LOADABLE


if __name__ == "__main__":
    sys.exit(main())

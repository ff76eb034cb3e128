"""Finding and reading the weight files of a checkpoint directory as published, without building a model.

Accepted layouts (first match wins, in this order):

* ``model.safetensors.index.json`` + the shards it names (HF sharded safetensors);
* ``model.safetensors``;
* ``pytorch_model.bin.index.json`` + its shards, or ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``,
  so a pickle that is not plain tensors is refused, never executed).

A Hugging Face cache path is resolved first (:func:`resolve_checkpoint_dir`): ``models--org--name/snapshots/<rev>/``
is used as it is, and the ``models--org--name`` root resolves ``refs/main``.

Every failure is a :class:`CheckpointError` whose message is one line naming the file: a missing file, a corrupt or
truncated safetensors header, a shard index naming unknown files or tensors, a ``.bin`` that is not a weights-only
pickle. Stored dtypes are reported as safetensors names (``F16``, ``BF16``, ``F32``, ``I32`` ...) for both formats.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
"""Stored dtypes accepted where the model expects floats (converted exactly, or rounded from F64, to the parameter)."""

_TORCH_DTYPE_NAMES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.qint8: "QINT8",
    torch.quint8: "QUINT8",
    torch.qint32: "QINT32",
}
_HF_CACHE_REPO = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>.+)$")


class CheckpointError(RuntimeError):
    """A checkpoint directory does not match the model: missing, unexpected or mis-shaped tensors, or bad files."""


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.bfloat16`` -> ``BF16``)."""
    return _TORCH_DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened (torch's loader errors are paragraphs)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------- directories
def hf_cache_repo_id(path: Path) -> str | None:
    """``org/name`` when ``path`` lies in a Hugging Face cache repository folder (``models--org--name``), else None."""
    for part in (Path(path), *Path(path).parents):
        match = _HF_CACHE_REPO.match(part.name)
        if match:
            return f"{match['org']}/{match['name']}"
    return None


def resolve_checkpoint_dir(path: Path | str) -> Path:
    """The directory that holds the files: ``path`` itself, or the snapshot an HF cache repository root points to.

    Args:
        path: A checkpoint directory, an HF cache snapshot (``.../snapshots/<rev>``) or the repository root
            (``models--org--name``, resolved through ``refs/main``).

    Raises:
        CheckpointError: If the path does not exist, is not a directory, or a cache root cannot be resolved.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; give the checkpoint directory")
    snapshots = path / "snapshots"
    if not snapshots.is_dir() or (path / "config.json").exists():
        return path
    ref = path / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        target = snapshots / revision
        if not target.is_dir():
            raise CheckpointError(f"{ref} names revision {revision!r}, but {target} does not exist")
        logger.info("HF cache %s: refs/main -> snapshot %s", path, revision)
        return target
    found = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        logger.info("HF cache %s has no refs/main; using its only snapshot %s", path, found[0])
        return snapshots / found[0]
    raise CheckpointError(
        f"{path} is an HF cache repository without refs/main and with {len(found)} snapshots {found}: "
        "give the snapshot directory (.../snapshots/<revision>)"
    )


# ---------------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor, as its file describes it.

    Attributes:
        name: Tensor name.
        dtype: Stored dtype, safetensors spelling (``F16``, ``BF16``, ``F32``, ``I64`` ...).
        shape: Stored shape.
        file: File name (inside the directory) that holds it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str

    @property
    def numel(self) -> int:
        """Element count."""
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class WeightLayout:
    """The weight files of one directory.

    Attributes:
        directory: The directory.
        kind: ``safetensors``, ``safetensors (sharded)``, ``pytorch_model.bin`` or ``pytorch_model.bin (sharded)``.
        files: Weight files, in load order.
        index: The shard index file, or None.
        weight_map: The index's tensor -> file map (empty without an index).
    """

    directory: Path
    kind: str
    files: tuple[Path, ...]
    index: Path | None = None
    weight_map: Mapping[str, str] | None = None

    @property
    def total_bytes(self) -> int:
        """Bytes of the weight files."""
        return sum(p.stat().st_size for p in self.files)


def _read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index, validated."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index} is not valid JSON ({_first_line(exc)})") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no 'weight_map' object mapping tensor names to shard files")
    bad = sorted({str(f) for f in weight_map.values() if not isinstance(f, str) or Path(f).name != f})
    if bad:
        raise CheckpointError(f"{index} maps tensors to file names that are not plain shard names: {bad}")
    return {str(k): str(v) for k, v in weight_map.items()}


def find_weight_files(directory: Path | str) -> WeightLayout:
    """Finds a directory's weight files (see the module docstring for the order).

    Raises:
        CheckpointError: If there are none, or a shard index is invalid or names a shard that does not exist.
    """
    directory = Path(directory)
    for index_name, single, kind in (
        (SAFETENSORS_INDEX, SAFETENSORS_SINGLE, "safetensors"),
        (BIN_INDEX, BIN_SINGLE, "pytorch_model.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            weight_map = _read_index(index)
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard(s) that do not exist: {missing}")
            return WeightLayout(directory, f"{kind} (sharded)", tuple(directory / s for s in shards), index, weight_map)
        if (directory / single).is_file():
            return WeightLayout(directory, kind, (directory / single,))
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "directory does not exist"
    raise CheckpointError(
        f"no {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, {BIN_SINGLE} or {BIN_INDEX} in {directory} (found: {found})"
    )


# ---------------------------------------------------------------------------------------------------- reading
def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model*.bin`` state dict, weights-only (memory-mapped when it is a zip archive)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a weights-only PyTorch checkpoint (torch.load(weights_only=True) refused it: "
            f"{_first_line(exc, 120)})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({_first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict of tensors")
    not_tensors = sorted(str(k) for k, v in data.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a flat state dict: entries {not_tensors[:5]} are not tensors"
            + (f" (and {len(not_tensors) - 5} more)" if len(not_tensors) > 5 else "")
        )
    return data


def _check_against_index(layout: WeightLayout, found: Mapping[str, str]) -> None:
    """Every tensor the index names is in the shard it names, and every stored tensor is in the index."""
    if layout.weight_map is None:
        return
    wrong = sorted(k for k, f in layout.weight_map.items() if found.get(k) != f)
    unlisted = sorted(k for k in found if k not in layout.weight_map)
    problems = []
    if wrong:
        problems.append(f"tensor(s) not in the shard it names: {wrong[:5]}" + (f" (+{len(wrong) - 5})" if len(wrong) > 5 else ""))
    if unlisted:
        problems.append(f"stored tensor(s) it does not list: {unlisted[:5]}" + (f" (+{len(unlisted) - 5})" if len(unlisted) > 5 else ""))
    if problems:
        raise CheckpointError(f"{layout.index}: " + "; ".join(problems))


def _add(found: dict[str, str], key: str, path: Path) -> None:
    if key in found:
        raise CheckpointError(f"tensor {key!r} appears in more than one shard ({found[key]} and {path.name})")
    found[key] = path.name


T = TypeVar("T")


def _collect(layout: WeightLayout, from_safetensors: Callable[[Any, str, str], T],
             from_bin: Callable[[torch.Tensor, str, str], T]) -> dict[str, T]:
    """One value per stored tensor of the layout's files, every name checked once against duplicates and the index.

    Args:
        layout: The weight files.
        from_safetensors: ``(open safetensors file, key, file name) -> value`` (from the header, or the data).
        from_bin: ``(tensor, key, file name) -> value`` for ``pytorch_model.bin`` files (loaded memory-mapped,
            weights-only).

    Raises:
        CheckpointError: Naming the file, for unreadable files, duplicates and index mismatches.
    """
    values: dict[str, T] = {}
    found: dict[str, str] = {}
    for path in layout.files:
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        _add(found, key, path)
                        values[key] = from_safetensors(f, key, path.name)
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from exc
        else:
            for key, tensor in _load_bin(path).items():
                _add(found, key, path)
                values[key] = from_bin(tensor, key, path.name)
    _check_against_index(layout, found)
    return values


def tensor_infos(layout: WeightLayout) -> dict[str, TensorInfo]:
    """Names, stored dtypes and shapes of every tensor, from the safetensors headers (no tensor data is read).

    ``pytorch_model.bin`` files have no header: they are loaded (memory-mapped, weights-only) to list them.

    Raises:
        CheckpointError: Naming the file, for unreadable files, duplicates and index mismatches.
    """
    def header(f: Any, key: str, name: str) -> TensorInfo:
        piece = f.get_slice(key)
        return TensorInfo(key, str(piece.get_dtype()), tuple(piece.get_shape()), name)

    return _collect(layout, header, lambda t, key, name: TensorInfo(key, dtype_name(t.dtype), tuple(t.shape), name))


def read_tensors(layout: WeightLayout) -> dict[str, torch.Tensor]:
    """Every tensor of the layout's files, in its stored dtype.

    Raises:
        CheckpointError: Naming the file, for unreadable files, duplicates and index mismatches.
    """
    return _collect(layout, lambda f, key, name: f.get_tensor(key), lambda t, key, name: t)

"""``manifest.json``: what an engines directory holds and everything the runtime needs without the checkpoint.

Written by ``python -m export`` into ``engines/<name>/``; read by the ONNX Runtime and TensorRT backends and the
parity harness through :class:`Manifest`. Keys (``FORMAT_VERSION`` 1)::

    format_version, name, created (UTC ISO time), random_weights
    source        model_dir, clip_dir (as given at export), preset (synthetic preset or null), fingerprint
                  (sha256 over config files, safetensors headers and sizes), files
    libraries     python, torch, transformers, onnx, onnxruntime, numpy, (tensorrt)
    export        opset, exporter ("torch.onnx legacy TorchScript"), scan_impl, attention ("eager"), fp16_policy
    model         hidden_size, vocab_size (embedding rows incl. action tokens), tokenizer_size, num_layers,
                  num_attention_heads, num_key_value_heads, head_dim, rope_theta, rms_norm_eps,
                  max_position_embeddings, num_frames, chunk_size, top_k, largest, image_tokens_per_frame,
                  video_tokens_per_chunk, num_visual_tokens, eos_token_ids, image_token_id
    action_tokens {"<next>": id, "<feedback>": id, "<correct>": id}
    streaming_prompt_ids  StreamingPromptIds.as_dict() of the extended tokenizer
    tokenizer_dir "tokenizer" (tokenizer files + action_tokens.json, copied so the runtime needs no checkpoint)
    precisions    ["fp32", "fp16"]
    graphs        {precision: {graph: {file, data_file, bytes, seconds, nodes, opset, inputs, outputs,
                  dynamic_axes, [fp16], [embedding_table]}}}
    tensorrt      {precision: {graph: {file, sidecar, profiles, ...}}}   (only with --tensorrt)

This module does not import onnx or the exporter, so the runtime can read manifests cheaply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobile_videogpt.vocab import ActionTokenIds

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
_FINGERPRINT_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    "action_tokens.json",
)


class ManifestError(RuntimeError):
    """A manifest is missing, malformed, or does not describe what is asked of it."""


def _safetensors_header(path: Path) -> bytes:
    """The 8-byte length prefix and JSON header of a safetensors file (names, dtypes, shapes, offsets)."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ManifestError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        return prefix + f.read(length)


def checkpoint_fingerprint(model_dir: Path, clip_dir: Path) -> dict[str, Any]:
    """Identifies a checkpoint pair cheaply: sha256 over config files, safetensors headers and file sizes.

    Args:
        model_dir: Checkpoint directory.
        clip_dir: CLIP directory.

    Returns:
        ``{"sha256": hex, "files": [{"path", "bytes"}]}`` (paths relative to their directory, prefixed
        ``model/`` or ``clip/``).
    """
    digest = hashlib.sha256()
    files: list[dict[str, Any]] = []
    for label, directory in (("model", Path(model_dir)), ("clip", Path(clip_dir))):
        names = sorted(p.name for p in directory.glob("*.safetensors")) + [
            n for n in _FINGERPRINT_FILES if (directory / n).is_file()
        ]
        for name in names:
            path = directory / name
            size = path.stat().st_size
            content = _safetensors_header(path) if name.endswith(".safetensors") else path.read_bytes()
            digest.update(f"{label}/{name}:{size}:".encode())
            digest.update(content)
            files.append({"path": f"{label}/{name}", "bytes": size})
    return {"sha256": digest.hexdigest(), "files": files}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the exported files (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "tensorrt"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    """Current UTC time, ISO 8601, seconds resolution."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_manifest(root: Path, data: Mapping[str, Any]) -> Path:
    """Writes ``root/manifest.json``.

    Args:
        root: Engines directory.
        data: The manifest.

    Returns:
        The file.
    """
    path = Path(root) / MANIFEST_FILE
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as recorded.

    Attributes:
        name: Tensor name.
        dtype: numpy dtype name.
        shape: Dimensions; str for symbolic ones.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphFile:
    """One exported ONNX graph.

    Attributes:
        name: Graph name.
        precision: "fp32" or "fp16".
        path: Absolute ``.onnx`` path.
        inputs: Inputs in order.
        outputs: Outputs in order.
    """

    name: str
    precision: str
    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class EmbeddingTable:
    """Location of the tied embedding table inside a decoder's external-data file.

    Attributes:
        path: Absolute path of the data file.
        offset: Byte offset of the table.
        length: Byte length.
        dtype: "float32" or "float16".
        shape: ``(V, H)``.
    """

    path: Path
    offset: int
    length: int
    dtype: str
    shape: tuple[int, int]

    def open(self) -> np.memmap:
        """Memory-maps the table read-only.

        Returns:
            ``[V, H]`` array backed by the file (pages are read on access).

        Raises:
            ManifestError: If the file is shorter than the recorded extent or the length does not match the shape.
        """
        itemsize = np.dtype(self.dtype).itemsize
        if self.length != self.shape[0] * self.shape[1] * itemsize:
            raise ManifestError(f"embedding table length {self.length} does not match shape {self.shape} {self.dtype}")
        if not self.path.is_file() or self.path.stat().st_size < self.offset + self.length:
            raise ManifestError(f"{self.path} does not hold the embedding table at [{self.offset}, +{self.length})")
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: missing key {key!r}")
    return data[key]


def _tensor_infos(entries: Any, where: str) -> tuple[TensorInfo, ...]:
    if not isinstance(entries, list):
        raise ManifestError(f"{where}: expected a list of tensors")
    return tuple(
        TensorInfo(
            str(_require(e, "name", where)), str(_require(e, "dtype", where)), tuple(_require(e, "shape", where))
        )
        for e in entries
    )


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json`` plus the directory it lives in.

    Attributes:
        root: Engines directory.
        data: The raw JSON object.
    """

    root: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, root: Path | str) -> Manifest:
        """Reads and validates ``root/manifest.json``.

        Args:
            root: Engines directory.

        Returns:
            The manifest.

        Raises:
            ManifestError: If the file is missing, not JSON, of another format version, or lacks a required key.
        """
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"{path} does not exist (export first: python -m export)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path} must hold a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}")
        for key in ("model", "graphs", "precisions", "action_tokens", "source", "streaming_prompt_ids"):
            _require(data, key, str(path))
        return cls(root.resolve(), data)

    # ------------------------------------------------------------------ model facts
    @property
    def model(self) -> dict[str, Any]:
        """The ``model`` section (geometry)."""
        return self.data["model"]

    @property
    def hidden_size(self) -> int:
        """H."""
        return int(_require(self.model, "hidden_size", "manifest model"))

    @property
    def vocab_size(self) -> int:
        """Embedding rows V (the logits width)."""
        return int(_require(self.model, "vocab_size", "manifest model"))

    @property
    def precisions(self) -> list[str]:
        """Exported precisions."""
        return list(self.data["precisions"])

    @property
    def random_weights(self) -> bool:
        """Whether the source checkpoint is synthetic (outputs are meaningless)."""
        return bool(self.data.get("random_weights", False))

    @property
    def action_token_ids(self) -> ActionTokenIds:
        """The action-token ids."""
        tokens = self.data["action_tokens"]
        try:
            return ActionTokenIds(next=tokens["<next>"], feedback=tokens["<feedback>"], correct=tokens["<correct>"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest action_tokens {tokens!r} are invalid: {exc}") from exc

    @property
    def tokenizer_dir(self) -> Path:
        """Directory of the copied tokenizer files."""
        return self.root / str(self.data.get("tokenizer_dir", TOKENIZER_DIR))

    # ------------------------------------------------------------------ files
    def graph(self, precision: str, name: str) -> GraphFile:
        """One exported graph.

        Args:
            precision: "fp32" or "fp16".
            name: Graph name.

        Returns:
            Its file and I/O.

        Raises:
            ManifestError: If that precision or graph was not exported or its file is missing.
        """
        graphs = self.data["graphs"]
        if precision not in graphs:
            raise ManifestError(f"{self.root}: precision {precision!r} was not exported (have {sorted(graphs)})")
        if name not in graphs[precision]:
            raise ManifestError(
                f"{self.root}: graph {name!r} missing for {precision} (have {sorted(graphs[precision])})"
            )
        entry = graphs[precision][name]
        where = f"{self.root} graphs.{precision}.{name}"
        path = self.root / str(_require(entry, "file", where))
        if not path.is_file():
            raise ManifestError(f"{where}: {path} does not exist")
        return GraphFile(
            name, precision, path, _tensor_infos(entry.get("inputs"), where), _tensor_infos(entry.get("outputs"), where)
        )

    def embedding_table(self, precision: str) -> EmbeddingTable:
        """The tied embedding table stored in that precision's decoder data file.

        Args:
            precision: "fp32" or "fp16".

        Returns:
            Its location.

        Raises:
            ManifestError: If the decoder entry does not record it.
        """
        decoder = self.graph(precision, "decoder")
        entry = self.data["graphs"][precision]["decoder"]
        table = _require(entry, "embedding_table", f"{self.root} graphs.{precision}.decoder")
        return EmbeddingTable(
            path=decoder.path.parent / str(table["file"]),
            offset=int(table["offset"]),
            length=int(table["length"]),
            dtype=str(table["dtype"]),
            shape=(int(table["shape"][0]), int(table["shape"][1])),
        )

    def tensorrt_engines(self, precision: str) -> dict[str, dict[str, Any]]:
        """The TensorRT section for one precision (graph -> entry with absolute ``file``).

        Raises:
            ManifestError: If no TensorRT engines were built for that precision.
        """
        section = self.data.get("tensorrt", {})
        if precision not in section:
            raise ManifestError(
                f"{self.root}: no TensorRT engines for {precision} (build them: python -m export --tensorrt)"
            )
        return {name: {**entry, "file": str(self.root / entry["file"])} for name, entry in section[precision].items()}

"""``manifest.json``: what an engines directory holds and everything the runtime needs without the checkpoint.

Written by ``python -m export`` into ``engines/<name>/``; read by every backend through :meth:`Manifest.load`, which
validates the whole file once into typed records. Keys (:data:`FORMAT_VERSION` 2)::

    format_version, name, created (UTC ISO time), random_weights
    source          model_dir, clip_dir (as given at export), preset (synthetic preset or null), sha256
                    (fingerprint over config files, safetensors headers and sizes), files
    libraries       versions of the libraries that shaped the files
    export          opset, exporter, scan_impl, attention, fp16_policy (informational)
    model           ModelFacts (geometry, RoPE inverse frequencies, eos ids)
    generation      the checkpoint's generation_config.json as greedy decoding uses it (CheckpointGeneration:
                    source, eos_token_ids, repetition_penalty, max_new_tokens, ignored, unsupported); optional on
                    load (engines exported before it read as "no generation config")
    clip_preprocess the checkpoint's CLIP preprocessing values (ClipPreprocessConfig)
    action_tokens   {"<next>": id, "<feedback>": id, "<correct>": id}
    prompt          {"instruction": text, "ids": StreamingPromptIds} with the default coaching instruction
    tokenizer_dir   "tokenizer" (tokenizer.json extended with <image> and the action tokens, action_tokens.json)
    precisions      ["fp32", "fp16"]
    graphs          {precision: {graph: {file, data_file, bytes, seconds, nodes, opset, inputs, outputs,
                    dynamic_axes, [fp16], [embedding_table]}}}
    tensorrt        {precision: {graph: {file, sidecar, profiles, ...}}}   (only with --tensorrt)
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

from engine_format import FormatError
from engine_format.generation import CheckpointGeneration
from engine_format.geometry import ModelFacts
from engine_format.io import GRAPH_NAMES, PRECISIONS, TensorSpec
from engine_format.preprocess import ClipPreprocessConfig
from engine_format.prompt import StreamingPromptIds
from engine_format.vocab import ActionTokenIds

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2
TOKENIZER_DIR = "tokenizer"
_FINGERPRINT_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "preprocessor_config.json",
    "action_tokens.json",
)


class ManifestError(FormatError):
    """A manifest is missing, malformed, or does not describe what is asked of it."""


# ---------------------------------------------------------------------------------------------------- writing
def _safetensors_header(path: Path) -> bytes:
    """The 8-byte length prefix and JSON header of a safetensors file (names, dtypes, shapes, offsets)."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ManifestError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        return prefix + f.read(length)


def _zip_tail(path: Path, size: int) -> bytes:
    """The last 64 KiB of a ``pytorch_model*.bin`` zip: its central directory holds every record's CRC-32."""
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        return f.read()


def checkpoint_fingerprint(model_dir: Path, clip_dir: Path) -> dict[str, Any]:
    """Identifies a checkpoint pair cheaply: sha256 over config files, weight-file headers and file sizes.

    Safetensors files contribute their header (names, dtypes, shapes, offsets), ``pytorch_model*.bin`` files their
    zip central directory (names and CRC-32s); both are read without the tensor data. ``generation_config.json`` is
    left out: its content is recorded in the manifest's ``generation`` section itself (and engines exported before
    that section keep their fingerprint).

    Returns:
        ``{"sha256": hex, "files": [{"path", "bytes"}]}`` (paths prefixed ``model/`` or ``clip/``).
    """
    digest = hashlib.sha256()
    files: list[dict[str, Any]] = []
    for label, directory in (("model", Path(model_dir)), ("clip", Path(clip_dir))):
        names = sorted(p.name for p in directory.glob("*.safetensors")) + sorted(
            p.name for p in directory.glob("pytorch_model*.bin")
        ) + [n for n in _FINGERPRINT_FILES if (directory / n).is_file()]
        for name in names:
            path = directory / name
            size = path.stat().st_size
            if name.endswith(".safetensors"):
                content = _safetensors_header(path)
            elif name.endswith(".bin"):
                content = _zip_tail(path, size)
            else:
                content = path.read_bytes()
            digest.update(f"{label}/{name}:{size}:".encode())
            digest.update(content)
            files.append({"path": f"{label}/{name}", "bytes": size})
    return {"sha256": digest.hexdigest(), "files": files}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the exported files (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "tensorrt", "tokenizers"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    """Current UTC time, ISO 8601, seconds resolution."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_manifest(root: Path, data: Mapping[str, Any]) -> Path:
    """Validates ``data`` as a manifest (as the runtime will read it) and writes ``root/manifest.json``.

    Raises:
        ManifestError: If ``data`` would not load.
    """
    Manifest.from_data(Path(root), dict(data), check_files=False)
    path = Path(root) / MANIFEST_FILE
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- reading
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
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


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
        """Memory-maps the table read-only (``[V, H]``, pages read on access).

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
    if not isinstance(data, Mapping) or key not in data:
        raise ManifestError(f"{where}: missing key {key!r}")
    return data[key]


@dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json`` plus the directory it lives in.

    Attributes:
        root: Engines directory (absolute).
        data: The raw JSON object.
        model: Geometry and vocabulary facts.
        clip_preprocess: The checkpoint's CLIP preprocessing values.
        action_token_ids: The action-token ids.
        prompt_ids: The streaming prompt ids built with :attr:`prompt_instruction`.
        prompt_instruction: The coaching instruction those ids were built with.
        generation: The checkpoint's generation config (empty when the manifest predates the section).
    """

    root: Path
    data: dict[str, Any]
    model: ModelFacts
    clip_preprocess: ClipPreprocessConfig
    action_token_ids: ActionTokenIds
    prompt_ids: StreamingPromptIds
    prompt_instruction: str
    generation: CheckpointGeneration = CheckpointGeneration()

    @classmethod
    def load(cls, root: Path | str) -> Manifest:
        """Reads and validates ``root/manifest.json``.

        Raises:
            ManifestError: If the file is missing, not JSON, of another format version, or malformed.
        """
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"{path} does not exist (export first: python -m export)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_data(root, data)

    @classmethod
    def from_data(cls, root: Path, data: Any, check_files: bool = True) -> Manifest:
        """Validates a parsed manifest.

        Args:
            root: Engines directory.
            data: The parsed JSON.
            check_files: Also check that every graph file exists.

        Raises:
            ManifestError: Naming the offending key.
        """
        where = str(Path(root) / MANIFEST_FILE)
        if not isinstance(data, dict):
            raise ManifestError(f"{where} must hold a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version {version!r}, this code reads {FORMAT_VERSION} (re-export: python -m export)"
            )
        for key in ("model", "graphs", "precisions", "action_tokens", "source", "prompt", "clip_preprocess"):
            _require(data, key, where)
        try:
            model = ModelFacts.from_dict(data["model"], f"{where} model")
            clip = ClipPreprocessConfig.from_dict(data["clip_preprocess"], f"{where} clip_preprocess")
            actions = ActionTokenIds.from_dict(data["action_tokens"], f"{where} action_tokens")
            prompt = _require(data, "prompt", where)
            prompt_ids = StreamingPromptIds.from_dict(_require(prompt, "ids", f"{where} prompt"), f"{where} prompt.ids")
            generation = (
                CheckpointGeneration.from_dict(data["generation"], f"{where} generation")
                if "generation" in data
                else CheckpointGeneration()
            )
        except FormatError as exc:
            raise ManifestError(str(exc)) from exc
        instruction = _require(prompt, "instruction", f"{where} prompt")
        if not isinstance(instruction, str):
            raise ManifestError(f"{where} prompt.instruction must be a string")
        if actions.vocab_size != model.vocab_size:
            raise ManifestError(f"{where}: action tokens {actions.as_dict()} do not end at vocab_size {model.vocab_size}")
        precisions = data["precisions"]
        if not isinstance(precisions, list) or not precisions or any(p not in PRECISIONS for p in precisions):
            raise ManifestError(f"{where}: precisions {precisions!r} must be a non-empty subset of {PRECISIONS}")
        manifest = cls(Path(root).resolve(), data, model, clip, actions, prompt_ids, instruction, generation)
        for precision in precisions:
            for graph in GRAPH_NAMES:
                manifest.graph(precision, graph, check_file=check_files)
        return manifest

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        """Engines name."""
        return str(self.data.get("name", self.root.name))

    @property
    def precisions(self) -> list[str]:
        """Exported precisions."""
        return list(self.data["precisions"])

    @property
    def random_weights(self) -> bool:
        """Whether the source checkpoint is synthetic (outputs are meaningless)."""
        return bool(self.data.get("random_weights", False))

    @property
    def tokenizer_dir(self) -> Path:
        """Directory of the copied tokenizer files."""
        return self.root / str(self.data.get("tokenizer_dir", TOKENIZER_DIR))

    @property
    def source(self) -> dict[str, Any]:
        """The ``source`` section (checkpoint directories as given at export, preset, fingerprint)."""
        return dict(self.data["source"])

    # ------------------------------------------------------------------ files
    def graph(self, precision: str, name: str, check_file: bool = True) -> GraphFile:
        """One exported graph.

        Raises:
            ManifestError: If that precision or graph was not exported or its file is missing.
        """
        graphs = self.data["graphs"]
        if not isinstance(graphs, dict) or precision not in graphs:
            have = sorted(graphs) if isinstance(graphs, dict) else graphs
            raise ManifestError(f"{self.root}: precision {precision!r} was not exported (have {have})")
        if name not in graphs[precision]:
            raise ManifestError(
                f"{self.root}: graph {name!r} missing for {precision} (have {sorted(graphs[precision])})"
            )
        entry = graphs[precision][name]
        where = f"{self.root} graphs.{precision}.{name}"
        path = self.root / str(_require(entry, "file", where))
        if check_file and not path.is_file():
            raise ManifestError(f"{where}: {path} does not exist")
        inputs = _require(entry, "inputs", where)
        outputs = _require(entry, "outputs", where)
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            raise ManifestError(f"{where}: inputs/outputs must be lists")
        return GraphFile(
            name,
            precision,
            path,
            tuple(TensorSpec.from_dict(e, where) for e in inputs),
            tuple(TensorSpec.from_dict(e, where) for e in outputs),
        )

    def embedding_table(self, precision: str) -> EmbeddingTable:
        """The tied embedding table stored in that precision's decoder data file.

        Raises:
            ManifestError: If the decoder entry does not record it.
        """
        decoder = self.graph(precision, "decoder")
        entry = self.data["graphs"][precision]["decoder"]
        table = _require(entry, "embedding_table", f"{self.root} graphs.{precision}.decoder")
        try:
            return EmbeddingTable(
                path=decoder.path.parent / str(table["file"]),
                offset=int(table["offset"]),
                length=int(table["length"]),
                dtype=str(table["dtype"]),
                shape=(int(table["shape"][0]), int(table["shape"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ManifestError(f"{self.root} graphs.{precision}.decoder.embedding_table is malformed: {exc}") from exc

    @property
    def tensorrt_precisions(self) -> list[str]:
        """Precisions TensorRT engines were built for (empty without ``--tensorrt``)."""
        return sorted(self.data.get("tensorrt", {}))

    def tensorrt_engines(self, precision: str) -> dict[str, dict[str, Any]]:
        """The TensorRT section for one precision (graph -> entry with absolute ``file``).

        Raises:
            ManifestError: If no TensorRT engines were built for that precision.
        """
        section = self.data.get("tensorrt", {})
        if precision not in section:
            raise ManifestError(
                f"{self.root}: no TensorRT {precision} engines (built: {sorted(section) or 'none'}; "
                "build them: python -m export --tensorrt)"
            )
        return {name: {**entry, "file": str(self.root / entry["file"])} for name, entry in section[precision].items()}

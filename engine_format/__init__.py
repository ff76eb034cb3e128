"""The engine format: what ``python -m export`` writes and the runtime reads, with no torch, transformers or onnx.

One definition of everything both sides must agree on:

* ``manifest``: the schema of ``manifest.json`` (graphs, I/O, precision, geometry, vocabulary and action-token ids,
  prompt ids, CLIP preprocessing values, checkpoint fingerprint), validated on load into typed records;
* ``io``: graph names, the one I/O table per graph and the per-layer KV tensor names;
* ``vocab``: ``<image>`` and the action tokens, their ids and the ``action_tokens.json`` file;
* ``preprocess``: both frame-preprocessing branches in numpy (the reference model wraps the same functions);
* ``prompt``: the ChatML prompt and the streaming conversation's token pieces;
* ``rope``: the decoder's rotary embedding, for exact re-basing of cached keys;
* ``tokenizer``: the engines' ``tokenizer.json`` loaded with the ``tokenizers`` library;
* ``video``: decoding video files with PyAV (the reference reader and the runtime's file source share it).

Dependencies: numpy, opencv, pillow, av, tokenizers (``pip install .``); nothing here imports torch.
"""


from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """A file or value of the engine format is missing or invalid; the message names the file or key."""


def read_json_object(path: Path, what: str, error: type[Exception] = FormatError) -> dict[str, Any]:
    """Reads a JSON object, raising ``error`` with a message naming ``what`` and the file on any problem.

    Args:
        path: The file.
        what: What it is, for the message ("CLIP preprocessor config", "checkpoint config", ...).
        error: Exception type to raise.
    """
    if not Path(path).is_file():
        raise error(f"{what}: {path} does not exist")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what}: {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{what}: {path} must hold a JSON object")
    return data

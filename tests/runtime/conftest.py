"""Fixtures of the runtime tests: the tiny model on the PyTorch backend and its tokenizer (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_backend(tiny_checkpoint: tuple[Path, Path]):
    """The synthetic tiny model behind the ``pytorch`` backend (fp32, CPU, chunked scan)."""
    from runtime.backends.torch_backend import TorchBackend

    return TorchBackend(*tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_backend):
    """The real Qwen2.5 tokenizer of the tiny checkpoint, with the action tokens at the backend's ids."""
    return tiny_backend.load_tokenizer()

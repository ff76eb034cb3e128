"""``python -m evaluation.stream``: the runtime's :class:`~runtime.session.StreamSession` over episode videos.

Usage::

    python -m evaluation.stream --engines engines/coach --gt heldout.jsonl --videos DIR --out runs/model \\
        [--config evaluation/timing_bench.yaml] [--set policy.name=every_n] [--memoize]

For each ground-truth episode, ``DIR/<episode>.mp4`` is decoded and cut into windows (:mod:`evaluation.episodes`)
and every window goes through a fresh session's ``step`` in order, as a live stream processed window by window:
the decision for a window starts when it is complete or when the previous one finished, whichever is later, so each
``window_decided.lag_s`` is the backlog a real-time run at this machine's measured speed would have. The events are
the runtime's own JSONL (:class:`~runtime.events.JsonlEventWriter`), one file per episode, which
``python -m evaluation.timing`` reads. ``--memoize`` reuses the visual encoders' outputs for inputs seen before in
the same process (bit-identical results; their stage times, and so the delivery-time lag, then count as ~0 ms).

Exit codes: 0 done, 2 bad configuration, backend or ground truth, 3 unreadable video.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.annotations import AnnotationError, load_ground_truth
from evaluation.episodes import decode_episode, frames_in
from runtime.backends import BackendError, backend_from_config
from runtime.backends.base import ImageFeatures, ModelBackend, Segment
from runtime.backends.kv import KVCache
from runtime.config import ConfigError, StreamingConfig, apply_overrides, load_config, parse_overrides
from runtime.events import JsonlEventWriter
from runtime.session import StreamSession
from runtime.sources import SourceError
from runtime.stages import TokenizerLike

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE, EXIT_SOURCE = 0, 2, 3


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class MemoBackend(ModelBackend):
    """Delegates to a backend; the visual encoders' outputs are memoised by input digest (see the module docstring).

    Args:
        inner: The backend that computes.
    """

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        for name in ("name", "precision", "device", "facts", "clip_preprocess", "action_token_ids", "random_weights",
                     "tokenizer_dir"):
            setattr(self, name, getattr(inner, name))
        self._memo: dict[tuple[str, str], Any] = {}
        self.hits = self.misses = 0
        self.memoize = True
        """When false, every call computes (and refreshes the memo)."""

    def _cached(self, kind: str, key: str, compute: Any) -> Any:
        if self.memoize and (kind, key) in self._memo:
            self.hits += 1
            return self._memo[(kind, key)]
        self.misses += 1
        value = self._memo[(kind, key)] = compute()
        return value

    def encode_images(self, context_pixels: np.ndarray) -> ImageFeatures:
        """Memoised ``encode_images``."""
        return self._cached("images", _digest(context_pixels), lambda: self.inner.encode_images(context_pixels))

    def select_frames(self, clip_features: Any) -> tuple[np.ndarray, np.ndarray]:
        """Memoised ``select_frames``."""
        key = _digest(self.inner.to_host(clip_features))
        return self._cached("select", key, lambda: self.inner.select_frames(clip_features))

    def encode_video(self, video_pixels: np.ndarray) -> Any:
        """Memoised ``encode_video``."""
        return self._cached("video", _digest(video_pixels), lambda: self.inner.encode_video(video_pixels))

    def allocate_kv(self, capacity: int) -> KVCache:
        """The inner backend's cache."""
        return self.inner.allocate_kv(capacity)

    def decode(self, segments: Sequence[Segment], kv: KVCache) -> np.ndarray:
        """The inner backend's decoder (never memoised)."""
        return self.inner.decode(segments, kv)

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """The inner backend's embedding rows."""
        return self.inner.embed_tokens(ids)

    def load_tokenizer(self) -> Any:
        """The inner backend's tokenizer."""
        return self.inner.load_tokenizer()

    def stack(self, arrays: Sequence[Any]) -> Any:
        """The inner backend's stacking."""
        return self.inner.stack(arrays)

    def to_host(self, array: Any) -> np.ndarray:
        """The inner backend's host copy."""
        return self.inner.to_host(array)

    def close(self) -> None:
        """Closes the inner backend."""
        self.inner.close()


def stream_episode(
    cfg: StreamingConfig, backend: ModelBackend, tokenizer: TokenizerLike, video: Path, out: Path
) -> dict[str, Any]:
    """Runs one episode through a fresh session (see the module docstring); returns its run summary as a dict."""
    frames, windows = decode_episode(video, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as stream:
        session = StreamSession(cfg, backend, tokenizer, publish=JsonlEventWriter(stream, flush=False))
        session.start()
        free_at = frames[0].timestamp  # stream time at which the worker can take the next window
        started = time.perf_counter()
        for window in windows:
            begin = max(window.t_end, free_at)
            t0 = time.perf_counter()
            # The stream time when the decision is made: the worker's start plus the inference it took.
            session.step(window, frames_in(frames, window),
                         latest_timestamp=lambda: begin + (time.perf_counter() - t0))  # noqa: B023 - called at once
            free_at = begin + (time.perf_counter() - t0)
        summary = session.summary(wall_s=time.perf_counter() - started, stream_s=frames[-1].timestamp,
                                  frames_captured=len(frames))
    return summary.to_dict()


def stream_split(
    cfg: StreamingConfig, backend: ModelBackend, tokenizer: TokenizerLike, episodes: Sequence[str], videos: Path,
    out: Path,
) -> dict[str, dict[str, Any]]:
    """:func:`stream_episode` for every episode; writes ``out/<episode>.jsonl`` and ``out/summary.json``."""
    summaries = {}
    for episode in episodes:
        summaries[episode] = stream_episode(cfg, backend, tokenizer, videos / f"{episode}.mp4", out / f"{episode}.jsonl")
        logger.info("%s: %s", episode, {k: summaries[episode][k] for k in ("windows_processed", "feedbacks")})
    (out / "summary.json").write_text(json.dumps({"config": cfg.to_dict(), "episodes": summaries}, indent=1) + "\n")
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--engines", required=True, help="exported engines directory")
    parser.add_argument("--gt", type=Path, required=True, help="ground truth naming the episodes (simple JSONL)")
    parser.add_argument("--videos", type=Path, required=True, help="directory of <episode>.mp4")
    parser.add_argument("--out", type=Path, required=True, help="directory for <episode>.jsonl event logs")
    parser.add_argument("--config", type=Path, default=None, help="streaming config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--memoize", action="store_true", help="memoise visual encoder outputs within the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        overrides = parse_overrides(args.overrides)
        cfg = apply_overrides(load_config(args.config), {**overrides, "backend.engines_dir": args.engines})
        episodes = sorted(load_ground_truth(args.gt))
        backend: ModelBackend = backend_from_config(cfg.backend)
        if args.memoize:
            backend = MemoBackend(backend)
        tokenizer = backend.load_tokenizer()
        stream_split(cfg, backend, tokenizer, episodes, args.videos, args.out)
    except (ConfigError, BackendError, AnnotationError, ValueError) as exc:
        print(f"stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as exc:
        print(f"stream: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    print(f"wrote {len(episodes)} event logs to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

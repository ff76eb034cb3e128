"""An episode's windows and frames as the runtime cuts them, and their visual rows, cached on disk.

:func:`~evaluation.episodes.episode_windows` (re-exported here) cuts a video into the runtime's windows and samples
their frames as ``StreamSession.step`` does.

:func:`window_visual_rows` runs the runtime's own first three stages (:class:`~runtime.stages.ImageStage` with a
:class:`~runtime.feature_cache.FrameFeatureCache`, :class:`~runtime.stages.FrameSelectStage`,
:class:`~runtime.stages.VideoStage`) on a backend: the encoders are frozen, so each window's 2402 decoder input rows
(16 x 144 image rows, then 2 x 49 video rows, the order ``DecoderContext.append_window`` feeds them) are computed
once. :class:`FeatureStore` keeps them per episode in ``<dir>/<episode>.npz`` with a key (video bytes, backend,
window settings); a changed key recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.episodes import EpisodeWindows, episode_windows
from runtime.backends.base import ModelBackend
from runtime.config import StreamingConfig
from runtime.feature_cache import FrameFeatureCache
from runtime.stages import FrameSelectStage, ImageStage, VideoStage, WindowWork

__all__ = ["EpisodeWindows", "FeatureStore", "all_episode_rows", "episode_windows", "window_visual_rows"]

logger = logging.getLogger(__name__)


def window_visual_rows(backend: ModelBackend, episode: EpisodeWindows, cfg: StreamingConfig) -> np.ndarray:
    """The decoder input rows of every window ``[n_windows, 2402, H]`` float32, through the runtime's stages."""
    cache: FrameFeatureCache = FrameFeatureCache(cfg.cache.max_frames)
    stages = (ImageStage(backend, cache), FrameSelectStage(backend), VideoStage(backend))
    hidden = backend.hidden_size
    out = np.empty((len(episode.windows), backend.facts.num_visual_tokens, hidden), dtype=np.float32)
    for k, (window, frames) in enumerate(zip(episode.windows, episode.frames)):
        work = WindowWork(window, list(frames))
        for stage in stages:
            stage.process(work)
        image = backend.to_host(work.image_tokens).reshape(-1, hidden)
        video = backend.to_host(work.video_tokens).reshape(-1, hidden)
        out[k] = np.concatenate([image, video], axis=0)
    return out


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FeatureStore:
    """Per-episode visual rows on disk (see the module docstring).

    Args:
        root: Directory of the ``.npz`` files.
        backend: The backend that computes missing rows.
        backend_key: Identifies the backend's weights (e.g. the checkpoint fingerprint); part of the cache key.
        cfg: The streaming configuration (its window settings are part of the key).
    """

    def __init__(self, root: str | Path, backend: ModelBackend, backend_key: str, cfg: StreamingConfig) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend, self.backend_key, self.cfg = backend, backend_key, cfg
        self.computed = 0
        self.loaded = 0

    def _key(self, video: Path) -> str:
        w, c = self.cfg.window, self.cfg.cache
        return json.dumps({
            "video_sha256": _file_digest(video),
            "backend": f"{self.backend.name}/{self.backend.precision}/{self.backend_key}",
            "window": [w.window_s, w.overlap_s, w.frames_per_window, c.max_frames],
        }, sort_keys=True)

    def rows(self, episode: EpisodeWindows, video: str | Path) -> np.ndarray:
        """The episode's rows, from disk when the key matches, else computed and stored."""
        path = self.root / f"{episode.episode}.npz"
        key = self._key(Path(video))
        if path.is_file():
            with np.load(path) as data:
                if str(data["key"]) == key and data["rows"].shape[0] == len(episode.windows):
                    self.loaded += 1
                    return data["rows"]
            logger.info("%s: cached features do not match (video, backend or window settings changed)", path)
        started = time.perf_counter()
        rows = window_visual_rows(self.backend, episode, self.cfg)
        np.savez(path, rows=rows, key=np.asarray(key))
        self.computed += 1
        logger.info("%s: visual rows of %d windows in %.1f s -> %s", episode.episode, len(episode.windows),
                    time.perf_counter() - started, path)
        return rows


def all_episode_rows(store: FeatureStore, episodes: Sequence[tuple[EpisodeWindows, Path]]) -> dict[str, np.ndarray]:
    """Rows of several episodes (episode id -> ``[n_windows, 2402, H]``)."""
    return {ep.episode: store.rows(ep, video) for ep, video in episodes}

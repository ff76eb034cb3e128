"""Ground truth and predictions as episodes of timed texts.

Ground truth (``load_ground_truth``):

* **simple JSONL**: one ``{"episode": str, "t": seconds, "text": str}`` per feedback; an optional
  ``{"episode": str, "duration": seconds}`` line gives an episode's length (the baselines need it) and declares an
  episode even when it has no feedback;
* **QEVD annotations** (``feedbacks_long_range.json``, a JSON list of records): per-frame ``feedbacks`` collapsed into
  runs, one ``feedback_timestamps`` / ``is_transition`` entry per run. ``segments`` picks the episode split:
  ``official`` (FitCoach: one episode per exercise, from the first frame of a transition's span to halfway through
  the next transition's span, times relative to the episode start, id ``{video}_{i}``), ``challenge`` (from one
  transition timestamp to the next, absolute times, id ``{video}_{i}``) or ``video`` (one episode per video).
  Transitions are never ground truth. ``official`` reads the record's ``video_timestamps`` ``.npy`` (UNIX ns,
  relative to the annotation file) and adds ``offset_s`` (28,800 s in the official loader, 0 for the normalised
  competition split).

Predictions (``load_predictions``), one or many files:

* **runtime events JSONL** (``runtime.events``; one run per file unless lines carry an ``episode`` key): a
  prediction is a ``window_decided`` with action ``<feedback>`` whose ``feedback_finished`` was not suppressed as a
  repeat (a suppressed text is never shown). Its **decision time** is the window's ``t_end``; its **delivery time**
  is ``t_end + lag_s`` (the stream time when the decision was made: the backlog plus the window's compute) plus the
  time to the first token (``ttft_ms``): when the first word can appear. The **audio time** (``--speak`` runs) comes
  from the runtime's ``feedback_spoken`` event: ``audio_start_t`` (seconds since the stream's first frame) when its
  status is ``spoken``; a feedback the speaker superseded, found empty or failed on was never heard, so it is no
  prediction at audio time. Other loggers may give ``{"type": "speech_started", "window_index": k, "t": stream s}``
  or ``{..., "delay_s": s}`` (audio start after the delivery time), or ``audio_delay_s`` on ``feedback_finished``. The episode id is the
  ``--episode FILE=ID`` mapping, else the file's stem;
* **simple JSONL** as for ground truth (decision = delivery = audio time).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.matching import TimedText

logger = logging.getLogger(__name__)

QEVD_SEGMENTS = ("official", "challenge", "video")
QEVD_OFFSET_S = 28_800.0
"""What the official loader adds to the frame timestamps (+8 h)."""

TIME_KINDS = ("decision", "delivery", "audio")


class AnnotationError(ValueError):
    """A ground-truth or prediction file is malformed (the message names the file and line)."""


@dataclass
class Episode:
    """The ground truth of one episode.

    Attributes:
        id: Episode id.
        items: Feedbacks sorted by time.
        duration_s: Length in seconds, when known (the baselines cover ``[0, duration_s]``).
    """

    id: str
    items: list[TimedText] = field(default_factory=list)
    duration_s: float | None = None


@dataclass
class Predictions:
    """The predictions of one episode at each timestamp choice.

    Attributes:
        decision: At decision time, sorted.
        delivery: At delivery time, sorted.
        audio: At audio start (``None`` when the run had no speech events).
        window_ends: ``t_end`` of every decided window (the every-n-th-window baseline's grid), if from events.
        suppressed: Feedbacks generated but suppressed as repeats (not predictions).
    """

    decision: list[TimedText] = field(default_factory=list)
    delivery: list[TimedText] = field(default_factory=list)
    audio: list[TimedText] | None = None
    window_ends: list[float] = field(default_factory=list)
    suppressed: int = 0

    def at(self, kind: str) -> list[TimedText]:
        """The items of one timestamp choice (``decision``, ``delivery`` or ``audio``).

        Raises:
            AnnotationError: For ``audio`` when the run has no speech events.
        """
        if kind not in TIME_KINDS:
            raise ValueError(f"time kind {kind!r}: must be one of {TIME_KINDS}")
        items = getattr(self, kind)
        if items is None:
            raise AnnotationError("no speech events in this run: audio times are unknown")
        return items


def _sorted(items: Iterable[TimedText]) -> list[TimedText]:
    return sorted(items, key=lambda x: x.t)  # stable: equal times keep file order


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AnnotationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise AnnotationError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        out.append((number, record))
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise AnnotationError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _simple(records: Sequence[tuple[int, dict[str, Any]]], path: Path) -> dict[str, Episode]:
    episodes: dict[str, Episode] = {}
    for number, record in records:
        where = f"{path}:{number}"
        episode = record.get("episode")
        if not isinstance(episode, str) or not episode:
            raise AnnotationError(f"{where}: 'episode' must be a non-empty string, got {episode!r}")
        unknown = set(record) - {"episode", "t", "text", "duration"}
        if unknown:
            raise AnnotationError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: episode, t, text, duration)")
        ep = episodes.setdefault(episode, Episode(episode))
        if "duration" in record:
            ep.duration_s = _number(record["duration"], f"{where}: 'duration'")
        if "t" in record:
            text = record.get("text")
            if not isinstance(text, str):
                raise AnnotationError(f"{where}: 'text' must be a string, got {text!r}")
            ep.items.append(TimedText(_number(record["t"], f"{where}: 't'"), text))
        elif "text" in record:
            raise AnnotationError(f"{where}: a 'text' without 't'")
    for ep in episodes.values():
        ep.items = _sorted(ep.items)
    return episodes


# --------------------------------------------------------------------------- QEVD


def collapse_runs(per_frame: Sequence[str]) -> list[tuple[str, int, int]]:
    """Runs of equal non-empty strings: ``(text, first frame, last frame)`` in order."""
    runs: list[tuple[str, int, int]] = []
    for i, text in enumerate(per_frame):
        if text and runs and runs[-1][0] == text and runs[-1][2] == i - 1:
            runs[-1] = (text, runs[-1][1], i)
        elif text:
            runs.append((text, i, i))
    return runs


def _qevd(records: Any, path: Path, segments: str, offset_s: float) -> dict[str, Episode]:
    if segments not in QEVD_SEGMENTS:
        raise AnnotationError(f"QEVD segments {segments!r}: must be one of {QEVD_SEGMENTS}")
    if not isinstance(records, list):
        raise AnnotationError(f"{path}: QEVD annotations must be a JSON list of records")
    episodes: dict[str, Episode] = {}
    for k, rec in enumerate(records):
        where = f"{path}: record {k}"
        try:
            video = Path(str(rec["long_range_video_file"])).stem
            feedbacks, stamps, transitions = rec["feedbacks"], rec["feedback_timestamps"], rec["is_transition"]
        except (KeyError, TypeError) as exc:
            raise AnnotationError(f"{where}: missing key {exc}") from exc
        runs = collapse_runs(feedbacks)
        if not len(runs) == len(stamps) == len(transitions):
            raise AnnotationError(
                f"{where}: {len(runs)} collapsed feedbacks but {len(stamps)} feedback_timestamps and "
                f"{len(transitions)} is_transition entries"
            )
        times = [_number(t, f"{where}: feedback_timestamps") for t in stamps]
        if segments == "video":
            items = [TimedText(t, r[0]) for t, r, tr in zip(times, runs, transitions) if not tr]
            episodes[video] = Episode(video, _sorted(items))
            continue
        marks = [i for i, tr in enumerate(transitions) if tr]
        frame_t = _frame_times(rec, path, where, offset_s) if segments == "official" else None
        for s, (a, b) in enumerate(zip(marks[:-1], marks[1:])):
            episode = f"{video}_{s}"
            if frame_t is not None:
                start = float(frame_t[runs[a][1]])
                end = 0.5 * (float(frame_t[runs[b][1]]) + float(frame_t[runs[b][2]]))
                items = [TimedText(times[i] - start, runs[i][0]) for i in range(a + 1, b) if not transitions[i]]
                episodes[episode] = Episode(episode, _sorted(items), end - start)
            else:
                items = [TimedText(times[i], runs[i][0]) for i in range(a + 1, b) if not transitions[i]]
                episodes[episode] = Episode(episode, _sorted(items), times[b] - times[a])
    return episodes


def _frame_times(rec: Mapping[str, Any], path: Path, where: str, offset_s: float) -> np.ndarray:
    ts_file = path.parent / str(rec.get("video_timestamps", ""))
    if not ts_file.is_file():
        raise AnnotationError(f"{where}: video_timestamps file {ts_file} not found (needed by --qevd-segments official)")
    stamps = np.load(ts_file).astype(np.float64) / 1e9 + offset_s
    if len(stamps) != len(rec["feedbacks"]):
        raise AnnotationError(f"{where}: {len(stamps)} frame timestamps for {len(rec['feedbacks'])} frames")
    return stamps


def load_ground_truth(path: str | Path, segments: str = "official", offset_s: float = QEVD_OFFSET_S) -> dict[str, Episode]:
    """Reads ground truth (simple JSONL or QEVD annotations; see the module docstring).

    Raises:
        AnnotationError: Naming the file and line or record.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _qevd(json.loads(text), path, segments, offset_s)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}: not valid JSON ({exc.msg})") from exc
    episodes = _simple(_read_jsonl(path), path)
    if not episodes:
        raise AnnotationError(f"{path}: no episodes")
    return episodes


# --------------------------------------------------------------------------- predictions


def _event_runs(records: Sequence[tuple[int, dict[str, Any]]], path: Path, default_episode: str) -> dict[str, Predictions]:
    by_episode: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for number, record in records:
        by_episode[str(record.get("episode", default_episode))].append((number, record))
    return {episode: _one_run(lines, path) for episode, lines in by_episode.items()}


def _one_run(records: Sequence[tuple[int, dict[str, Any]]], path: Path) -> Predictions:
    decided: dict[int, dict[str, Any]] = {}
    finished: dict[int, dict[str, Any]] = {}
    speech: dict[int, dict[str, Any]] = {}
    spoken: dict[int, dict[str, Any]] = {}
    for number, record in records:
        kind = record.get("type")
        if not isinstance(kind, str):
            raise AnnotationError(f"{path}:{number}: an event line without a 'type'")
        if kind in ("window_decided", "feedback_finished", "speech_started", "feedback_spoken"):
            index = record.get("window_index")
            if isinstance(index, bool) or not isinstance(index, int):
                raise AnnotationError(f"{path}:{number}: {kind} without an integer window_index")
            target = {"window_decided": decided, "feedback_finished": finished, "speech_started": speech,
                      "feedback_spoken": spoken}[kind]
            if index in target:
                raise AnnotationError(f"{path}:{number}: a second {kind} for window {index} (one run per file, or add "
                                      "an 'episode' key to each line)")
            target[index] = {**record, "_line": number}
    out = Predictions(window_ends=sorted(_number(d.get("t_end"), f"{path}:{d['_line']}: t_end") for d in decided.values()))
    has_speech = bool(speech) or bool(spoken) or any("audio_delay_s" in f for f in finished.values())
    first = decided.get(0)  # window 0 starts at the stream's first frame (final or not): audio_start_t's origin
    t0 = _number(first.get("t_start", 0.0), f"{path}: t_start") if first is not None else 0.0
    audio: list[TimedText] = []
    for index, d in sorted(decided.items()):
        if d.get("action") != "<feedback>":
            continue
        where = f"{path}:{d['_line']}"
        t_end = _number(d.get("t_end"), f"{where}: t_end")
        fin = finished.get(index)
        if fin is None:
            logger.warning("%s: window %d chose <feedback> but the log has no feedback_finished (run cut?): "
                           "counted as a prediction with empty text", where, index)
            text, ttft_s = "", 0.0
        else:
            if fin.get("suppressed"):
                out.suppressed += 1
                continue
            text, ttft_s = str(fin.get("text", "")), _number(fin.get("ttft_ms", 0.0), f"{where}: ttft_ms") / 1e3
        lag = _number(d.get("lag_s", 0.0), f"{where}: lag_s")  # read at the decision: inference included
        delivered = t_end + lag + ttft_s
        out.decision.append(TimedText(t_end, text))
        out.delivery.append(TimedText(delivered, text))
        if has_speech:
            heard = _audio_time(speech.get(index), spoken.get(index), fin, delivered, t0, where)
            if heard is not None:
                audio.append(TimedText(heard, text))
    out.decision, out.delivery = _sorted(out.decision), _sorted(out.delivery)
    out.audio = _sorted(audio) if has_speech else None
    return out


def _audio_time(event: dict[str, Any] | None, spoken: dict[str, Any] | None, fin: dict[str, Any] | None,
                delivered: float, t0: float, where: str) -> float | None:
    """When the feedback was heard, or ``None`` if it never was (superseded, empty or failed speech)."""
    if spoken is not None:
        if spoken.get("status") != "spoken":
            return None
        return t0 + _number(spoken.get("audio_start_t"), f"{where}: feedback_spoken.audio_start_t")
    if event is not None and "t" in event:
        return _number(event["t"], f"{where}: speech_started.t")
    if event is not None and "delay_s" in event:
        return delivered + _number(event["delay_s"], f"{where}: speech_started.delay_s")
    if fin is not None and "audio_delay_s" in fin:
        return delivered + _number(fin["audio_delay_s"], f"{where}: feedback_finished.audio_delay_s")
    raise AnnotationError(f"{where}: the run has speech events but none (with t or delay_s) for this feedback")


def parse_episode_map(items: Sequence[str]) -> dict[str, str]:
    """``["run1.jsonl=squat_3", ...]`` -> ``{"run1.jsonl": "squat_3"}`` (keys match a file's name or path).

    Raises:
        AnnotationError: For an item without ``=``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise AnnotationError(f"--episode {item!r}: expected FILE=EPISODE_ID")
        out[key] = value
    return out


def load_predictions(paths: Sequence[str | Path], episode_map: Mapping[str, str] | None = None) -> dict[str, Predictions]:
    """Reads prediction files (runtime events JSONL or simple JSONL; see the module docstring).

    Raises:
        AnnotationError: For a malformed file, a file mixing both formats, or an episode given by two files.
    """
    episode_map = dict(episode_map or {})
    out: dict[str, Predictions] = {}
    for raw in paths:
        path = Path(raw)
        records = _read_jsonl(path)
        events = [r for _, r in records if "type" in r]
        if events and len(events) != len(records):
            raise AnnotationError(f"{path}: mixes runtime events (with 'type') and simple lines")
        if events:
            default = episode_map.get(str(raw), episode_map.get(path.name, path.stem))
            runs = _event_runs(records, path, default)
        else:
            runs = {
                ep.id: Predictions(decision=ep.items, delivery=list(ep.items), audio=list(ep.items))
                for ep in _simple(records, path).values()
            }
        for episode, preds in runs.items():
            if episode in out:
                raise AnnotationError(f"{path}: episode {episode!r} already came from another prediction file")
            out[episode] = preds
    return out

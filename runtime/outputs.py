"""Everything a run shows and writes, wired from ``output.*`` and ``speech.*``: one object per run.

:class:`RunOutputs` is built before the model loads (:meth:`RunOutputs.prepare` fails fast on an unwritable
directory or a missing speech engine), subscribes its parts to the event bus once the engine exists
(:meth:`RunOutputs.attach`), and after the run drains the speaker, writes ``summary.json``, renders the timeline
and the annotated video, and prints the closing lines (:meth:`RunOutputs.finish`). The parts:

* terminal: readable lines (:mod:`runtime.terminal`), or JSONL on stdout with the JSON summary on stderr (``jsonl``);
* JSONL files: ``output.events_file`` and ``<output.dir>/events.jsonl``;
* the live overlay state (the webcam window draws it);
* :class:`~runtime.render.record.RunRecorder` when ``output.dir`` is set (timeline and annotated video);
* :class:`~runtime.speech.Speaker` when ``speech.enabled`` (utterances kept in ``<output.dir>/speech`` unless
  ``speech.wav_dir`` says otherwise).

Rendering and speech modules are imported when a run renders or speaks, keeping ``import runtime.webcam`` light.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

from runtime.config import StreamingConfig
from runtime.events import EventBus, JsonlEventWriter
from runtime.overlay import OverlayState
from runtime.ring_buffer import FrameRingBuffer
from runtime.sources import FrameSource
from runtime.tts import SpeechError
from runtime.stats import RunSummary
from runtime.terminal import TerminalPrinter, run_end_lines

logger = logging.getLogger(__name__)


class OutputError(RuntimeError):
    """An output file or directory cannot be written; the message names it."""


class StreamClock:
    """Stream time read from the engine's ring buffer (seconds since the first captured frame).

    Args:
        buffer: The engine's ring buffer.
    """

    def __init__(self, buffer: FrameRingBuffer) -> None:
        self.buffer = buffer
        self._ended: tuple[float, float] | None = None  # (monotonic time, stream seconds) when the source ended

    def origin(self) -> float | None:
        """Timestamp of the first frame (window times are absolute), ``None`` before it."""
        return self.buffer.first_timestamp

    def elapsed(self) -> float | None:
        """Seconds of stream captured so far, ``None`` before the first frame.

        After a file or the synthetic scene has ended, the clock runs on in wall time from its last frame: a person
        watching keeps seeing (and hearing) the windows still being decided.
        """
        first, latest = self.buffer.first_timestamp, self.buffer.latest_timestamp
        if first is None or latest is None:
            return None
        if not self.buffer.closed:
            return latest - first
        if self._ended is None:
            self._ended = (time.monotonic(), latest - first)
        since, at = self._ended
        return at + (time.monotonic() - since)


class RunOutputs:
    """The outputs of one run.

    Args:
        config: The streaming configuration (``output``, ``speech``, and the window/policy for titles).
        source_name: How titles name the source.
        paced: Frames are released in real time (the pictures then show events as seen live).
        replay: Makes a fresh, unpaced copy of the source for the annotated video; ``None`` for cameras.
        stdout: Readable lines or JSONL (default ``sys.stdout``).
        stderr: The JSON summary in ``jsonl`` mode; messages (default ``sys.stderr``).
    """

    def __init__(
        self,
        config: StreamingConfig,
        source_name: str,
        paced: bool,
        replay: Callable[[], FrameSource] | None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.config, self.source_name, self.paced, self.replay = config, source_name, paced, replay
        # Looked up now, not at import: tests and callers redirect sys.stdout.
        self.stdout, self.stderr = stdout or sys.stdout, stderr or sys.stderr
        self.out_dir = Path(config.output.dir) if config.output.dir else None
        self.overlay = OverlayState(policy=config.policy.name)
        self.speaker: Any = None  # runtime.speech.Speaker when speech.enabled
        self.speech_note = ""
        self.recorder: Any = None
        self._files: list[IO[str]] = []
        self._clock: StreamClock | None = None
        self._bus: EventBus | None = None
        self._random_weights = False

    # ------------------------------------------------------------------ before the model loads
    def prepare(self) -> None:
        """Creates the output directory and event files, and checks the speech engine.

        Raises:
            OutputError: If a directory or file cannot be written.
            SpeechError: If speech is on and the engine is missing or a named player cannot play.
        """
        out = self.config.output
        try:
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self._files.append((self.out_dir / "events.jsonl").open("w", encoding="utf-8"))
            if out.events_file:
                Path(out.events_file).parent.mkdir(parents=True, exist_ok=True)
                self._files.append(Path(out.events_file).open("w", encoding="utf-8"))
        except OSError as exc:
            self.close()
            raise OutputError(f"cannot write {exc.filename}: {exc.strerror or exc}") from exc
        if self.config.speech.enabled:
            self._check_speech()

    def _check_speech(self) -> None:
        from runtime.speech import build_speaker  # only runs that speak load the speaker

        speech = self.config.speech
        if not speech.wav_dir and self.out_dir is not None:
            speech = dataclasses.replace(speech, wav_dir=str(self.out_dir / "speech"))
        # The speaker publishes through attach()'s bus; until then nothing is spoken.
        self.speaker, self.speech_note = build_speaker(speech, self._publish_speech, self._elapsed)
        if self.speech_note:
            where = f"kept in {speech.wav_dir}" if speech.wav_dir else "use --speak-wav DIR to keep it"
            self.stderr.write(f"speech: {self.speech_note}: feedback is synthesised and timed but not played; "
                              f"{where}\n")

    # ------------------------------------------------------------------ once the engine exists
    def attach(self, bus: EventBus, buffer: FrameRingBuffer, backend_label: str, random_weights: bool) -> None:
        """Subscribes every part to ``bus`` and starts the speaker.

        Args:
            bus: The run's event bus.
            buffer: The engine's ring buffer (the stream clock).
            backend_label: ``name/precision/device``.
            random_weights: The model has random weights.
        """
        cfg = self.config
        self._bus, self._clock, self._random_weights = bus, StreamClock(buffer), random_weights
        stride = cfg.window.window_s - cfg.window.overlap_s
        if self.out_dir is not None:
            from runtime.render.record import RunInfo, RunRecorder

            info = RunInfo(self.source_name, backend_label, cfg.policy.name, random_weights, cfg.window.window_s,
                           stride, self.paced, cfg.decision.confidence_threshold)
            self.recorder = RunRecorder(info, self._elapsed)
            bus.subscribe(self.recorder)
        self.overlay.random_weights, self.overlay.backend = random_weights, backend_label
        self.overlay.clock, self.overlay.origin = self._elapsed, self._origin
        bus.subscribe(self.overlay)
        terminal = cfg.output.terminal
        if terminal == "lines":
            bus.subscribe(TerminalPrinter(self.stdout, cfg.policy.name, stride, cfg.window.window_s,
                                          self._origin))
        elif terminal == "jsonl":
            bus.subscribe(JsonlEventWriter(self.stdout))
        for stream in self._files:
            bus.subscribe(JsonlEventWriter(stream))
        if self.speaker is not None:
            bus.subscribe(self.speaker)  # last: every other part has seen the feedback when it is queued
            self.speaker.start()

    def _elapsed(self) -> float | None:
        return self._clock.elapsed() if self._clock is not None else None

    def _origin(self) -> float | None:
        return self._clock.origin() if self._clock is not None else None

    def _publish_speech(self, event: Any) -> None:
        assert self._bus is not None, "the speaker starts in attach(), after the bus is known"
        self._bus.publish(event)

    # ------------------------------------------------------------------ after the run
    def finish(self, summary: RunSummary) -> list[tuple[str, str]]:
        """Drains the speaker, writes the summary and pictures, prints the closing lines; returns the files.

        Raises:
            OutputError: If a picture, video or the summary cannot be written.
            Exception: The error that stopped the speaker thread.
        """
        if self.speaker is not None:
            self.speaker.close()
        speech = self.speaker.stats.to_dict() if self.speaker is not None else None
        files: list[tuple[str, str]] = []
        try:
            if self.out_dir is not None:
                files = self._write_dir(summary, speech)
            if self.config.output.events_file:
                files.append((self.config.output.events_file, "JSONL events"))
        finally:
            self.close()
        terminal = self.config.output.terminal
        if terminal == "jsonl":
            self.stderr.write(summary.headline() + "\n")
            self.stderr.write(json.dumps(summary_document(summary, speech), indent=1) + "\n")
            self.stderr.flush()
        elif terminal == "lines":
            self.stdout.write("\n".join(run_end_lines(summary, speech, files)) + "\n")
            self.stdout.flush()
        return files

    def _write_dir(self, summary: RunSummary, speech: dict[str, Any] | None) -> list[tuple[str, str]]:
        from runtime.render.canvas import RenderError

        assert self.out_dir is not None
        out, cfg = self.out_dir, self.config.output
        files = [(str(out / "events.jsonl"), "JSONL events")]
        try:
            (out / "summary.json").write_text(json.dumps(summary_document(summary, speech), indent=1) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {out / 'summary.json'}: {exc.strerror or exc}") from exc
        files.append((str(out / "summary.json"), "run summary"))
        if self.recorder is None:
            return files
        record = self.recorder.record(self._origin(), summary.stream_s)
        label = "RANDOM WEIGHTS" if self._random_weights else "model output"
        try:
            if cfg.timeline:
                from runtime.render.timeline import render_timeline

                started = time.perf_counter()
                files.append((str(render_timeline(record, out / "timeline.png")), f"timeline picture, {label}"))
                logger.info("timeline rendered in %.2f s", time.perf_counter() - started)
            if cfg.annotated_video and self.replay is not None:
                started = time.perf_counter()
                files.append((str(self._write_video(record, out / "annotated.mp4")), f"annotated video, {label}"))
                logger.info("annotated video rendered in %.2f s", time.perf_counter() - started)
            elif cfg.annotated_video:
                logger.info("no annotated video: a camera cannot be replayed (the timeline and events are written)")
        except RenderError as exc:
            raise OutputError(str(exc)) from exc
        if self.speaker is not None and self.speaker.wav_dir is not None and speech and speech["spoken"]:
            files.append((str(self.speaker.wav_dir), f"{speech['spoken']} spoken feedbacks as WAV"))
        return files

    def _write_video(self, record: Any, path: Path) -> Path:
        from runtime.render.annotated_video import write_annotated_video

        assert self.replay is not None
        with self.replay() as source:
            written = write_annotated_video(record, source, path, source.nominal_fps, self.config.output.video_height)
        return written.path

    def close(self) -> None:
        """Stops the speaker and closes the event files (idempotent; after an error too)."""
        if self.speaker is not None:
            self.speaker.abort()
        for stream in self._files:
            stream.close()
        self._files = []


def summary_document(summary: RunSummary, speech: dict[str, Any] | None) -> dict[str, Any]:
    """``{"summary": ...}`` plus ``"speech"`` when speech was on (what ``summary.json`` and ``--jsonl`` print)."""
    doc: dict[str, Any] = {"summary": summary.to_dict()}
    if speech is not None:
        doc["speech"] = speech
    return doc


__all__ = ["OutputError", "RunOutputs", "SpeechError", "StreamClock", "summary_document"]

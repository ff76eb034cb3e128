"""Rendering a run for people: the recorder of stamped events, the annotated video and the timeline picture.

* :mod:`~runtime.render.canvas`: fonts, colours and text helpers (Pillow and numpy only; no matplotlib);
* :mod:`~runtime.render.record`: :class:`RunRecorder` (an event-bus subscriber stamping each event with stream time)
  and the display schedule both renderers use;
* :mod:`~runtime.render.annotated_video`: the source replayed with the overlay burned in (``annotated.mp4``);
* :mod:`~runtime.render.timeline`: one picture of the whole run (``timeline.png``).
"""

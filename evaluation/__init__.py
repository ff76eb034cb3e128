"""Evaluation on top of the runtime: when the coach speaks (temporal F), and the annotated synthetic benchmark.

* :mod:`evaluation.matching`: the QEVD / FitCoach temporal matcher and its micro-averaged precision / recall / F;
* :mod:`evaluation.annotations`: ground truth (QEVD annotations or simple JSONL) and predictions (runtime events
  JSONL or simple JSONL) as episodes of timed texts;
* :mod:`evaluation.baselines`: metronome, random and every-n-th-window cue baselines on the same episodes;
* :mod:`evaluation.text_metrics`: ROUGE-L on matched pairs;
* ``python -m evaluation.timing``: the report;
* ``python -m evaluation.synthetic_benchmark``: deterministic squat episodes with injected form faults;
* ``python -m evaluation.stream``: the runtime's StreamSession over benchmark videos, one event log per episode.

Torch-free: this package imports numpy and the runtime's torch-free modules only.
"""

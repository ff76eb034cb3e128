"""Fine-tuning of the action tokens on the runtime's own streaming conversation (``python -m training``).

* :mod:`training.symbolic`: a decoder "backend" whose KV cache records *what* it holds (token ids and visual-row
  references), so the runtime's own :class:`~runtime.context.DecoderContext` lays out the training sequences;
* :mod:`training.sequences`: labels from the ground truth, and one :class:`~training.sequences.DecisionSample` per
  window (the decoder context at its action query, its action, and the feedback text after ``<feedback>``);
* :mod:`training.features`: the episodes' windows and frames exactly as the runtime cuts and samples them, and their
  visual rows through the runtime's stages on a backend, cached on disk;
* :mod:`training.trainer`: action-token rows + LoRA adapters (peft) with a class-balanced action loss and the text
  loss;
* :mod:`training.export_checkpoint`: the merged checkpoint in the official layout (``action_tokens.json`` included),
  which ``python -m export`` and the runtime load unchanged.

Layering: on top of ``mobile_videogpt`` (the reference model) and ``runtime`` (windowing, prompt, context, stages).
"""

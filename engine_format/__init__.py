"""The engine format: what ``python -m export`` writes and the runtime reads, with no torch, transformers or onnx.

One definition of everything both sides must agree on:

* ``manifest``: the schema of ``manifest.json`` (graphs, I/O, precision, geometry, vocabulary and action-token ids,
  prompt ids, CLIP preprocessing values, checkpoint fingerprint), validated on load into typed records;
* ``io``: graph names, the one I/O table per graph and the per-layer KV tensor names;
* ``vocab``: ``<image>`` and the action tokens, their ids and the ``action_tokens.json`` file;
* ``preprocess``: both frame-preprocessing branches in numpy (the reference model wraps the same functions);
* ``prompt``: the ChatML prompt and the streaming conversation's token pieces;
* ``rope``: the decoder's rotary embedding, for exact re-basing of cached keys;
* ``tokenizer``: the engines' ``tokenizer.json`` loaded with the ``tokenizers`` library.

Dependencies: numpy, opencv, pillow, tokenizers (``pip install .``); nothing here imports torch.
"""


class FormatError(ValueError):
    """A file or value of the engine format is missing or invalid; the message names the file or key."""

"""Validation on top of the runtime and the reference: parity of exported backends, GPU fp16 numerics.

Layering: ``validation`` may import ``engine_format``, ``mobile_videogpt``, ``export``, ``runtime`` and
``benchmarks.common``; nothing below it imports ``validation``.

* :mod:`validation.compare`: the one compare function (per-output error, cosine, NaN/Inf, top-1) and its table.
* :mod:`validation.tolerances`: the documented gates per precision.
* :mod:`validation.reference`: the reference trajectory (every stage of the PyTorch model, recorded once).
* :mod:`validation.parity`: ``python -m validation.parity``, every exported backend against the reference.
* :mod:`validation.stream_check`: the end-to-end check of ``runtime.session.StreamSession`` across backends.
* :mod:`validation.gpu_numerics`: ``python -m validation.gpu_numerics``, fp16 numerics on a CUDA machine.
"""

"""Hand-written GPU kernels (Triton), each selected by a configuration name and tested against its reference function.

Nothing here is imported unless its name is chosen (``scan_impl: triton``), so the package imports without Triton.
"""

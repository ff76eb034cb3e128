"""Returning freed heap memory to the operating system (glibc ``malloc_trim``).

Loading the model and, above all, parsing the tokenizer's 18 MB ``tokenizer.json`` frees about 100 MB of small
allocations that glibc keeps in the process's heap (measured: the tokenizer takes 145 MB of RSS when loaded, 48 MB
after a trim). They would be reused by later small allocations, but the stream's large buffers are mapped afresh,
so without a trim that memory adds to every later peak. :func:`release_free_heap` is called once when a stream starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)


def release_free_heap() -> bool:
    """Asks glibc to return free heap pages to the OS (Linux with glibc; a no-op elsewhere).

    Returns:
        Whether memory was released (``malloc_trim`` returned 1).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        logger.debug("no C library found: heap not trimmed")
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim"):  # musl and other C libraries have no malloc_trim
        logger.debug("%s has no malloc_trim: heap not trimmed", name)
        return False
    return bool(libc.malloc_trim(0))


#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt``.
_M_MMAP_THRESHOLD = -3
#: Allocations of at least this many bytes are mapped (and unmapped when freed) by :func:`limit_heap_growth`.
MMAP_THRESHOLD_BYTES = 1 << 20


def limit_heap_growth() -> bool:
    """Makes glibc map every allocation of 1 MiB or more on its own, so freeing it returns it to the OS.

    glibc raises its mmap threshold dynamically (up to 32 MiB) each time a mapped block is freed, after which the
    per-operator buffers ONNX Runtime allocates without its arena come from the heap and stay resident after
    being freed: measured on the tiny stream, 1.24 GB peak RSS by default and 0.92 GB with this setting (the
    same command; docs/design.md, "Memory"). It is process-wide, so the CLIs call it and a program embedding the
    runtime decides for itself (the environment variable ``MALLOC_MMAP_THRESHOLD_=1048576`` does the same).
    An explicit ``MALLOC_MMAP_THRESHOLD_`` in the environment is left alone.

    Returns:
        Whether the threshold was set (Linux with glibc only).
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        logger.debug("%s has no mallopt: heap growth not limited", name)
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))

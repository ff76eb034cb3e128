"""SIGTERM handled like Ctrl-C: both stop a run the same way, only the reason (and the exit code) differ.

Container and service managers stop a process with SIGTERM; Python's default would end it at once (exit 143, no
summary, the window in progress lost). Inside :func:`sigterm_as_interrupt` SIGTERM raises :class:`Terminated` in the
main thread instead, a :class:`KeyboardInterrupt` subclass, so every ``except KeyboardInterrupt`` that finishes a
run cleanly after Ctrl-C also does after SIGTERM, and :func:`stop_reason` tells the two apart.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM was received (raised in the main thread by :func:`sigterm_as_interrupt`'s handler)."""


def stop_reason(exc: KeyboardInterrupt) -> str:
    """``terminated`` for :class:`Terminated` (SIGTERM), ``interrupted`` for Ctrl-C (``RunSummary.ended_by``)."""
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous handler is restored.

    Outside the main thread (where Python cannot install signal handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not the main thread: SIGTERM keeps its current handler")
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

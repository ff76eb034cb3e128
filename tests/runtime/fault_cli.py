"""``runtime.webcam.main`` on the scripted :class:`FakeBackend`, as a subprocess for the signal and pipe tests.

``python -m tests.runtime.fault_cli [--load-delay S] [--window-delay S] -- WEBCAM_ARGS...``

The fake backend prints ``fault_cli: loading`` to stderr when the backend factory is called (before sleeping
``--load-delay``) and ``fault_cli: window N in progress`` when its video encoder starts window N (then it sleeps
``--window-delay``), so a test knows when to send its signal. ``--fail-window N`` raises ``ZeroDivisionError`` in
window N's video encoder (an unexpected stage exception).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from runtime import webcam
from runtime.config import BackendConfig
from tests.runtime.fakes import FakeBackend


def main(argv: list[str] | None = None) -> int:
    """Runs the webcam CLI with the fake backend; returns its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m tests.runtime.fault_cli")
    parser.add_argument("--load-delay", type=float, default=0.0)
    parser.add_argument("--window-delay", type=float, default=0.0)
    parser.add_argument("--fail-window", type=int, default=None)
    own = parser.parse_args(argv[:split])

    def in_progress(window_number: int) -> None:
        print(f"fault_cli: window {window_number} in progress", file=sys.stderr, flush=True)
        if window_number == own.fail_window:
            raise ZeroDivisionError(f"division by zero in window {window_number}")
        time.sleep(own.window_delay)

    def factory(cfg: BackendConfig, *, prefer_checkpoint: bool = False) -> FakeBackend:
        print("fault_cli: loading", file=sys.stderr, flush=True)
        time.sleep(own.load_delay)
        return FakeBackend(before_video=in_progress)

    webcam.backend_from_config = factory  # type: ignore[assignment]  # the one seam the CLI builds its backend at
    # As in a terminal: a test suite started as a background job (nohup, `cmd &`) hands its children SIGINT ignored,
    # and Python then installs no Ctrl-C handler; the CLI's Ctrl-C path is what the signal tests exercise.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return webcam.main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())

"""Signals that stop a run: SIGTERM (``kill``, ``scancel``), SIGINT (Ctrl-C) and SIGUSR2 (Slurm's
warning before a time limit) become ``Interrupted``, which the run records as resumable.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(BaseException):
    """A signal asked the run to stop: the run is resumable, not failed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM / SIGINT / SIGUSR2 raise Interrupted for the block — unless something else
    (submitit's requeue handler under Slurm) already handles that signal."""
    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler, None):
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)

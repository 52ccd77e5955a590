"""Ctrl-C taken at safe points.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives.
During training that is often inside torch's C++ (the autograd engine calling back into Python for
activation checkpointing, PEFT's hooks): a Python exception there can reach a C++ frame that cannot
pass it on, and the process aborts (``terminate called after throwing pybind11::error_already_set``)
instead of unwinding, releasing its lock and saying what was kept.

:func:`deferred_interrupts` replaces the handler for the duration of a block: the first Ctrl-C only
marks the block as interrupted, and :meth:`Interrupts.check`, called where Python is in charge (the
end of a training step, between sources), raises ``KeyboardInterrupt`` there. A second Ctrl-C
raises at once, for a user who would rather not wait for the step to end.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupts:
    """Whether a Ctrl-C is waiting for the next safe point."""

    def __init__(self) -> None:
        self.pending = False

    def check(self) -> None:
        """Raise the waiting ``KeyboardInterrupt``, if any: call where an exception unwinds cleanly."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextmanager
def deferred_interrupts(what: str = "the current step") -> Iterator[Interrupts]:
    """Within the block the first Ctrl-C waits for :meth:`Interrupts.check`; leaving the block checks.

    Only the main thread can own signal handlers, and only Python's own handler is replaced (a host
    such as a notebook kernel that installed its own keeps it): elsewhere the block changes nothing.
    """
    state = Interrupts()
    installed = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if not installed:
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if state.pending:  # asked twice: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        state.pending = True
        if sys.stderr.isatty():
            print(f"\ndposhap: stopping after {what} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
        state.check()
    finally:
        signal.signal(signal.SIGINT, previous)

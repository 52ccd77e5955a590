"""Ctrl-C deferred to safe points (dposhap.interrupts), with real signals sent to this process."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from dposhap.interrupts import deferred_interrupts


@pytest.fixture(autouse=True)
def python_ctrl_c_handler() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal: a process started in the background by a shell
    without job control inherits SIGINT ignored, and deferred_interrupts rightly leaves that alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_the_first_ctrl_c_waits_for_the_check_and_the_handler_is_restored() -> None:
    reached = False
    with pytest.raises(KeyboardInterrupt), deferred_interrupts() as interrupts:
        _ctrl_c()
        assert interrupts.pending  # nothing was raised where the signal arrived
        reached = True
        interrupts.check()
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_never_checked_is_raised_when_the_block_ends() -> None:
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), deferred_interrupts() as interrupts:
        _ctrl_c()
        _ctrl_c()
        pytest.fail("the second Ctrl-C should have raised")
    assert interrupts.pending


def test_a_block_without_ctrl_c_changes_nothing() -> None:
    with deferred_interrupts() as interrupts:
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_the_handler_is_left_alone() -> None:
    seen: list[object] = []

    def worker() -> None:
        with deferred_interrupts() as interrupts:
            seen.append(interrupts.pending)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [False] and signal.getsignal(signal.SIGINT) is signal.default_int_handler

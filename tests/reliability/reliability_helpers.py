"""Helpers of the reliability suite: the CLI as a subprocess, one-line error checks, snapshots of a run.

Every case drives ``python -m dposhap.cli`` through a bad input or a fault and checks three things:
the exit status, that stderr is one line without "Traceback", and that nothing on disk was damaged
or lost. The trained run is made once (a session fixture) and copied per test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The tiny toy run every test copies: three sources, 32 pairs each, two optimiser steps.
TRAIN_ARGS = [
    "--set",
    "toy.pairs_per_source=32",
    "--set",
    "toy.sources=['helpful','harmless','noisy']",
    "--set",
    "dpo.max_steps=2",
    "--set",
    "dpo.max_length=64",
    "--device",
    "cpu",
    "--quiet",
]
SOURCES = ["harmless", "helpful", "noisy"]


def cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    preexec_fn: Callable[[], Any] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``dposhap ARGS`` in a fresh process (one torch thread, the session's model cache)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dposhap.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
        preexec_fn=preexec_fn,
        cwd=cwd,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2, *needles: str) -> str:
    """Assert the exit status and a one-line stderr without a traceback that holds every needle."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, err[-3000:], result.stdout[-1000:])
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except locks and logs: what must not change."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock") and "logs" not in path.relative_to(root).parts:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out

"""The one owner of how many CPU threads dposhap's heavy calls run torch on.

Every entry point (training, valuation, the demo and reproduce recipes, the Python API's
:func:`dposhap.value_run` and :func:`dposhap.train_sources`) asks :func:`choose` and runs under
:func:`use`, which prints one line saying how many threads and why.

The rule (measured figures, and the machine they were measured on, in bench/RESULTS.md,
"Shared Gumbel noise, the cache API, threads"): a model below :data:`ONE_THREAD_MAX_PARAMETERS` parameters runs on one thread
whatever the batch: its matrix products are too small for a second thread to pay for its
synchronisation (the toy model decoded 64 coalitions in 0.76 s on one thread against 1.8-30 s
on two; SmolLM2-135M trained at 41 s a step on one thread against 72 s on two). A bigger model
runs on every core, except for a batch of a single row (one prompt, one coalition), whose
products stay small up to :data:`ONE_ROW_MAX_PARAMETERS`. On a GPU the CPU threads only feed
the device: torch's default is kept. ``--threads`` (CLI), ``threads =`` under a config's
``[model]`` (not part of the training hash), or ``threads=`` in the Python API override the rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = [
    "ONE_ROW_MAX_PARAMETERS",
    "ONE_THREAD_MAX_PARAMETERS",
    "ThreadChoice",
    "check_threads",
    "choose",
    "model_parameters",
    "use",
]

#: Below this many parameters a CPU run uses one thread (see the module's docstring).
ONE_THREAD_MAX_PARAMETERS = 200_000_000
#: A batch of one row keeps one thread up to this many parameters.
ONE_ROW_MAX_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch CPU threads to use, and why.

    Attributes
    ----------
    threads
        The intra-op thread count (>= 1).
    reason
        Why, in a few words (printed by :func:`use`).
    """

    threads: int
    reason: str

    def line(self) -> str:
        """The one line a run prints about its threads."""
        return f"torch threads: {self.threads} ({self.reason})"


def check_threads(threads: object, where: str = "threads") -> int | None:
    """``threads`` as given by a user: None (choose) or an int >= 1.

    Raises
    ------
    InvalidArgumentError
        Anything else.
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"{where} must be an integer >= 1 (or left unset to choose), got {threads!r}")
    return threads


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose(
    parameters: int | None,
    *,
    rows: int | None = None,
    device: str = "cpu",
    requested: int | None = None,
) -> ThreadChoice:
    """The thread count for a model of ``parameters`` parameters run on batches of ``rows`` rows.

    Parameters
    ----------
    parameters
        The model's parameter count (None: unknown, torch's default is kept).
    rows
        Rows per forward pass (sequences in a training batch, coalition rows when decoding), if
        known.
    device
        ``"cpu"`` or ``"cuda"``.
    requested
        A count the user set (``--threads``): it wins.

    Returns
    -------
    ThreadChoice
        The count and the reason.
    """
    requested = check_threads(requested)
    if requested is not None:
        return ThreadChoice(requested, "set by --threads / threads=")
    cores = _cores()
    if device != "cpu":
        return ThreadChoice(cores, f"the model runs on {device}; CPU threads only feed it")
    if parameters is None:
        return ThreadChoice(cores, "model size unknown: every core")
    size = f"{parameters / 1e6:.1f}M parameters"
    if parameters < ONE_THREAD_MAX_PARAMETERS:
        return ThreadChoice(
            1, f"{size} < {ONE_THREAD_MAX_PARAMETERS // 1_000_000}M: one thread beats several on small products"
        )
    if rows == 1 and parameters < ONE_ROW_MAX_PARAMETERS:
        return ThreadChoice(1, f"{size} on one row at a time: one thread")
    return ThreadChoice(cores, f"{size}: every core ({cores})")


def _safetensors_parameters(path: Path) -> int:
    """Parameters in a safetensors file, from its header (no weights read)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def model_parameters(location: str | Path) -> int | None:
    """A local model folder's parameter count, from its safetensors headers (or its weight files'
    sizes at 4 bytes a parameter); None for a hub id or a folder without weights."""
    root = Path(location)
    if not root.is_dir():
        return None
    tensors = sorted(root.glob("*.safetensors"))
    try:
        if tensors:
            return sum(_safetensors_parameters(p) for p in tensors)
    except (OSError, ValueError, KeyError, struct.error):
        pass
    weights = [p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file()]
    return sum(p.stat().st_size for p in weights) // 4 if weights else None


@contextlib.contextmanager
def use(choice: ThreadChoice, *, say: bool = True) -> Iterator[ThreadChoice]:
    """Run the body with ``choice.threads`` torch intra-op threads (restored afterwards),
    printing :meth:`ThreadChoice.line` first when ``say``."""
    import torch

    if say:
        print(choice.line(), flush=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(previous)

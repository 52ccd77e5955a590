"""The scale benchmark: a margin game with many sources and many held-out pairs.

Ours evaluates it natively (``dposhap.MarginGame``, incremental masked sums along each
permutation); the peers get the same game as a vectorised numpy callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from games import preference_margins

from dposhap.testing import margin_utility


def scale_margins(n: int, m: int, seed: int = 2024) -> np.ndarray:
    """The ``[n, m]`` float64 margin matrix of the scale benchmark."""
    return preference_margins(n, m, np.random.default_rng(seed))


def accuracy_callable(margins: np.ndarray, chunk: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Preference accuracy as a numpy callable ``bool[b, n] -> float[b]``.

    A batch is evaluated as a dense product ``X @ M`` in chunks of ``chunk`` rows (BLAS
    gemm, the fastest plain-numpy route for many rows); a single coalition is a gemv.
    Ties count 1/2.
    """
    return margin_utility(np.ascontiguousarray(margins, dtype=np.float64), "accuracy", chunk=chunk)


@dataclass
class CappedTiming:
    """Seconds for ``target`` permutations, measured or extrapolated from fewer."""

    seconds: float  # for the target number of permutations
    permutations_run: int
    seconds_run: float
    evaluations_run: int
    seconds_in_utility_run: float
    extrapolated: bool

    @property
    def label(self) -> str:
        perms = f"{self.permutations_run} permutation{'s' if self.permutations_run != 1 else ''}"
        if self.extrapolated:
            return f"extrapolated from {perms}"
        return f"measured ({perms})"


def run_capped(
    run: Callable[[int], tuple[int, float]], target: int, cap_seconds: float, probe: int = 1
) -> CappedTiming:
    """Time ``run(p)`` for ``target`` permutations.

    ``run(p)`` runs ``p`` permutations and returns ``(evaluations made, seconds spent
    inside the utility)``.

    First runs ``probe`` permutations. If the full run is predicted to fit in
    ``cap_seconds`` it is run; otherwise as many permutations as fit in the cap are run
    and the time is extrapolated linearly to ``target``.
    """
    t0 = time.perf_counter()
    evals, inside = run(probe)
    t_probe = time.perf_counter() - t0
    per_perm = t_probe / probe
    if probe >= target:
        return CappedTiming(t_probe, probe, t_probe, evals, inside, extrapolated=False)
    # 0.8: later permutations often run a little slower than the probe
    k = target if per_perm * target <= cap_seconds else int(0.8 * cap_seconds / max(per_perm, 1e-9))
    if k <= probe:
        return CappedTiming(per_perm * target, probe, t_probe, evals, inside, extrapolated=True)
    t0 = time.perf_counter()
    evals, inside = run(k)
    t_k = time.perf_counter() - t0
    return CappedTiming(t_k / k * target, k, t_k, evals, inside, extrapolated=k < target)

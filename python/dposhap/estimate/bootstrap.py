"""Evaluation noise: values bootstrapped over the items a utility averages, and what they can separate.

A utility such as preference accuracy or mean reward is a mean over a finite sample of items
(held-out pairs, prompts). Another sample would give other values, and the estimator's standard
error does not see that. Here every bootstrap replicate resamples the items once (multinomial
counts, the same resample for every coalition: paired, which common random numbers make cheap)
and recomputes the values with the estimator of the original run on exactly the coalitions that
run absorbed (:class:`~dposhap.ShapleyEstimator` with ``max_units``), so nothing is evaluated
again: a native margin game is reweighted in Rust (:meth:`dposhap.MarginGame.reweighted`), any
other item utility reweights the per-item scores it recorded (:class:`ItemScores`).

The spread of the replicates is the evaluation standard error of each value; combined with the
estimator's standard error it gives the total. The paired replicates also say, for every pair of
sources, how often one beats the other and whether the difference is significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..validate import check_int

__all__ = [
    "Z95",
    "Bootstrap",
    "PairComparison",
    "bootstrap_weights",
    "compare_pairs",
    "ranking_groups",
]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def bootstrap_weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resample counts ``[n_boot, n_items]``: each row draws ``n_items`` items with
    replacement (the same row is applied to every coalition)."""
    check_int("n_items", n_items, minimum=1)
    check_int("n_boot", n_boot, minimum=2)
    rng = np.random.default_rng([int(seed) % 2**63, 0xB007])
    counts = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)
    return counts.astype(np.float64)


@dataclass(frozen=True)
class PairComparison:
    """Two sources compared on one objective.

    Attributes
    ----------
    first, second
        The sources, ``first`` the higher valued.
    difference
        ``value(first) - value(second)``.
    stderr
        Standard error of the difference: the paired bootstrap's spread of the difference
        combined with both values' estimator standard errors.
    share
        Share of bootstrap replicates in which ``first`` beats ``second`` (ties count half).
    significant
        Whether the difference is non-zero at 95% (``difference > 1.96 * stderr``).
    """

    first: str
    second: str
    difference: float
    stderr: float
    share: float
    significant: bool

    def to_json(self) -> dict[str, Any]:
        """Plain-Python form."""
        return {
            "first": self.first,
            "second": self.second,
            "difference": float(self.difference),
            "stderr": float(self.stderr),
            "share": float(self.share),
            "significant": bool(self.significant),
        }


def compare_pairs(
    names: Sequence[str], values: np.ndarray, est_stderr: np.ndarray, replicates: np.ndarray | None
) -> list[PairComparison]:
    """Every pair of players compared on one objective, the higher-valued first.

    Parameters
    ----------
    names
        One per player.
    values, est_stderr
        ``[n]``: the values and their estimator standard errors.
    replicates
        ``[B, n]`` paired bootstrap replicates over items, or None (estimator error only).

    Returns
    -------
    list[PairComparison]
        In order of the players' values (``i < j`` by rank), ``n (n - 1) / 2`` entries.
    """
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(est_stderr, dtype=np.float64)
    order = np.argsort(-v, kind="stable")
    # differences at rounding level are ties (identical sources summed in another order)
    scale = max(1.0, float(np.abs(v).max()) if v.size else 1.0)
    if replicates is not None and replicates.size:
        scale = max(scale, float(np.abs(replicates).max()))
    tiny = 1e-12 * scale
    out = []
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            diff = float(v[a] - v[b])
            var = float(e[a] ** 2 + e[b] ** 2)
            share = float("nan")
            if replicates is not None:
                d = replicates[:, a] - replicates[:, b]
                var += float(d.var(ddof=1)) if len(d) > 1 else 0.0
                share = float(((d > tiny).sum() + 0.5 * (np.abs(d) <= tiny).sum()) / len(d))
            se = math.sqrt(max(var, 0.0))
            out.append(PairComparison(names[a], names[b], diff, se, share, bool(diff > max(Z95 * se, tiny))))
    return out


def ranking_groups(names: Sequence[str], values: np.ndarray, comparisons: Sequence[PairComparison]) -> list[list[str]]:
    """The players in order of value, grouped where consecutive ones cannot be separated at 95%.

    A new group starts at a player that is significantly below the previous one; within a group
    the order is what the point values say and nothing more.
    """
    order = [names[i] for i in np.argsort(-np.asarray(values), kind="stable")]
    sig = {(c.first, c.second): c.significant for c in comparisons}
    groups: list[list[str]] = []
    for name in order:
        if groups and not sig.get((groups[-1][-1], name), False):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


@dataclass
class Bootstrap:
    """Bootstrap replicates of a valuation over its evaluation items.

    Attributes
    ----------
    replicates
        ``[n_boot, n, k]``: the values recomputed under each resample of the items.
    n_items
        Items the utility averages (held-out pairs, prompts).
    seed
        Seed of the resampling.
    new_evaluations
        Coalitions the replay had to evaluate that the run had not (0 for samplers whose plan
        does not depend on the utilities).
    """

    replicates: np.ndarray
    n_items: int
    seed: int
    new_evaluations: int = 0

    @property
    def n_boot(self) -> int:
        """Number of replicates."""
        return int(self.replicates.shape[0])

    @property
    def stderr(self) -> np.ndarray:
        """Evaluation standard error of each value ``[n, k]``."""
        return self.replicates.std(axis=0, ddof=1)

    def halving_items(self) -> int:
        """Items needed to halve the evaluation error (it falls as ``1 / sqrt(items)``): ``4 m``."""
        return 4 * self.n_items

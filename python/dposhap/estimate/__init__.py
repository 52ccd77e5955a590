"""The estimator's Python face: Shapley and Banzhaf values, the bootstrap over items, interactions.

- :mod:`.driver`: :func:`shapley` / :func:`banzhaf` and the ask/tell estimators, batched through
  the Rust engine;
- :mod:`.bootstrap`: evaluation noise, values bootstrapped over the items a utility averages, and
  the paired comparisons and rankings they allow;
- :mod:`.interactions`: the pairwise Shapley interaction index (numbers only; the heatmap is
  :func:`dposhap.report.plot_interactions`).

Everything here works on games (:mod:`dposhap.core`); nothing imports a model, the run directory
or the report.
"""

from __future__ import annotations

from .bootstrap import Z95, Bootstrap, PairComparison, bootstrap_weights, compare_pairs, ranking_groups
from .driver import (
    BanzhafEstimator,
    ShapleyEstimator,
    ShapleyResult,
    attach_bootstrap,
    banzhaf,
    bootstrap,
    methods,
    shapley,
)
from .interactions import (
    InteractionResult,
    interactions_exact,
    interactions_from_samples,
    kernel_sample,
    pairwise_interactions,
)

__all__ = [
    "Z95",
    "BanzhafEstimator",
    "Bootstrap",
    "InteractionResult",
    "PairComparison",
    "ShapleyEstimator",
    "ShapleyResult",
    "attach_bootstrap",
    "banzhaf",
    "bootstrap",
    "bootstrap_weights",
    "compare_pairs",
    "interactions_exact",
    "interactions_from_samples",
    "kernel_sample",
    "methods",
    "pairwise_interactions",
    "ranking_groups",
    "shapley",
]

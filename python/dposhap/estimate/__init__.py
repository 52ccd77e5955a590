"""The estimator's Python face: Shapley and Banzhaf values, the bootstrap over items, interactions.

- :mod:`.driver`: :func:`shapley` / :func:`banzhaf`: the arguments checked, the estimator run, the
  bootstrap added;
- :mod:`.asktell`: the ask/tell estimators over the Rust engine, and :func:`~.asktell.drive`, the
  loop that feeds one a Python utility;
- :mod:`.result`: :class:`ShapleyResult`, the values with their standard errors;
- :mod:`.control`: control variates, a cheap game with known values run on the same coalitions;
- :mod:`.replay`: :func:`bootstrap`, a finished run's coalitions replayed under resampled items;
- :mod:`.bootstrap`: evaluation noise, values bootstrapped over the items a utility averages, and
  the paired comparisons and rankings they allow;
- :mod:`.interactions`: the pairwise Shapley interaction index (numbers only; the heatmap is
  :func:`dposhap.report.plot_interactions`).

Everything here works on games (:mod:`dposhap.core`); nothing imports a model, the run directory
or the report.
"""

from __future__ import annotations

from .asktell import BanzhafEstimator, ShapleyEstimator, methods
from .bootstrap import Z95, Bootstrap, PairComparison, bootstrap_weights, compare_pairs, ranking_groups
from .driver import banzhaf, shapley
from .interactions import (
    InteractionResult,
    interactions_exact,
    interactions_from_samples,
    kernel_sample,
    pairwise_interactions,
)

# after .bootstrap (the module) was imported: the package's name ``bootstrap`` is the function
from .replay import attach_bootstrap, bootstrap
from .result import ShapleyResult

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

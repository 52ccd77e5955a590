"""Deprecated module name: the Shapley driver is :mod:`dposhap.estimate` (``dposhap.shapley`` the
function, and the names below, keep working)."""

from __future__ import annotations

from .estimate.driver import (
    DEFAULT_BATCH,
    MAX_AUTO_CONTROL_PLAYERS,
    MAX_NATIVE_EXACT_PLAYERS,
    BanzhafEstimator,
    BanzhafMethod,
    MarginGame,
    Semivalue,
    ShapleyEstimator,
    ShapleyMethod,
    ShapleyResult,
    Utility,
    attach_bootstrap,
    banzhaf,
    bootstrap,
    methods,
    shapley,
)

__all__ = [
    "DEFAULT_BATCH",
    "MAX_AUTO_CONTROL_PLAYERS",
    "MAX_NATIVE_EXACT_PLAYERS",
    "BanzhafEstimator",
    "BanzhafMethod",
    "MarginGame",
    "Semivalue",
    "ShapleyEstimator",
    "ShapleyMethod",
    "ShapleyResult",
    "Utility",
    "attach_bootstrap",
    "banzhaf",
    "bootstrap",
    "methods",
    "shapley",
]

"""Deprecated module name: the Shapley driver is :mod:`dposhap.estimate` (``dposhap.shapley`` the
function, and the names below, keep working)."""

from __future__ import annotations

from .core import MarginGame
from .estimate.asktell import (
    DEFAULT_BATCH,
    BanzhafEstimator,
    BanzhafMethod,
    Semivalue,
    ShapleyEstimator,
    ShapleyMethod,
    methods,
)
from .estimate.control import MAX_AUTO_CONTROL_PLAYERS, MAX_NATIVE_EXACT_PLAYERS
from .estimate.driver import Utility, banzhaf, shapley
from .estimate.replay import attach_bootstrap, bootstrap
from .estimate.result import ShapleyResult

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

"""Deprecated module name: item scores are in :mod:`dposhap.core`, the bootstrap over items in
:mod:`dposhap.estimate` (the names below keep working)."""

from __future__ import annotations

from .core import ItemGame, ItemScores, ItemUtility
from .estimate.bootstrap import Z95, Bootstrap, PairComparison, bootstrap_weights, compare_pairs, ranking_groups

__all__ = [
    "Z95",
    "Bootstrap",
    "ItemGame",
    "ItemScores",
    "ItemUtility",
    "PairComparison",
    "bootstrap_weights",
    "compare_pairs",
    "ranking_groups",
]

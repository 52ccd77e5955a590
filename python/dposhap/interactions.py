"""Deprecated module name: the interaction indices are in :mod:`dposhap.estimate`, their heatmap in
:mod:`dposhap.report` (the names below keep working)."""

from __future__ import annotations

from .estimate.interactions import (
    MAX_EXACT_PLAYERS,
    MAX_TABLE_PLAYERS,
    InteractionResult,
    interactions_exact,
    interactions_from_samples,
    kernel_sample,
    pairwise_interactions,
)
from .report import plot_interactions

__all__ = [
    "MAX_EXACT_PLAYERS",
    "MAX_TABLE_PLAYERS",
    "InteractionResult",
    "interactions_exact",
    "interactions_from_samples",
    "kernel_sample",
    "pairwise_interactions",
    "plot_interactions",
]

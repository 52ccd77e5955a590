"""Acting on the values: choose the sources (and their weights) to train on, and prove it by retraining."""

from .select import (
    EXHAUSTIVE_SOURCES,
    GRID,
    N_BOOT,
    RUNNERS_UP,
    VERIFY_HELDOUT,
    Constraint,
    Goal,
    GoalRanking,
    Objectives,
    SearchResult,
    Selection,
    margin_weights_reference,
    optimise_margin_weights,
    parse_goal,
    search_subsets,
    select_run,
)

__all__ = [
    "EXHAUSTIVE_SOURCES",
    "GRID",
    "N_BOOT",
    "RUNNERS_UP",
    "VERIFY_HELDOUT",
    "Constraint",
    "Goal",
    "GoalRanking",
    "Objectives",
    "SearchResult",
    "Selection",
    "margin_weights_reference",
    "optimise_margin_weights",
    "parse_goal",
    "search_subsets",
    "select_run",
]

"""Acting on the values: choose the sources (and their weights) to train on, and prove it by retraining.

:func:`select_run` searches the coalitions of a trained run for the one whose composed model
maximises a goal (one objective, a stated weighted sum of objectives, either subject to other
objectives not falling below a level), with no new training: every coalition's utility is one
masked sum (margin games) or one composed evaluation, read through the run's cache
(:func:`dposhap.valuation.open_utility`), so no coalition is evaluated twice.

* **Subset.** Exhaustive over all ``2^n`` coalitions up to :data:`EXHAUSTIVE_SOURCES` sources.
  Beyond, a greedy search: forward from the empty coalition (add the source that improves the
  goal most, until none does) and backward from all sources (remove the one whose removal
  improves it most), then a local search from the better of the two (flip the one source that
  improves it most, until none does). Beside it, the rule people use: drop every source whose
  Shapley value on the goal is significantly negative (value + 1.96 total standard errors < 0).
  The search ranks coalitions by their predicted goal alone; the choice leaves all sources only
  when the predicted gain over them is significant (its 95% paired bootstrap interval over the
  evaluation items lies above 0) or all sources break the constraints (:func:`decide_change`). On
  a flat game, where every coalition is within noise of all sources, all sources are kept.
* **Weights.** Per-source weights in ``[0, w_max]``. A margin game is linear in the weights
  inside the game (``m_S(w) = sum_i w_i m_i``): ``loglik`` (mean log sigmoid, concave in ``w``)
  by projected gradient ascent with backtracking, which reaches the global optimum; ``accuracy``
  (piecewise constant in each ``w_i``) by coordinate ascent with an exact line search over the
  breakpoints of each coordinate. Both run natively in Rust over the margins matrix
  (:func:`optimise_margin_weights`; :func:`margin_weights_reference` is the numpy reference).
  ``likelihood`` and ``generation`` take the weights into the compose kernels: a coordinate search over a small grid of weights, one
  composed evaluation per grid point.
* **Verify.** Train one adapter on the union of the chosen sources' training pairs (weights as
  sampling rates) and one on all sources, with the run's settings (:func:`dposhap.train_sources`
  into ``RUN/select/``, resumable), evaluate both with the same utility on the same evaluation
  set, and report the measured gain with its bootstrap standard error beside the predicted one.

The result is written to ``RUN/selection.json``; :func:`dposhap.report.selection_figure` draws it.
"""

from .goal import Constraint, Goal, GoalRanking, Objectives, parse_goal
from .search import EXHAUSTIVE_SOURCES, SearchResult, search_subsets
from .select import N_BOOT, RUNNERS_UP, Selection, decide_change, select_run
from .verify import VERIFY_HELDOUT
from .weights import GRID, margin_weights_reference, optimise_margin_weights

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
    "decide_change",
    "margin_weights_reference",
    "optimise_margin_weights",
    "parse_goal",
    "search_subsets",
    "select_run",
]

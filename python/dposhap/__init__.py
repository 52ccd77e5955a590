"""dposhap: what each source of preference data is worth to a DPO fine-tune.

The public API lives here; the Rust engine (``dposhap._core``) is private.
"""

from . import errors
from ._core import __version__ as __version__  # the one version: the Rust workspace's, which the wheel carries too
from .core import ItemGame, ItemScores, MarginGame
from .estimate import InteractionResult, pairwise_interactions
from .selection import Selection, select_run

# through the old module name, so that importing dposhap.shapley later cannot rebind the function's name
from .shapley import BanzhafEstimator, ShapleyEstimator, ShapleyResult, banzhaf, methods, shapley
from .train import check_training, train_sources
from .valuation import value_run

__all__ = [
    "BanzhafEstimator",
    "InteractionResult",
    "ItemGame",
    "ItemScores",
    "MarginGame",
    "Selection",
    "ShapleyEstimator",
    "ShapleyResult",
    "banzhaf",
    "check_training",
    "errors",
    "methods",
    "pairwise_interactions",
    "select_run",
    "shapley",
    "train_sources",
    "value_run",
]

"""dposhap: what each source of preference data is worth to a DPO fine-tune.

The public API lives here; the Rust engine (``dposhap._core``) is private.
"""

from . import errors
from .games import MarginGame
from .shapley import BanzhafEstimator, ShapleyEstimator, ShapleyResult, banzhaf, methods, shapley

__version__ = "0.1.0"

from .train import train_sources  # noqa: E402 (the manifest records __version__)

__all__ = [
    "BanzhafEstimator",
    "MarginGame",
    "ShapleyEstimator",
    "ShapleyResult",
    "banzhaf",
    "errors",
    "methods",
    "shapley",
    "train_sources",
]

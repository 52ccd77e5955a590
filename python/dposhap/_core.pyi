"""Type stubs of the Rust extension (private; use the `dposhap` API).

Checked against the compiled module by ``python -m mypy.stubtest dposhap._core``.
"""

from typing import Self, TypedDict, final, type_check_only

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__all__ = ["Engine", "MarginGame", "methods", "optimise_margin_weights", "MAX_EXACT_PLAYERS", "__version__"]

MAX_EXACT_PLAYERS: int
__version__: str

def methods(semivalue: str) -> list[str]:
    """Names of the methods accepted for a semivalue (``"shapley"`` or ``"banzhaf"``)."""

def optimise_margin_weights(
    margins: npt.NDArray[np.float64],
    kind: str,
    avg: npt.NDArray[np.float64],
    coef: npt.NDArray[np.float64],
    start: npt.NDArray[np.float64],
    w_max: float,
    constrained: list[int],
    levels: list[float],
    max_iter: int = 500,
) -> npt.NDArray[np.float64]:
    """Per-source weights in ``[0, w_max]`` maximising ``sum_k coef_k sum_j avg[k, j] f(sum_i w_i
    margins[i, j])`` subject to objective ``c`` >= its level (GIL released); ``kind`` ``"accuracy"``
    (coordinate ascent) or ``"logsigmoid"`` (projected gradient ascent)."""

@type_check_only
class Snapshot(TypedDict):
    """The estimate of a run at one moment, as :meth:`Engine.result` returns it."""

    values: npt.NDArray[np.float64]  # [n, k]
    stderr: npt.NDArray[np.float64]  # [n, k]
    control_coef: npt.NDArray[np.float64]  # [n, k]
    n_evaluations: int
    n_units: int
    method: str
    stop: str  # "running", "budget", "tol" or "complete"
    done: bool

@final
class Engine:
    """The ask/tell estimation engine (see `dposhap.ShapleyEstimator` for the documented API)."""

    def __new__(
        cls,
        n_players: int,
        method: str = "auto",
        semivalue: str = "shapley",
        seed: int = 0,
        budget: int | None = None,
        tol: float | None = None,
        pilot: int | None = None,
        control_exact: npt.NDArray[np.float64] | None = None,
        max_units: int | None = None,
    ) -> Self: ...
    def ask(self, max_batch: int) -> npt.NDArray[np.bool_]:
        """Up to `max_batch` distinct coalitions to evaluate, as a bool array `[b, n]`."""
    def tell(self, coalitions: npt.NDArray[np.bool_], values: npt.NDArray[np.float64], k: int) -> None:
        """Hand back utilities: `values` is `[b, k + control_width]`, `k` objectives first."""
    def run_native(
        self, game: MarginGame, control: MarginGame | None = None, batch: int | None = None
    ) -> list[tuple[int, npt.NDArray[np.float64]]]:
        """Run to completion on a native game without calling back into Python; returns the
        estimate after each batch as `(n_evaluations, values [n, k])`."""
    def result(self) -> Snapshot | None:
        """The current estimate as a dict, or None before any utility was absorbed."""
    def snapshot(self) -> Snapshot | None:
        """A cheaper estimate for progress reports (may reuse earlier cross-validation)."""
    @property
    def done(self) -> bool: ...
    @property
    def n_evaluations(self) -> int: ...
    @property
    def n_outstanding(self) -> int: ...
    @property
    def n_players(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def control_width(self) -> int: ...

@disjoint_base
class MarginGame:
    """Native margin game: ``v(S) = mean_j f(sum_{i in S} margins[i, j])``.

    Parameters
    ----------
    margins
        Float array ``[n_sources, n_pairs]`` of per-source DPO margins on held-out pairs.
    kind
        ``"accuracy"`` (mean of 1[sum > 0], ties 1/2), ``"logsigmoid"`` (mean log sigmoid(sum))
        or ``"mean"`` (mean sum; additive).
    """

    def __new__(cls, margins: npt.NDArray[np.float64], kind: str) -> Self: ...
    def __call__(self, coalitions: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        """Utilities of a batch of coalitions `[b, n]` (evaluated in parallel, GIL released):
        `[b]`, or `[b, n_outputs]` for a reweighted game."""
    def exact(self, semivalue: str = "shapley") -> npt.NDArray[np.float64]:
        """Exact semivalues by Gray-code enumeration of all 2^n coalitions (GIL released):
        `[n]`, or `[n, n_outputs]` for a reweighted game."""
    def reweighted(self, weights: npt.NDArray[np.float64]) -> MarginGame:
        """The game with its pairs reweighted: one output per row of `weights` `[r, n_pairs]`
        (non-negative, each row with a positive sum; rows are normalised to sum to one)."""
    def per_pair(self) -> MarginGame:
        """The game with one output per held-out pair (the pair's term), for values per pair."""
    @property
    def n_outputs(self) -> int:
        """Outputs per coalition: 1, or the rows of the weights of a reweighted game."""
    def additive_values(self) -> npt.NDArray[np.float64] | None:
        """Closed-form Shapley values when the game is additive (kind "mean"), else None."""
    @property
    def n_players(self) -> int: ...
    @property
    def n_pairs(self) -> int: ...
    @property
    def kind(self) -> str: ...

"""Games: what every estimator evaluates, and the native margin game evaluated in Rust."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from .._core import MarginGame as NativeGame  # the Rust base class of every native game
from ..errors import InvalidArgumentError

#: A game: a function of a bool coalition batch ``[b, n]`` returning utilities ``[b]`` or ``[b, k]``
#: (checked by :func:`dposhap.core.utility_values`), or a native game evaluated in Rust.
Game = Callable[[np.ndarray], Any] | NativeGame

MarginKind = Literal["accuracy", "logsigmoid", "mean"]


class MarginGame(NativeGame):
    """The DPO margin game ``v(S) = mean_j f(sum_{i in S} margins[i, j])``.

    On held-out pairs, the coalition's DPO margin is exactly the sum of its members' margins
    (docs/design.md §1), so preference accuracy and held-out log-likelihood of any coalition cost a
    masked sum. Passed to :func:`dposhap.shapley`, the game is evaluated in Rust: along each
    permutation incrementally (one source added costs O(m)), in parallel, with the GIL released;
    exact values come from a Gray-code enumeration.

    Parameters
    ----------
    margins
        Numeric array ``[n_sources, n_pairs]``: ``margins[i, j] = beta * ((log pi_i(y_w|x) -
        log pi_ref(y_w|x)) - (log pi_i(y_l|x) - log pi_ref(y_l|x)))`` on held-out pair ``j``.
    kind
        ``"accuracy"`` (mean of 1[sum > 0], ties count 1/2), ``"logsigmoid"`` (mean
        log sigmoid(sum), the held-out DPO log-likelihood) or ``"mean"`` (mean summed margin,
        additive: its Shapley values are the mean margins, which makes it a free control game).

    Examples
    --------
    >>> import numpy as np, dposhap
    >>> game = dposhap.MarginGame(np.array([[1.0, -1.0], [0.5, 2.0]]), "accuracy")
    >>> game(np.array([[True, False], [True, True]])).tolist()
    [0.5, 1.0]
    """

    def __new__(cls, margins: np.ndarray, kind: MarginKind = "accuracy") -> MarginGame:
        arr = np.asarray(margins)
        if arr.ndim != 2:
            raise InvalidArgumentError(
                f"margins must be a 2-d array [n_sources, n_pairs], got {arr.ndim} dimension(s) with shape {arr.shape}"
            )
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InvalidArgumentError(f"margins must be real numbers, got dtype {arr.dtype}")
        return super().__new__(cls, np.ascontiguousarray(arr, dtype=np.float64), kind)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Utilities of a batch of coalitions ``[b, n]`` (bool, or 0/1 integers)."""
        c = np.asarray(coalitions)
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2 or c.shape[1] != self.n_players:
            raise InvalidArgumentError(f"coalitions must be a bool array [b, {self.n_players}], got shape {c.shape}")
        if c.dtype != bool:
            if not np.isin(c, (0, 1)).all():
                raise InvalidArgumentError("coalitions must be bool or 0/1 membership values")
            c = c.astype(bool)
        return super().__call__(np.ascontiguousarray(c))

    def __repr__(self) -> str:
        return f"MarginGame(n_sources={self.n_players}, n_pairs={self.n_pairs}, kind={self.kind!r})"


__all__ = ["Game", "MarginGame", "MarginKind", "NativeGame"]

"""The result of a valuation: every player's value with its standard errors, and how the run went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .bootstrap import PairComparison, compare_pairs

__all__ = ["ShapleyResult"]


@dataclass
class ShapleyResult:
    """Values of every player, with standard errors.

    Attributes
    ----------
    values
        ``[n]`` for a scalar utility, ``[n, k]`` for ``k`` objectives.
    stderr
        Standard error of each value (same shape; 0 for exact enumeration).
    n_evaluations
        Distinct coalitions whose utility was computed.
    method
        The method that ran (``auto`` resolved).
    names
        One name per player.
    semivalue
        ``"shapley"`` or ``"banzhaf"``.
    stop
        Why the run ended: ``"budget"``, ``"tol"``, ``"complete"`` or ``"running"``.
    seed
        The seed of the coalition sampler.
    control_coef
        The control-variate coefficient per value (zeros without a control game).
    history
        ``(n_evaluations, values)`` as the run went (every 25% more evaluations, and at the
        end), for convergence plots.
    seconds
        Wall time of the run.
    budget
        The evaluation budget the run was given (None: none).
    n_units
        Units of work the estimator absorbed (permutations, stratum samples, ...); with the
        seed, method and budget they fix the coalitions the values rest on.
    eval_stderr
        Evaluation standard error of each value (same shape as ``values``): the spread of the
        values over bootstrap resamples of the items the utility averages (``n_boot``); None
        when the utility is not a mean over items or no bootstrap ran.
    replicates
        The bootstrap replicates ``[n_boot, n]`` or ``[n_boot, n, k]``, or None.
    n_items
        Items the utility averages (held-out pairs, prompts), when known.
    """

    values: np.ndarray
    stderr: np.ndarray
    n_evaluations: int
    method: str
    names: list[str]
    semivalue: str = "shapley"
    stop: str = "complete"
    seed: int = 0
    control_coef: np.ndarray | None = None
    history: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    budget: int | None = None
    n_units: int = 0
    eval_stderr: np.ndarray | None = None
    replicates: np.ndarray | None = field(default=None, repr=False)
    n_items: int | None = None

    @property
    def n_players(self) -> int:
        return len(self.names)

    @property
    def total_stderr(self) -> np.ndarray:
        """Standard error of each value from both sources of error: the estimator's sampling of
        coalitions and the evaluation items (``sqrt(stderr^2 + eval_stderr^2)``; the estimator's
        alone when no bootstrap ran)."""
        est = np.asarray(self.stderr, dtype=np.float64)
        if self.eval_stderr is None:
            return est
        return np.sqrt(est**2 + np.asarray(self.eval_stderr, dtype=np.float64) ** 2)

    def comparisons(self, objective: int = 0) -> list[PairComparison]:
        """Every pair of players compared on one objective (:func:`dposhap.estimate.compare_pairs`):
        the difference, its standard error (estimator and, with a bootstrap, evaluation noise,
        paired), the share of replicates in which the higher one wins, and whether it is
        significant at 95%."""
        values = np.asarray(self.values, dtype=np.float64)
        est = np.asarray(self.stderr, dtype=np.float64)
        reps = None if self.replicates is None else np.asarray(self.replicates, dtype=np.float64)
        if values.ndim == 2:
            values, est = values[:, objective], est[:, objective]
            reps = None if reps is None else reps[:, :, objective]
        elif objective != 0:
            raise InvalidArgumentError(f"the values have one objective; objective={objective} does not exist")
        return compare_pairs(self.names, values, est, reps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, ready for ``json.dump``."""
        return {
            "semivalue": self.semivalue,
            "method": self.method,
            "n_evaluations": int(self.n_evaluations),
            "stop": self.stop,
            "seed": int(self.seed),
            "seconds": float(self.seconds),
            "names": list(self.names),
            "values": np.asarray(self.values).tolist(),
            "stderr": np.asarray(self.stderr).tolist(),
            "eval_stderr": None if self.eval_stderr is None else np.asarray(self.eval_stderr).tolist(),
            "total_stderr": np.asarray(self.total_stderr).tolist(),
            "n_items": self.n_items,
        }

    def __repr__(self) -> str:
        vals = np.asarray(self.values)
        errs = np.asarray(self.stderr)
        evals = None if self.eval_stderr is None else np.asarray(self.eval_stderr)
        if vals.ndim == 1:
            vals, errs = vals[:, None], errs[:, None]
            evals = None if evals is None else evals[:, None]
        k = vals.shape[1]
        width = max([6] + [len(n) for n in self.names])
        head = (
            f"{self.semivalue.capitalize()} values ({self.method}, {self.n_evaluations} evaluations, stop: {self.stop})"
        )
        if evals is not None:
            n_boot = 0 if self.replicates is None else len(self.replicates)
            head += f"; ± estimator ± evaluation error ({n_boot} bootstrap replicates over {self.n_items} items)"
        cols = "".join(
            f"{'value' if k == 1 else f'value[{j}]':>14}{'± est':>11}" + ("" if evals is None else f"{'± eval':>11}")
            for j in range(k)
        )
        lines = [head, f"{'player':<{width}}{cols}"]
        for i, name in enumerate(self.names):
            cells = "".join(
                f"{vals[i, j]:>14.6g}{errs[i, j]:>11.3g}" + ("" if evals is None else f"{evals[i, j]:>11.3g}")
                for j in range(k)
            )
            lines.append(f"{name:<{width}}{cells}")
        return "\n".join(lines)

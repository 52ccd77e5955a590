"""The bootstrap of a finished valuation: the coalitions its run absorbed, replayed under resampled items.

Each replicate reweights the items the utility averages and recomputes the values with the
run's estimator, seed and budget, stopped after the units of work the run absorbed; the
resampling itself and what the replicates allow (pairwise comparisons, ranking groups) are
:mod:`.bootstrap`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import ItemScores, ItemUtility, NativeGame
from ..errors import InvalidArgumentError
from .asktell import DEFAULT_BATCH, BanzhafEstimator, Semivalue, ShapleyEstimator
from .bootstrap import Bootstrap, bootstrap_weights
from .control import control_values
from .result import ShapleyResult

__all__ = ["attach_bootstrap", "bootstrap"]


def bootstrap(
    utility: Any,
    result: ShapleyResult,
    *,
    n_boot: int = 200,
    seed: int = 0,
    control: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Bootstrap:
    """Bootstrap a finished valuation over the items its utility averages.

    Each replicate resamples the items (multinomial counts, the same resample for every
    coalition) and recomputes the values with ``result``'s method, seed and budget on the
    coalitions its run absorbed (``result.n_units``). A native :class:`MarginGame` is
    reweighted in Rust; an :class:`~dposhap.core.ItemUtility` (an :class:`ItemGame`, or
    a utility read through the run cache that recorded per-item scores) reweights its per-item
    scores. All replicates run at once, as extra objectives of one estimator.

    Parameters
    ----------
    utility
        The utility the result was computed from.
    result
        Its result.
    n_boot
        Replicates (at least 2).
    seed
        Seed of the resampling.
    control
        The control game the run used, if any.
    batch_size
        Coalitions per call of an item utility.
    progress
        Show a progress bar.

    Returns
    -------
    Bootstrap
        ``replicates [n_boot, n, k]`` and the evaluation standard errors.
    """
    n = result.n_players
    semivalue: Semivalue = "shapley" if result.semivalue == "shapley" else "banzhaf"
    cls = ShapleyEstimator if semivalue == "shapley" else BanzhafEstimator
    game_c, control_exact = (None, None) if control is None else control_values(control, n, semivalue)
    if isinstance(utility, NativeGame):
        m = int(utility.n_pairs)
        weights = bootstrap_weights(m, n_boot, seed)
        if result.method == "exact":
            # values are linear in the game: the values per pair [n, m], then one product
            per_pair = np.asarray(utility.per_pair().exact(semivalue)).reshape(n, m)
            reps = per_pair @ (weights / weights.sum(axis=1, keepdims=True)).T
        else:
            game = utility.reweighted(weights)
            est = cls(
                n,
                result.method,
                seed=result.seed,
                budget=result.budget,
                control_values=control_exact,
                max_units=result.n_units,
            )
            if not (game_c is None or isinstance(game_c, NativeGame)):
                raise InvalidArgumentError("a bootstrap of a native game takes a native control game")
            reps = est.run_native(game, game_c, batch_size).values
        return Bootstrap(np.asarray(reps).T[:, :, None].copy(), m, int(seed))
    if not isinstance(utility, ItemUtility):
        raise InvalidArgumentError(
            f"{type(utility).__name__} is not a mean over items: bootstrap a MarginGame, an ItemGame, or a utility "
            "with item_scores() and n_items"
        )
    m = int(utility.n_items)
    weights = bootstrap_weights(m, n_boot, seed)
    before = int(getattr(utility, "evaluated", 0))
    est = cls(
        n,
        result.method,
        seed=result.seed,
        budget=result.budget,
        control_values=control_exact,
        max_units=result.n_units,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=result.n_evaluations, unit="coalition", desc=f"bootstrap ({n_boot} replicates)")
    k = 0
    try:
        while not est.done:
            coalitions = est.ask(batch_size or DEFAULT_BATCH)
            if len(coalitions) == 0:
                break
            scores = ItemScores.coerce(utility.item_scores(coalitions), len(coalitions))
            reps = scores.replicates(weights)  # [b, k, B]
            k = reps.shape[1]
            g = game_c(coalitions) if game_c is not None else None
            est.tell(coalitions, reps.reshape(len(coalitions), -1), g)
            if bar is not None:
                bar.update(len(coalitions))
    finally:
        if bar is not None:
            bar.close()
    values = np.asarray(est.result().values, dtype=np.float64).reshape(n, k, n_boot)
    new = int(getattr(utility, "evaluated", 0)) - before
    return Bootstrap(np.ascontiguousarray(values.transpose(2, 0, 1)), m, int(seed), new_evaluations=new)


def attach_bootstrap(result: ShapleyResult, boot: Bootstrap) -> ShapleyResult:
    """Put a bootstrap's replicates and evaluation errors on ``result`` (shaped like its values)."""
    reps = boot.replicates
    if np.ndim(result.values) == 1:
        reps = reps[:, :, 0]
    result.replicates = reps
    result.eval_stderr = reps.std(axis=0, ddof=1)
    result.n_items = boot.n_items
    return result

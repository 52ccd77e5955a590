"""Evaluation noise: values bootstrapped over the items a utility averages, and what they can separate.

A utility such as preference accuracy or mean reward is a mean over a finite sample of items
(held-out pairs, prompts). Another sample would give other values, and the estimator's standard
error does not see that. Here every bootstrap replicate resamples the items once (multinomial
counts, the same resample for every coalition: paired, which common random numbers make cheap)
and recomputes the values with the estimator of the original run on exactly the coalitions that
run absorbed (:class:`~dposhap.ShapleyEstimator` with ``max_units``), so nothing is evaluated
again: a native margin game is reweighted in Rust (:meth:`dposhap.MarginGame.reweighted`), any
other item utility reweights the per-item scores it recorded (:class:`ItemScores`).

The spread of the replicates is the evaluation standard error of each value; combined with the
estimator's standard error it gives the total. The paired replicates also say, for every pair of
sources, how often one beats the other and whether the difference is significant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidArgumentError, UtilityError
from .validate import check_int

__all__ = [
    "Bootstrap",
    "ItemGame",
    "ItemScores",
    "ItemUtility",
    "PairComparison",
    "bootstrap_weights",
    "compare_pairs",
    "ranking_groups",
]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class ItemScores:
    """Per-item scores of a batch of coalitions.

    A coalition's utility on objective ``k`` is ``sum_j numer[b, k, j] / sum_j denom[b, j]``: a
    plain mean when ``denom`` is None (every item weighs one), a ratio estimator otherwise (items
    of different sizes, such as responses of different lengths, or self-normalised importance
    weights that depend on the coalition).

    Attributes
    ----------
    numer
        float64 ``[b, k, m]``.
    denom
        float64 ``[b, m]`` (positive sums), or None.
    """

    numer: np.ndarray
    denom: np.ndarray | None = None

    @classmethod
    def coerce(cls, raw: Any, b: int, what: str = "item utility") -> ItemScores:
        """``raw`` as :class:`ItemScores` for a batch of ``b``: an ItemScores, ``[b, m]`` or ``[b, k, m]``."""
        if isinstance(raw, ItemScores):
            numer = np.asarray(raw.numer, dtype=np.float64)
            denom = None if raw.denom is None else np.asarray(raw.denom, dtype=np.float64)
        else:
            numer, denom = np.asarray(raw, dtype=np.float64), None
        if numer.ndim == 2:
            numer = numer[:, None, :]
        if numer.ndim != 3 or numer.shape[0] != b or numer.shape[2] < 1:
            raise UtilityError(
                f"the {what} returned per-item scores of shape {numer.shape} for {b} coalitions: "
                f"return ({b}, n_items) or ({b}, k, n_items)"
            )
        if not np.isfinite(numer).all():
            r = int(np.argwhere(~np.isfinite(numer))[0][0])
            raise UtilityError(f"the {what} returned a non-finite item score for row {r} of the batch")
        if denom is not None:
            if denom.shape != (b, numer.shape[2]) or not np.isfinite(denom).all() or (denom.sum(1) <= 0).any():
                raise UtilityError(
                    f"the {what}'s item weights must be finite [{b}, {numer.shape[2]}] with positive row sums, "
                    f"got shape {denom.shape}"
                )
        return cls(np.ascontiguousarray(numer), denom)

    @property
    def n_items(self) -> int:
        """Number of items ``m``."""
        return int(self.numer.shape[2])

    @classmethod
    def concat(cls, parts: Sequence[ItemScores]) -> ItemScores:
        """The scores of consecutive batches as one batch (all with or all without item weights)."""
        if not parts:
            raise InvalidArgumentError("concat needs at least one batch of item scores")
        numer = np.concatenate([p.numer for p in parts], axis=0)
        weighted = [p.denom is not None for p in parts]
        if any(weighted) != all(weighted):
            raise InvalidArgumentError("cannot concatenate item scores with and without item weights")
        denom = np.concatenate([p.denom for p in parts if p.denom is not None], axis=0) if all(weighted) else None
        return cls(numer, denom)

    def values(self) -> np.ndarray:
        """The utilities ``[b, k]``."""
        total = self.numer.sum(axis=2)
        if self.denom is None:
            return total / self.n_items
        return total / self.denom.sum(axis=1)[:, None]

    def replicates(self, weights: np.ndarray) -> np.ndarray:
        """The utilities under item weights ``[r, m]`` (bootstrap counts): ``[b, k, r]``."""
        w = np.asarray(weights, dtype=np.float64)
        num = self.numer @ w.T  # [b, k, r]
        den = (np.full((len(self.numer), self.n_items), 1.0) if self.denom is None else self.denom) @ w.T  # [b, r]
        return num / den[:, None, :]


@runtime_checkable
class ItemUtility(Protocol):
    """A utility that is a mean over items and can say each item's score.

    ``item_scores(coalitions)`` returns the :class:`ItemScores` of a bool batch ``[b, n]``; the
    utility itself is their :meth:`ItemScores.values`.
    """

    @property
    def n_items(self) -> int: ...

    def item_scores(self, coalitions: np.ndarray) -> ItemScores: ...


class ItemGame:
    """A utility given by its per-item scores: the mean over ``n_items`` items.

    Passed to :func:`dposhap.shapley` with ``n_boot``, the values come with evaluation standard
    errors bootstrapped over the items. The per-item scores of every evaluated coalition are kept
    in memory for the bootstrap (``b x k x n_items`` floats per batch), so nothing is evaluated
    twice.

    Parameters
    ----------
    fn
        Bool ``[b, n]`` -> per-item scores ``[b, n_items]`` or ``[b, k, n_items]``, or an
        :class:`ItemScores` (for ratio utilities).
    n_items
        Number of items the scores run over.

    Examples
    --------
    >>> import numpy as np, dposhap
    >>> scores = np.random.default_rng(0).normal(size=(3, 50))      # [players, items]
    >>> game = dposhap.ItemGame(lambda S: S.astype(float) @ scores, 50)
    >>> res = dposhap.shapley(game, 3, n_boot=100)
    >>> bool(np.allclose(res.values, scores.mean(1)))
    True
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], n_items: int):
        if not callable(fn):
            raise InvalidArgumentError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        check_int("n_items", n_items, minimum=1)
        self._n_items = int(n_items)
        self._memo: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        self.evaluated = 0

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self._n_items

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per-item scores of a batch, evaluating only the coalitions not seen before."""
        c = np.ascontiguousarray(coalitions, dtype=bool)
        keys = [np.packbits(row).tobytes() for row in c]
        missing = [r for r, key in enumerate(keys) if key not in self._memo]
        if missing:
            fresh = ItemScores.coerce(self.fn(c[missing]), len(missing))
            if fresh.n_items != self._n_items:
                raise UtilityError(f"fn returned scores for {fresh.n_items} items; the game has {self._n_items}")
            for row, r in enumerate(missing):
                self._memo[keys[r]] = (fresh.numer[row], None if fresh.denom is None else fresh.denom[row])
            self.evaluated += len(missing)
        rows = [self._memo[key] for key in keys]
        denom = None if rows[0][1] is None else np.stack([r[1] for r in rows])  # type: ignore[misc]
        return ItemScores(np.stack([r[0] for r in rows]), denom)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        values = self.item_scores(coalitions).values()
        return values[:, 0] if values.shape[1] == 1 else values


def bootstrap_weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resample counts ``[n_boot, n_items]``: each row draws ``n_items`` items with
    replacement (the same row is applied to every coalition)."""
    check_int("n_items", n_items, minimum=1)
    check_int("n_boot", n_boot, minimum=2)
    rng = np.random.default_rng([int(seed) % 2**63, 0xB007])
    counts = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)
    return counts.astype(np.float64)


@dataclass(frozen=True)
class PairComparison:
    """Two sources compared on one objective.

    Attributes
    ----------
    first, second
        The sources, ``first`` the higher valued.
    difference
        ``value(first) - value(second)``.
    stderr
        Standard error of the difference: the paired bootstrap's spread of the difference
        combined with both values' estimator standard errors.
    share
        Share of bootstrap replicates in which ``first`` beats ``second`` (ties count half).
    significant
        Whether the difference is non-zero at 95% (``difference > 1.96 * stderr``).
    """

    first: str
    second: str
    difference: float
    stderr: float
    share: float
    significant: bool

    def to_json(self) -> dict[str, Any]:
        """Plain-Python form."""
        return {
            "first": self.first,
            "second": self.second,
            "difference": float(self.difference),
            "stderr": float(self.stderr),
            "share": float(self.share),
            "significant": bool(self.significant),
        }


def compare_pairs(
    names: Sequence[str], values: np.ndarray, est_stderr: np.ndarray, replicates: np.ndarray | None
) -> list[PairComparison]:
    """Every pair of players compared on one objective, the higher-valued first.

    Parameters
    ----------
    names
        One per player.
    values, est_stderr
        ``[n]``: the values and their estimator standard errors.
    replicates
        ``[B, n]`` paired bootstrap replicates over items, or None (estimator error only).

    Returns
    -------
    list[PairComparison]
        In order of the players' values (``i < j`` by rank), ``n (n - 1) / 2`` entries.
    """
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(est_stderr, dtype=np.float64)
    order = np.argsort(-v, kind="stable")
    # differences at rounding level are ties (identical sources summed in another order)
    scale = max(1.0, float(np.abs(v).max()) if v.size else 1.0)
    if replicates is not None and replicates.size:
        scale = max(scale, float(np.abs(replicates).max()))
    tiny = 1e-12 * scale
    out = []
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            diff = float(v[a] - v[b])
            var = float(e[a] ** 2 + e[b] ** 2)
            share = float("nan")
            if replicates is not None:
                d = replicates[:, a] - replicates[:, b]
                var += float(d.var(ddof=1)) if len(d) > 1 else 0.0
                share = float(((d > tiny).sum() + 0.5 * (np.abs(d) <= tiny).sum()) / len(d))
            se = math.sqrt(max(var, 0.0))
            out.append(PairComparison(names[a], names[b], diff, se, share, bool(diff > max(Z95 * se, tiny))))
    return out


def ranking_groups(names: Sequence[str], values: np.ndarray, comparisons: Sequence[PairComparison]) -> list[list[str]]:
    """The players in order of value, grouped where consecutive ones cannot be separated at 95%.

    A new group starts at a player that is significantly below the previous one; within a group
    the order is what the point values say and nothing more.
    """
    order = [names[i] for i in np.argsort(-np.asarray(values), kind="stable")]
    sig = {(c.first, c.second): c.significant for c in comparisons}
    groups: list[list[str]] = []
    for name in order:
        if groups and not sig.get((groups[-1][-1], name), False):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


@dataclass
class Bootstrap:
    """Bootstrap replicates of a valuation over its evaluation items.

    Attributes
    ----------
    replicates
        ``[n_boot, n, k]``: the values recomputed under each resample of the items.
    n_items
        Items the utility averages (held-out pairs, prompts).
    seed
        Seed of the resampling.
    new_evaluations
        Coalitions the replay had to evaluate that the run had not (0 for samplers whose plan
        does not depend on the utilities).
    """

    replicates: np.ndarray
    n_items: int
    seed: int
    new_evaluations: int = 0

    @property
    def n_boot(self) -> int:
        """Number of replicates."""
        return int(self.replicates.shape[0])

    @property
    def stderr(self) -> np.ndarray:
        """Evaluation standard error of each value ``[n, k]``."""
        return self.replicates.std(axis=0, ddof=1)

    def halving_items(self) -> int:
        """Items needed to halve the evaluation error (it falls as ``1 / sqrt(items)``): ``4 m``."""
        return 4 * self.n_items

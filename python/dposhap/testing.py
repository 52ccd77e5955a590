"""Games with known values and plain-Python references of the semivalues, for tests and benchmarks.

Like :mod:`numpy.testing`, this module is a helper for checking dposhap (and estimators
built on it), not part of the valuation API. It holds

- coalition bookkeeping: :func:`all_coalitions`, :func:`to_masks`, :func:`table_of`,
  :class:`TableGame`, :class:`Recorder`;
- the semivalue formulas written out, as references: :func:`shapley_bruteforce`,
  :func:`banzhaf_bruteforce` and the vectorised :func:`semivalue_reference`;
- games whose values are enumerable or known in closed form: :func:`weighted_voting`,
  :func:`saturating_sum`, :class:`InteractionGame`, :func:`linear_game`;
- the DPO margin games written in numpy (:func:`margin_utility`), the reference of the native
  :class:`dposhap.MarginGame`.

A coalition is a bool row ``[n]``; its *mask* is the integer whose bit ``i`` says whether player
``i`` is in it. Tables of ``2**n`` values are indexed by mask.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Literal

import numpy as np

from .core import pack_coalitions

#: A vectorised utility: bool coalitions ``[b, n]`` to values ``[b]`` (or ``[b, k]``).
Utility = Callable[[np.ndarray], np.ndarray]
MarginKind = Literal["accuracy", "logsigmoid", "mean"]

#: Most players whose ``2**n`` coalitions :func:`table_of` enumerates.
MAX_TABLE_PLAYERS = 24


# ---------------------------------------------------------------------------------------
# Coalitions <-> masks


def to_masks(coalitions: np.ndarray) -> np.ndarray:
    """Masks ``[b]`` of a bool array of coalitions ``[b, n]``."""
    s = np.asarray(coalitions, dtype=bool)
    return s.astype(np.int64) @ (np.int64(1) << np.arange(s.shape[1], dtype=np.int64))


def all_coalitions(n: int) -> np.ndarray:
    """Every coalition of ``n`` players as a bool array ``[2**n, n]``, row ``r`` having mask ``r``."""
    masks = np.arange(2**n, dtype=np.int64)
    return ((masks[:, None] >> np.arange(n)) & 1).astype(bool)


def coalition_matrix(coalitions: np.ndarray, n: int) -> np.ndarray:
    """``coalitions`` as a bool array ``[b, n]`` (a single row ``[n]`` becomes ``[1, n]``).

    Raises
    ------
    ValueError
        If the rows do not have ``n`` columns.
    """
    x = np.asarray(coalitions, dtype=bool)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"coalitions have shape {x.shape}, expected [b, {n}]")
    return x


def table_of(utility: Utility, n: int, chunk: int | None = None) -> np.ndarray:
    """The table ``[2**n]`` (or ``[2**n, k]``) of a vectorised utility, indexed by mask.

    Parameters
    ----------
    utility
        Called on ``all_coalitions(n)``, at once or ``chunk`` rows at a time.
    n
        Number of players, at most :data:`MAX_TABLE_PLAYERS`.
    chunk
        Coalitions per call (default: all in one call).
    """
    if n > MAX_TABLE_PLAYERS:
        raise ValueError(f"a table of {n} players needs 2^{n} evaluations; it is limited to n <= {MAX_TABLE_PLAYERS}")
    coalitions = all_coalitions(n)
    if chunk is None:
        return np.asarray(utility(coalitions), dtype=np.float64)
    parts = [np.asarray(utility(coalitions[lo : lo + chunk]), dtype=np.float64) for lo in range(0, 2**n, chunk)]
    return np.concatenate(parts)


class TableGame:
    """A game given by its table of ``2**n`` values (``[2**n]`` or ``[2**n, k]``), indexed by mask."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float64)
        n = int(round(math.log2(self.table.shape[0])))
        if 2**n != self.table.shape[0]:
            raise ValueError(f"a table needs 2**n rows, got {self.table.shape[0]}")
        self.n = n

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        return self.table[to_masks(coalitions)]


class Recorder:
    """Wraps a utility and records every coalition it is asked to evaluate, as bytes (any n).

    Attributes
    ----------
    keys
        One ``bytes`` key (the packed bool row) per coalition evaluated, in order.
    calls
        Number of calls.
    """

    def __init__(self, utility: Utility) -> None:
        self.utility = utility
        self.keys: list[bytes] = []
        self.calls = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.keys.extend(pack_coalitions(np.asarray(coalitions, dtype=bool)))
        return self.utility(coalitions)


# ---------------------------------------------------------------------------------------
# References


def shapley_bruteforce(table: np.ndarray, n: int) -> np.ndarray:
    """The Shapley formula written out: ``sum_S |S|!(n-|S|-1)!/n! (v(S+i) - v(S))``."""
    table = np.asarray(table, dtype=np.float64)
    phi = np.zeros((n,) + table.shape[1:])
    for i in range(n):
        others = [p for p in range(n) if p != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                mask = sum(1 << p for p in subset)
                phi[i] += weight * (table[mask | (1 << i)] - table[mask])
    return phi


def banzhaf_bruteforce(table: np.ndarray, n: int) -> np.ndarray:
    """The Banzhaf formula written out: ``2^-(n-1) sum_S (v(S+i) - v(S))``."""
    table = np.asarray(table, dtype=np.float64)
    phi = np.zeros((n,) + table.shape[1:])
    for i in range(n):
        for mask in range(2**n):
            if not (mask >> i) & 1:
                phi[i] += table[mask | (1 << i)] - table[mask]
    return phi / 2 ** (n - 1)


def semivalue_reference(table: np.ndarray, n: int, semivalue: str = "shapley") -> np.ndarray:
    """Shapley or Banzhaf values from a table, vectorised over coalitions (for tables too large
    to loop over): ``sum_{S not containing i} w(|S|) (v(S+i) - v(S))``."""
    table = np.asarray(table, dtype=np.float64)
    masks = np.arange(2**n, dtype=np.int64)
    sizes = ((masks[:, None] >> np.arange(n)) & 1).sum(axis=1)
    if semivalue == "shapley":
        # |S|! (n - |S| - 1)! / n! = 1 / (n C(n-1, |S|))
        weight_of_size = np.array([1.0 / (n * math.comb(n - 1, s)) if s < n else 0.0 for s in range(n + 1)])
    else:
        weight_of_size = np.full(n + 1, 0.5 ** (n - 1))
    phi = np.zeros((n,) + table.shape[1:])
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        w = weight_of_size[sizes[without]]
        diff = table[without | (1 << i)] - table[without]
        phi[i] = np.tensordot(w, diff, axes=(0, 0))
    return phi


# ---------------------------------------------------------------------------------------
# Games with enumerable or closed-form values


def weighted_voting_utility(weights: np.ndarray, quota: float) -> Utility:
    """The weighted voting game ``v(S) = 1[sum_{i in S} w_i >= quota]``."""
    w = np.asarray(weights, dtype=np.float64)

    def utility(s: np.ndarray) -> np.ndarray:
        return (np.asarray(s, dtype=np.float64) @ w >= quota).astype(np.float64)

    return utility


def weighted_voting(n: int = 12, seed: int = 0) -> tuple[Utility, np.ndarray]:
    """A weighted voting game with integer weights in ``[1, 10]`` and a quota of half the total.

    Returns
    -------
    utility, weights
    """
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 11, size=n).astype(np.float64)
    return weighted_voting_utility(w, float(np.ceil(w.sum() / 2))), w


def saturating_sum(n: int = 12, seed: int = 1) -> tuple[Utility, np.ndarray]:
    """A thresholded sum: ``v(S) = min(sum_{i in S} a_i, cap)`` with ``cap`` 60% of the total.

    Returns
    -------
    utility, a
    """
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 1.0, size=n)
    cap = 0.6 * a.sum()

    def utility(s: np.ndarray) -> np.ndarray:
        return np.minimum(np.asarray(s, dtype=np.float64) @ a, cap)

    return utility, a


class InteractionGame:
    """``v(S) = sum_T c_T 1[T subset of S]`` over singletons, pairs and triples ``T``.

    The Shapley value splits each ``c_T`` equally among the members of ``T``
    (``c_T / |T|``); the Banzhaf value gives each member ``c_T / 2^(|T|-1)``.

    Parameters
    ----------
    n
        Number of players (each has a singleton term).
    n_pairs, n_triples
        Number of random pair and triple terms.
    seed
        Seed of the terms and their coefficients.
    """

    def __init__(self, n: int = 12, n_pairs: int = 10, n_triples: int = 8, seed: int = 2) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.terms: list[tuple[tuple[int, ...], float]] = [((i,), float(rng.normal())) for i in range(n)]
        for size, count in ((2, n_pairs), (3, n_triples)):
            for _ in range(count):
                members = tuple(sorted(rng.choice(n, size=size, replace=False).tolist()))
                self.terms.append((members, float(rng.normal(scale=2.0))))

    def __call__(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=bool)
        out = np.zeros(s.shape[0])
        for members, c in self.terms:
            out += c * s[:, list(members)].all(axis=1)
        return out

    def shapley(self) -> np.ndarray:
        """The exact Shapley values ``[n]``."""
        phi = np.zeros(self.n)
        for members, c in self.terms:
            phi[list(members)] += c / len(members)
        return phi

    def banzhaf(self) -> np.ndarray:
        """The exact Banzhaf values ``[n]``."""
        phi = np.zeros(self.n)
        for members, c in self.terms:
            phi[list(members)] += c / 2 ** (len(members) - 1)
        return phi


def linear_game(weights: np.ndarray) -> Utility:
    """The additive game ``v(S) = sum_{i in S} w_i`` (Shapley and Banzhaf value ``w_i``)."""
    w = np.asarray(weights, dtype=np.float64)

    def utility(s: np.ndarray) -> np.ndarray:
        return np.asarray(s, dtype=np.float64) @ w

    return utility


# ---------------------------------------------------------------------------------------
# Margin games written in numpy (the reference of the native MarginGame)


def margin_scores(kind: MarginKind | str, sums: np.ndarray) -> np.ndarray:
    """Utilities ``[b]`` of coalitions from their summed margins ``[b, m]`` on ``m`` held-out pairs.

    ``"accuracy"``: mean of ``1[sum > 0]``, ties count 1/2; ``"logsigmoid"``: mean of
    ``log sigmoid(sum)``; ``"mean"``: mean sum.
    """
    if kind == "accuracy":
        return ((sums > 0).sum(axis=1) + 0.5 * (sums == 0).sum(axis=1)) / sums.shape[1]
    if kind == "logsigmoid":
        return -np.logaddexp(0.0, -sums).mean(axis=1)
    if kind == "mean":
        return sums.mean(axis=1)
    raise ValueError(f"unknown margin game kind {kind!r}")


def margin_utility(margins: np.ndarray, kind: MarginKind | str, chunk: int | None = None) -> Utility:
    """``v(S) = mean_j f(sum_{i in S} margins[i, j])`` as a numpy callable (coalitions ``[b, n]``
    or a single ``[n]``).

    Parameters
    ----------
    margins
        ``[n_sources, n_pairs]``.
    kind
        See :func:`margin_scores`.
    chunk
        Coalitions per matrix product (default: the whole batch in one).
    """
    m = np.asarray(margins, dtype=np.float64)
    if kind not in ("accuracy", "logsigmoid", "mean"):
        raise ValueError(f"unknown margin game kind {kind!r}")

    def utility(s: np.ndarray) -> np.ndarray:
        x = np.asarray(s, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if chunk is None:
            return margin_scores(kind, x @ m)
        out = np.empty(x.shape[0], dtype=np.float64)
        for lo in range(0, x.shape[0], chunk):
            out[lo : lo + chunk] = margin_scores(kind, x[lo : lo + chunk] @ m)
        return out

    return utility


# ---------------------------------------------------------------------------------------
# Games with many players and exact values (closed form or enumeration of a structure)


def airport_utility(costs: np.ndarray) -> Utility:
    """The airport game ``v(S) = max_{i in S} c_i`` (``v(empty) = 0``) with costs ``c >= 0``."""
    c = np.asarray(costs, dtype=np.float64)

    def utility(s: np.ndarray) -> np.ndarray:
        x = coalition_matrix(s, c.size)
        return np.where(x, c[None, :], 0.0).max(axis=1)

    return utility


def airport_shapley(costs: np.ndarray) -> np.ndarray:
    """Exact Shapley values ``[n]`` of the airport game (Littlechild & Owen 1973).

    With the costs sorted, ``c_(1) <= ... <= c_(n)``, the segment ``c_(j) - c_(j-1)`` is shared
    equally by the ``n - j + 1`` players who need it: ``phi_(k) = sum_{j <= k} (c_(j) -
    c_(j-1)) / (n - j + 1)``.
    """
    c = np.asarray(costs, dtype=np.float64)
    n = c.size
    order = np.argsort(c, kind="stable")
    sorted_c = c[order]
    segments = np.diff(sorted_c, prepend=0.0) / (n - np.arange(n))
    phi = np.empty(n)
    phi[order] = np.cumsum(segments)
    return phi


def _log_binom(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    """``log C(n, k)`` elementwise (integers ``0 <= k <= n``)."""
    n_ = np.asarray(n, dtype=np.int64)
    k_ = np.asarray(k, dtype=np.int64)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(n_.max()) + 1, dtype=np.float64)))])
    return np.asarray(log_fact[n_] - log_fact[k_] - log_fact[n_ - k_])


class GroupedGame:
    """A game whose players form a few groups of interchangeable players.

    ``v(S) = value_of_counts(c(S))`` where ``c(S)[g]`` is the number of members of ``S`` in
    group ``g``. Its exact Shapley values come from enumerating the ``prod_g (n_g + 1)`` count
    vectors (multivariate hypergeometric weights), so ``n`` can be in the hundreds.

    Parameters
    ----------
    groups
        ``[n]`` int, the group of each player (groups ``0 .. G-1``, none empty).
    value_of_counts
        Vectorised ``int[b, G] -> float[b]``.
    """

    def __init__(self, groups: np.ndarray, value_of_counts: Callable[[np.ndarray], np.ndarray]) -> None:
        self.groups = np.asarray(groups, dtype=np.int64)
        self.n = int(self.groups.size)
        self.sizes = np.bincount(self.groups)
        if (self.sizes == 0).any():
            raise ValueError("every group needs at least one player")
        self.value_of_counts = value_of_counts
        self._onehot = np.eye(self.sizes.size, dtype=np.float64)[self.groups]

    def __call__(self, s: np.ndarray) -> np.ndarray:
        x = coalition_matrix(s, self.n).astype(np.float64)
        counts = np.rint(x @ self._onehot).astype(np.int64)
        return np.asarray(self.value_of_counts(counts), dtype=np.float64)

    def group_shapley(self, chunk: int = 1 << 16) -> np.ndarray:
        """Exact Shapley value ``[G]`` of one player of each group."""
        sizes = self.sizes
        n_groups = sizes.size
        grid = np.stack(np.meshgrid(*[np.arange(k + 1) for k in sizes], indexing="ij"), axis=-1).reshape(-1, n_groups)
        values = np.concatenate(
            [
                np.asarray(self.value_of_counts(grid[lo : lo + chunk]), dtype=np.float64)
                for lo in range(0, len(grid), chunk)
            ]
        )
        strides = np.array([int(np.prod(sizes[g + 1 :] + 1)) for g in range(n_groups)], dtype=np.int64)
        total = grid.sum(axis=1)
        out = np.zeros(n_groups)
        for g in range(n_groups):
            others = sizes.copy()
            others[g] -= 1
            keep = (grid <= others).all(axis=1)
            c = grid[keep]
            size = total[keep]
            # P(count vector c | a uniform coalition of |c| of the other n - 1 players)
            log_w = _log_binom(others[None, :], c).sum(axis=1) - _log_binom(self.n - 1, size)
            idx = c @ strides
            marginal = values[idx + strides[g]] - values[idx]
            out[g] = float(np.exp(log_w) @ marginal) / self.n
        return out

    def shapley(self) -> np.ndarray:
        """Exact Shapley values ``[n]``."""
        return self.group_shapley()[self.groups]


def grouped_groups(n: int, shares: tuple[float, ...]) -> np.ndarray:
    """Group labels ``[n]`` with group sizes about ``shares * n`` (each at least 1), in order."""
    sizes = np.maximum(1, np.floor(np.asarray(shares) / np.sum(shares) * n).astype(np.int64))
    sizes[-1] = n - sizes[:-1].sum()
    return np.repeat(np.arange(len(sizes)), sizes)


def grouped_voting(groups: np.ndarray, group_weights: np.ndarray, quota: float) -> GroupedGame:
    """Weighted voting ``1[sum_{i in S} w_i >= quota]`` with one weight per group of players."""
    w = np.asarray(group_weights, dtype=np.float64)
    return GroupedGame(groups, lambda c: (c @ w >= quota).astype(np.float64))


def grouped_margin_game(groups: np.ndarray, group_margins: np.ndarray, kind: MarginKind | str) -> GroupedGame:
    """A margin game (see :func:`margin_utility`) whose players in a group share their margins.

    ``group_margins`` is ``[G, m]``; player ``i`` has the margins of its group.
    """
    m = np.asarray(group_margins, dtype=np.float64)
    if kind not in ("accuracy", "logsigmoid", "mean"):
        raise ValueError(f"unknown margin game kind {kind!r}")

    def value_of_counts(c: np.ndarray, chunk: int = 4096) -> np.ndarray:
        out = np.empty(c.shape[0])
        for lo in range(0, c.shape[0], chunk):
            out[lo : lo + chunk] = margin_scores(kind, c[lo : lo + chunk].astype(np.float64) @ m)
        return out

    return GroupedGame(groups, value_of_counts)


__all__ = [
    "MAX_TABLE_PLAYERS",
    "GroupedGame",
    "InteractionGame",
    "MarginKind",
    "Recorder",
    "TableGame",
    "Utility",
    "airport_shapley",
    "airport_utility",
    "all_coalitions",
    "banzhaf_bruteforce",
    "coalition_matrix",
    "grouped_groups",
    "grouped_margin_game",
    "grouped_voting",
    "linear_game",
    "margin_scores",
    "margin_utility",
    "saturating_sum",
    "semivalue_reference",
    "shapley_bruteforce",
    "table_of",
    "to_masks",
    "weighted_voting",
    "weighted_voting_utility",
]

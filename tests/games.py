"""Games with known values for the tests, and plain-Python references of the semivalues.

A coalition is a bool row ``[n]``; its *mask* is the integer whose bit ``i`` says whether
player ``i`` is in it. Tables of ``2**n`` values are indexed by mask.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

Utility = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------
# Coalitions <-> masks


def to_masks(coalitions: np.ndarray) -> np.ndarray:
    """Masks ``[b]`` of a bool array ``[b, n]``."""
    s = np.asarray(coalitions, dtype=bool)
    return s.astype(np.int64) @ (np.int64(1) << np.arange(s.shape[1], dtype=np.int64))


def all_coalitions(n: int) -> np.ndarray:
    """Every coalition of ``n`` players as a bool array ``[2**n, n]``, row ``r`` having mask ``r``."""
    masks = np.arange(2**n, dtype=np.int64)
    return ((masks[:, None] >> np.arange(n)) & 1).astype(bool)


def table_of(utility: Utility, n: int) -> np.ndarray:
    """The table ``[2**n]`` (or ``[2**n, k]``) of a vectorised utility."""
    return np.asarray(utility(all_coalitions(n)), dtype=np.float64)


class TableGame:
    """A game given by its table of ``2**n`` values (``[2**n]`` or ``[2**n, k]``)."""

    def __init__(self, table: np.ndarray):
        self.table = np.asarray(table, dtype=np.float64)
        n = int(round(math.log2(self.table.shape[0])))
        assert 2**n == self.table.shape[0], "a table needs 2**n rows"
        self.n = n

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        return self.table[to_masks(coalitions)]


class Recorder:
    """Wraps a utility and records every coalition it is asked to evaluate, as bytes (any n)."""

    def __init__(self, utility: Utility):
        self.utility = utility
        self.keys: list[bytes] = []
        self.calls = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.keys.extend(bytes(np.packbits(row)) for row in np.asarray(coalitions, dtype=bool))
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
    """The same formulas, vectorised over coalitions (for tables too large to loop over)."""
    table = np.asarray(table, dtype=np.float64)
    masks = np.arange(2**n, dtype=np.int64)
    sizes = ((masks[:, None] >> np.arange(n)) & 1).sum(axis=1)
    if semivalue == "shapley":
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
# Games with enumerable (n <= 12) or closed-form values


def weighted_voting(n: int = 12, seed: int = 0) -> tuple[Utility, np.ndarray]:
    """``v(S) = 1[sum_{i in S} w_i >= q]`` with integer weights and quota half the total."""
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 11, size=n).astype(np.float64)
    quota = np.ceil(w.sum() / 2)

    def utility(s: np.ndarray) -> np.ndarray:
        return (np.asarray(s, dtype=np.float64) @ w >= quota).astype(np.float64)

    return utility, w


def saturating_sum(n: int = 12, seed: int = 1) -> tuple[Utility, np.ndarray]:
    """A thresholded sum: ``v(S) = min(sum_{i in S} a_i, cap)`` with ``cap`` 60% of the total."""
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
    """

    def __init__(self, n: int = 12, n_pairs: int = 10, n_triples: int = 8, seed: int = 2):
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
        phi = np.zeros(self.n)
        for members, c in self.terms:
            phi[list(members)] += c / len(members)
        return phi

    def banzhaf(self) -> np.ndarray:
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


def margin_term(kind: str, sums: np.ndarray) -> np.ndarray:
    """Per-pair score of summed margins."""
    if kind == "accuracy":
        return np.where(sums > 0, 1.0, np.where(sums == 0, 0.5, 0.0))
    if kind == "logsigmoid":
        return -np.logaddexp(0.0, -sums)
    if kind == "mean":
        return sums
    raise ValueError(kind)


def margin_utility(margins: np.ndarray, kind: str) -> Utility:
    """``v(S) = mean_j f(sum_{i in S} margins[i, j])`` as a numpy callable."""
    m = np.asarray(margins, dtype=np.float64)

    def utility(s: np.ndarray) -> np.ndarray:
        sums = np.asarray(s, dtype=np.float64) @ m
        return margin_term(kind, sums).mean(axis=1)

    return utility
